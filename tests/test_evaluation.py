import pytest

from r3exp.evaluation import EvalResult, evaluate, format_table
from r3exp.rollout.engines import SamplingConfig
from r3exp.rollout.episodes import R3Protocol

GREEDY = SamplingConfig(max_tokens=16, temperature=0.0)


def test_eval_result_counts_the_papers_two_columns():
    r = EvalResult("test", total=10, first_try_correct=2, reflection_fixed=3)
    assert r.first_try_accuracy == 0.2 and r.after_reflection_accuracy == 0.5
    assert "| m | test | 10 | 20.0% (2) | 50.0% (5) | +30.0 |" in format_table({"m": r})


@pytest.mark.integration
def test_evaluation_runs_the_protocol_and_is_reproducible(countdown, tokenizer, fresh_vllm):
    examples = countdown.examples("test")[:12]
    protocol = R3Protocol(countdown, fresh_vllm, tokenizer, GREEDY, GREEDY, GREEDY)
    first, episodes = evaluate(protocol, examples, "test", batch_size=5)
    assert first.total == 12 and len(episodes) == 12
    failed = [ep for ep in episodes if not ep.first_try_success]
    assert all(len(ep.reflections) == 1 and len(ep.retries) == 1 for ep in failed)
    again, episodes_again = evaluate(protocol, examples, "test", batch_size=5)
    assert again == first
    assert [ep.reflections[0].token_ids for ep in failed] == [
        ep.reflections[0].token_ids for ep in episodes_again if not ep.first_try_success
    ]


def _failed(example_id: int, reflection: str):
    from r3exp.rollout.engines import Completion
    from r3exp.rollout.episodes import Episode

    done = Completion([1], [0.0], "x", True)
    return Episode(
        {"id": example_id},
        done,
        False,
        reflections=[Completion([2], [0.0], reflection, True)],
        retries=[done],
        retry_successes=[False],
        rewards=[0.0],
    )


def test_reflection_controls_swap_reflections_between_failures_and_empty_them():
    from r3exp.evaluation.accuracy import control_reflections
    from r3exp.rollout.engines import Completion
    from r3exp.rollout.episodes import Episode

    solved = Episode({"id": 9}, Completion([1], [0.0], "right", True), True)
    episodes = [_failed(0, "reflection on 0"), solved, _failed(1, "reflection on 1"), _failed(2, "reflection on 2")]
    shuffled = control_reflections(episodes, "shuffled")
    assert [ep.example["id"] for ep, _ in shuffled] == [0, 1, 2]  # the failures, in order
    assert [text for _, text in shuffled] == ["reflection on 1", "reflection on 2", "reflection on 0"]
    assert all(text != ep.reflections[0].text for ep, text in shuffled)  # never an example's own
    assert [text for _, text in control_reflections(episodes, "empty")] == ["", "", ""]
    with pytest.raises(ValueError, match="shuffled"):
        control_reflections(episodes, "reversed")


def test_table_shows_the_controls_and_the_follow_rate():
    r = EvalResult(
        "test",
        total=10,
        first_try_correct=2,
        reflection_fixed=3,
        shuffled_reflection_fixed=1,
        empty_reflection_fixed=0,
        followed=4,
        follow_defined=5,
    )
    table = format_table({"m": r})
    assert "| m | 50.0% (5/10) | 30.0% (3/10) | 20.0% (2/10) | 80.0% (4/5) |" in table
    assert EvalResult.from_dict(r.to_dict()) == r


