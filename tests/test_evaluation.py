from r3exp.evaluation import EvalResult, evaluate, format_table
from r3exp.rollout.engines import SamplingConfig
from r3exp.rollout.episodes import R3Protocol

GREEDY = SamplingConfig(max_tokens=16, temperature=0.0)


def test_eval_result_counts_the_papers_two_columns():
    r = EvalResult("test", total=10, first_try_correct=2, reflection_fixed=3)
    assert r.first_try_accuracy == 0.2 and r.after_reflection_accuracy == 0.5
    assert "| m | test | 10 | 20.0% (2) | 50.0% (5) | +30.0 |" in format_table({"m": r})


def test_evaluation_runs_the_protocol_and_is_reproducible(countdown, tokenizer, fresh_vllm):
    examples = countdown.examples("test")[:12]
    protocol = R3Protocol(countdown, fresh_vllm, tokenizer, GREEDY, GREEDY, GREEDY)
    first, episodes = evaluate(protocol, examples, "test", batch_size=5)
    assert first.total == 12 and len(episodes) == 12
    failed = [ep for ep in episodes if not ep.first_try_success]
    assert all(len(ep.reflections) == 1 and len(ep.retries) == 1 for ep in failed)
    again, episodes_again = evaluate(protocol, examples, "test", batch_size=5)
    assert again == first
    assert [ep.reflections[0].token_ids for ep in failed] == \
        [ep.reflections[0].token_ids for ep in episodes_again if not ep.first_try_success]