def test_grouped_counts_split_the_totals_by_group_with_their_controls():
    """Per-group results (BFCL's categories) count each group's episodes and control retries; summed over the
    groups they give the whole; results.json round-trips them; ungrouped tasks write no groups."""
    from r3exp.evaluation.accuracy import result_with_controls
    from r3exp.rollout.engines import Completion
    from r3exp.rollout.episodes import Episode

    class Grouped:
        def group(self, example):
            return example["category"]

        def reflection_followed(self, *args):
            return None

    def failed(example_id, category, fixed):
        ep = _failed(example_id, "r")
        ep.example["category"], ep.retry_successes = category, [fixed]
        return ep

    solved = Episode({"id": 9, "category": "b"}, Completion([1], [0.0], "right", True), True)
    episodes = [failed(0, "b", True), solved, failed(1, "a", False), failed(2, "a", True), failed(3, "b", False)]
    outcomes = {
        "shuffled": [(episodes[0], True), (episodes[2], True), (episodes[3], False), (episodes[4], True)],
        "empty": [(episodes[0], False), (episodes[2], False), (episodes[3], True), (episodes[4], False)],
    }
    result = result_with_controls(Grouped(), episodes, "test", outcomes)
    assert list(result.groups) == ["b", "a"]  # in the order the groups first appear
    b, a = result.groups["b"], result.groups["a"]
    assert (
        b.total,
        b.first_try_correct,
        b.reflection_fixed,
        b.shuffled_reflection_fixed,
        b.empty_reflection_fixed,
    ) == (3, 1, 1, 2, 0)
    assert (
        a.total,
        a.first_try_correct,
        a.reflection_fixed,
        a.shuffled_reflection_fixed,
        a.empty_reflection_fixed,
    ) == (2, 0, 1, 1, 1)
    for field in (
        "total",
        "first_try_correct",
        "reflection_fixed",
        "shuffled_reflection_fixed",
        "empty_reflection_fixed",
    ):
        assert getattr(result, field) == getattr(a, field) + getattr(b, field)
    assert EvalResult.from_dict(result.to_dict()) == result
    assert "| m | b | 3 | 33.3% (1) | 66.7% (2) | +33.3 | 100.0% (3/3) | 33.3% (1/3) |" in format_table({"m": result})

    class Ungrouped(Grouped):
        def group(self, example):
            return None

    plain = result_with_controls(Ungrouped(), episodes, "test", outcomes)
    assert plain.groups is None and "groups" not in plain.to_dict() and "category" not in format_table({"m": plain})


def test_even_batches_are_the_fewest_under_the_size_and_differ_by_at_most_one():
    from r3exp.evaluation.accuracy import even_batches

    assert [len(b) for b in even_batches(list(range(288)), 256)] == [144, 144]
    assert [len(b) for b in even_batches(list(range(92)), 256)] == [92]
    assert [len(b) for b in even_batches(list(range(10)), 3)] == [2, 3, 2, 3]
    assert [x for b in even_batches(list(range(10)), 3) for x in b] == list(range(10))
    assert even_batches([], 4) == []
    with pytest.raises(ValueError, match="evaluation.batch_size=0"):
        even_batches([1], 0)


@pytest.mark.integration
def test_batching_and_one_call_for_every_control_change_no_episode(countdown, tokenizer, fresh_vllm):
    """Greedy evaluation in one batch equals it in batches of 5, and the controls' retries in one call equal
    one call per control (the evaluation's engine calls were merged for speed)."""
    from r3exp.evaluation.accuracy import control_reflections

    examples = countdown.examples("test")[:12]
    protocol = R3Protocol(countdown, fresh_vllm, tokenizer, GREEDY, GREEDY, GREEDY)
    small, small_episodes = evaluate(protocol, examples, "test", batch_size=5)
    one, one_episodes = evaluate(protocol, examples, "test", batch_size=256)
    assert one == small
    assert [[c.token_ids for c in ep.retries] for ep in one_episodes] == [
        [c.token_ids for c in ep.retries] for ep in small_episodes
    ]
    shuffled, empty = control_reflections(one_episodes, "shuffled"), control_reflections(one_episodes, "empty")
    assert shuffled and empty
    separate = protocol.retries_with(shuffled) + protocol.retries_with(empty)
    together = protocol.retries_with(shuffled + empty)
    assert [c.token_ids for c in together] == [c.token_ids for c in separate]
