"""R3 training with the real vLLM engine and real Lightning, built from the real configs."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from r3exp.rollout.engines import SamplingConfig
from r3exp.runtime.checkpoints import resolve_resume
from r3exp.runtime.components import Components
from r3exp.runtime.fitting import fit_policy
from r3exp.tasks.countdown import CountdownTask
from tests.conftest import CONF, load_task


def training_config(tmp_path, *overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "task=countdown",
                "model=tiny",  # the session's tiny model (tests/conftest.py), no warm start
                f"paths.output_dir={tmp_path}",
                "run_name=test",
                "logger=none",
                "task.split_sizes.train=200",
                "task.split_sizes.validation=20",
                "task.split_sizes.test=20",
                "rollout.examples_per_step=2",
                "rollout.group_size=4",
                "rollout.attempt.max_tokens=16",
                "rollout.reflection.max_tokens=16",
                "rollout.retry.max_tokens=8",
                "callbacks.progress.refresh_rate=0",
                *overrides,
            ],
        )


class StepRecorder(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        record = module.last_step  # what the module published for this optimizer step
        versions = {int(v) for r in record.rollouts for v in r.tensors["policy_version"]}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        assert record.step == trainer.global_step - 1
        assert record.metrics["train/skipped"] == metrics["train/skipped"]
        self.rows.append({"step": record.step, "versions": versions, "rollouts": len(record.rollouts), **metrics})


def train(cfg, tiny_path, tokenizer, engine, recorder):
    engine.seek("training", 0)  # each run samples as a new process would
    parts = Components(instantiate(cfg.task), instantiate(cfg.model), str(tiny_path), tokenizer, engine)
    run_dir = Path(cfg.paths.output_dir)
    return fit_policy(cfg, parts, run_dir, resume=resolve_resume(cfg, run_dir), extra_callbacks=[recorder])


@pytest.mark.integration
@pytest.mark.parametrize("protocol, behaviour", [("r3", "engine"), ("r3_grpo", "trainer")])
def test_every_batch_is_sampled_with_the_latest_weights(
    tmp_path, tiny_path, tokenizer, fresh_vllm, protocol, behaviour
):
    # two rollouts per optimizer step, trained in micro-batches of at most 160 padded tokens; r3_grpo with the
    # trainer's own pass before the first update and the truncated correction
    correction = "truncate" if behaviour == "trainer" else "none"
    cfg = training_config(
        tmp_path,
        "trainer.max_steps=4",
        "optimizer.optimizer.lr=3e-3",
        f"rollout.protocol={protocol}",
        f"grpo.loss.behaviour={behaviour}",
        f"grpo.loss.correction={correction}",
        "rollout.reward._target_=r3exp.rollout.episodes.ReflectionContains",
        "~rollout.reward._partial_",
        "+rollout.reward.text=a",
        "rollout.on_no_signal=resample",
        "rollout.group_size=8",
        "rollout.examples_per_step=2",
        "grpo.rollouts_per_step=2",
        "grpo.max_tokens_per_micro_batch=160",
    )
    recorder = StepRecorder()
    train(cfg, tiny_path, tokenizer, fresh_vllm, recorder)
    assert [r["step"] for r in recorder.rows] == [0, 1, 2, 3]
    trained = [r for r in recorder.rows if r.get("train/skipped") == 0.0]
    assert len(trained) >= 2
    for row in recorder.rows:
        assert row["versions"] <= {row["step"]}  # generated after exactly `step` optimizer updates
        assert row["rollouts"] == 2
    for row in trained:
        # the trainer's log-probs of the sampled reflections (and attempts) equal the engine's: same weights
        assert row["train/logprob_diff_max"] < 1e-3, row
        assert row["train/micro_batches"] >= 2
        if behaviour == "trainer":  # the trainer's no-grad pass equals the engine's log-probs in fp32
            assert row["train/engine_gap_max"] < 1e-4 and row["train/correction_share"] == 0.0, row
            assert row["train/ratio_min"] == pytest.approx(1.0, abs=1e-5) == row["train/ratio_max"]
        else:
            assert "train/engine_gap_max" not in row  # no trainer pass by default
    if protocol == "r3_grpo":  # every example is an attempt group; the metrics come by kind of row too
        assert all(r["rollout/attempt/groups"] >= 4 and "rollout/reflection/reward_mean" in r for r in recorder.rows)
        assert all(
            r["rollout/groups"] == r["rollout/attempt/groups"] + r["rollout/reflection/groups"] for r in recorder.rows
        )
    assert fresh_vllm.policy_version == 4  # the final weights were pushed for evaluation


@pytest.mark.integration
def test_engine_sleeps_while_the_trainer_steps_and_wakes_for_the_weight_push(
    tmp_path, tiny_path, tokenizer, fresh_vllm, monkeypatch
):
    """The order that keeps a sleeping engine fresh: generate, sleep, (train), wake the weights, push the new
    weights, wake the KV cache, generate. vLLM's sleep and wake_up need the CUDA allocator, so on this CPU
    those two calls are recorded instead of made; everything else (push, generation) is the real engine."""
    calls: list[tuple] = []
    llm = fresh_vllm.llm
    real_rpc, real_generate = llm.collective_rpc, llm.generate
    monkeypatch.setattr(fresh_vllm, "sleep_level", 2)
    monkeypatch.setattr(llm, "sleep", lambda level: calls.append(("sleep", level)))
    monkeypatch.setattr(llm, "wake_up", lambda tags=None: calls.append(("wake_up", *(tags or ["all"]))))
    monkeypatch.setattr(
        llm, "collective_rpc", lambda method, **kw: (calls.append((method,)), real_rpc(method, **kw))[1]
    )
    monkeypatch.setattr(llm, "generate", lambda *a, **kw: (calls.append(("generate",)), real_generate(*a, **kw))[1])
    cfg = training_config(
        tmp_path,
        "trainer.max_steps=3",
        "optimizer.optimizer.lr=3e-3",
        "rollout.reward._target_=r3exp.rollout.episodes.ReflectionContains",
        "~rollout.reward._partial_",
        "+rollout.reward.text=a",
        "rollout.group_size=8",
    )
    recorder = StepRecorder()
    train(cfg, tiny_path, tokenizer, fresh_vllm, recorder)
    order = [c for i, c in enumerate(calls) if c != ("generate",) or calls[i - 1] != ("generate",)]
    push = [("wake_up", "weights"), ("reload_weights",), ("wake_up", "kv_cache")]
    step = [("generate",), ("sleep", 2)]
    # start (awake): push; each of the 3 steps: generate, sleep, then the next push wakes it
    assert order == [("reload_weights",)] + step + push + step + push + step + push, order
    assert all(r["train/logprob_diff_max"] < 1e-3 for r in recorder.rows if r.get("train/skipped") == 0.0)
    fresh_vllm.sleep()  # a deep sleep discards the weights: generating before a push must fail
    assert not fresh_vllm.holds_weights
    with pytest.raises(RuntimeError, match="holds no weights"):
        fresh_vllm.generate([[1, 2, 3]], 1, SamplingConfig(max_tokens=2))
    fresh_vllm.update_weights(module_weights(tiny_path))
    assert fresh_vllm.holds_weights and not fresh_vllm._asleep


def module_weights(tiny_path):
    from safetensors.torch import load_file

    return load_file(str(tiny_path / "model.safetensors"))


def test_lightning_accumulation_and_clipping_point_to_r3exp_settings(tmp_path):
    from r3exp.errors import ConfigError
    from r3exp.runtime.trainer_settings import check_trainer_config

    check_trainer_config(training_config(tmp_path))
    with pytest.raises(ConfigError, match="grpo.rollouts_per_step"):
        check_trainer_config(training_config(tmp_path, "+trainer.accumulate_grad_batches=4"))
    with pytest.raises(ConfigError, match="grpo.max_grad_norm"):
        check_trainer_config(training_config(tmp_path, "+trainer.gradient_clip_val=1.0"))


@pytest.mark.integration
def test_reward_on_reflection_content_rises(tmp_path, tiny_path, tokenizer, fresh_vllm):
    """The signal flows through the mask, the optimizer and the weight sync into the next samples."""
    cfg = training_config(
        tmp_path,
        "trainer.max_steps=24",
        "optimizer.optimizer.lr=2e-3",
        "rollout.examples_per_step=4",
        "rollout.group_size=8",
        "rollout.reward._target_=r3exp.rollout.episodes.ReflectionContains",
        "~rollout.reward._partial_",
        "+rollout.reward.text=7",
        "rollout.on_no_signal=skip",
    )
    recorder = StepRecorder()
    train(cfg, tiny_path, tokenizer, fresh_vllm, recorder)
    rewards = [r["rollout/reward_mean"] for r in recorder.rows]
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.25, rewards


@pytest.mark.integration
def test_resume_from_checkpoint_continues_the_run(tmp_path, tiny_path, tokenizer, fresh_vllm):
    cfg = training_config(tmp_path, "trainer.max_steps=2", "callbacks.checkpoint.every_n_train_steps=1")
    train(cfg, tiny_path, tokenizer, fresh_vllm, StepRecorder())
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    import torch

    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 2
    stream = saved["datamodule_state_dict" if "datamodule_state_dict" in saved else "ReflectionRolloutDataModule"]
    assert stream["cursor"] > 0 and stream["sampling_calls"] == fresh_vllm.stream_position("training") > 0
    # as r3exp wrote it before it stepped the optimizer itself: the steps counted by the automatic loop
    loop = saved["loops"]["fit_loop"]
    loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"] = copy.deepcopy(
        loop["epoch_loop.manual_optimization.optim_step_progress"]
    )
    for counter in loop["epoch_loop.manual_optimization.optim_step_progress"].values():
        counter.update(ready=0, completed=0)
    torch.save(saved, ckpt)
    resumed = training_config(
        tmp_path, "trainer.max_steps=4", "callbacks.checkpoint.every_n_train_steps=1", "ckpt_path=last"
    )
    recorder = StepRecorder()
    train(resumed, tiny_path, tokenizer, fresh_vllm, recorder)
    assert [r["step"] for r in recorder.rows] == [2, 3]  # continues; the first two steps are not redone
    assert fresh_vllm.stream_position("training") >= stream["sampling_calls"] + 2  # and so does the sampling
    assert torch.load(ckpt, weights_only=False)["global_step"] == 4


@pytest.mark.integration
def test_first_failure_dataset_feeds_training(tmp_path, tiny_path, tokenizer, fresh_vllm, countdown):
    from r3exp.rollout.engines import SamplingConfig
    from r3exp.rollout.first_failures import collect_failures, write_failures

    examples = countdown.examples("train")[:6]
    solvable = dict(examples[0], nums=[1, 2, 3], target=6)
    rows, stats = collect_failures(
        countdown, fresh_vllm, tokenizer, examples, SamplingConfig(max_tokens=16), attempts=2, rule="all_fail"
    )
    assert stats["examples"] == 6 and stats["kept"] == len(rows) == 6  # the base model fails them all
    assert all(r["failed_attempts"] == 2 and isinstance(r["attempt"], str) for r in rows)
    kept, _ = collect_failures(
        countdown, _AnswersOnePlusTwoPlusThree(), tokenizer, [solvable], SamplingConfig(max_tokens=16), attempts=2
    )
    assert kept == []  # solved examples are not failures
    path = write_failures(rows, tmp_path / "failures.jsonl")
    cfg = training_config(
        tmp_path,
        "trainer.max_steps=2",
        "rollout.source=failures",
        f"rollout.failures_path={path}",
        "rollout.on_no_signal=skip",
    )
    recorder = StepRecorder()
    train(cfg, tiny_path, tokenizer, fresh_vllm, recorder)
    assert [r["step"] for r in recorder.rows] == [0, 1]
    assert all(r["rollout/failure_fraction"] == 1.0 and r["rollout/groups"] == 2 for r in recorder.rows)


class _AnswersOnePlusTwoPlusThree:
    """A scripted engine: the tiny base model solves nothing, so the keep rule's other branch needs one."""

    policy_version = 0

    def generate(self, prompts, n, sampling, stream="default"):
        from r3exp.rollout.engines import Completion

        return [[Completion([1], [0.0], "<answer>1 + 2 + 3</answer>", True) for _ in range(n)] for _ in prompts]


def test_bad_failures_file_names_file_and_line(tmp_path):
    from r3exp.errors import ConfigError
    from r3exp.rollout.datamodule import load_failures

    path = tmp_path / "failures.jsonl"
    path.write_text('{"example": {}, "attempt": "x"}\n{"example": {}}\n')
    with pytest.raises(ConfigError, match=r"failures.jsonl:2"):
        load_failures(path)


class SevenTask(CountdownTask):
    """A known-learnable toy for plain GRPO: an answer is right when it contains a 7 (the untrained tiny
    model writes one now and then)."""

    def validate(self, example, answer):
        return "7" in answer


@pytest.mark.integration
def test_grpo_baseline_reward_rises_on_a_learnable_toy(tmp_path, tiny_path, tokenizer, fresh_vllm):
    """rollout.protocol=grpo: G sampled first attempts per example, rewarded by the validator, trained."""
    cfg = training_config(
        tmp_path,
        "rollout.protocol=grpo",
        "trainer.max_steps=24",
        "optimizer.optimizer.lr=2e-3",
        "rollout.examples_per_step=4",
        "rollout.group_size=8",
        "rollout.on_no_signal=skip",
        "rollout.attempt.max_tokens=16",
    )
    recorder = StepRecorder()
    fresh_vllm.seek("training", 0)
    task = load_task("countdown", _target_=f"{__name__}.SevenTask")
    parts = Components(task, instantiate(cfg.model), str(tiny_path), tokenizer, fresh_vllm)
    fit_policy(cfg, parts, Path(cfg.paths.output_dir), extra_callbacks=[recorder])
    rewards = [r["rollout/reward_mean"] for r in recorder.rows]
    assert all(r["rollout/groups"] == 4 for r in recorder.rows)  # every example is a group: no failure filter
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.25, rewards


@pytest.mark.integration
@pytest.mark.parametrize("protocol, budget", [("r3", 500), ("r3_grpo", 1500)])
def test_training_stops_when_the_sampled_token_budget_is_spent(
    tmp_path, tiny_path, tokenizer, fresh_vllm, protocol, budget
):
    """callbacks.sampled_token_budget: the count is the tokens the engine sampled (attempts, reflections,
    retries of every draw; r3_grpo's G attempts per example too), and training stops after the step that
    reaches the budget."""
    cfg = training_config(
        tmp_path,
        "trainer.max_steps=50",
        f"callbacks.sampled_token_budget.max_sampled_tokens={budget}",
        "rollout.on_no_signal=skip",
        f"rollout.protocol={protocol}",
    )  # one draw per step
    sampled = []

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            episodes = [ep for rollout in module.last_step.rollouts for ep in rollout.episodes]
            # every sampled completion once (r3_grpo reflects on an attempt of an attempt group)
            completions = {id(c): c for ep in episodes for c in [ep.attempt, *ep.reflections, *ep.retries]}
            assert module.last_step.rollout_stats["rollout/sampled_tokens"] == sum(
                len(c.token_ids) for c in completions.values()
            )
            sampled.append(module.last_step.rollout_stats["rollout/sampled_tokens"])

    train(cfg, tiny_path, tokenizer, fresh_vllm, Count())
    assert sum(sampled[:-1]) < budget <= sum(sampled), sampled
    assert 3 <= len(sampled) < 50


@pytest.mark.integration
def test_r3_grpo_draws_attempt_groups_and_reflection_groups_on_their_failures(tmp_path, tokenizer, fresh_vllm):
    """rollout.protocol=r3_grpo: per example, G sampled attempts rewarded by the validator (one group); for
    each example with a failed attempt, G reflections on its first failed attempt and a retry each (another
    group); the rows of both, each kind's trained tokens exactly under the mask."""
    from r3exp import keys
    from r3exp.rollout.batching import batch_rows
    from r3exp.rollout.episodes import ROW_KINDS, ChatRenderer

    cfg = training_config(
        tmp_path,
        "rollout.protocol=r3_grpo",
        "rollout.examples_per_step=3",
        "rollout.group_size=4",
        "rollout.on_no_signal=skip",
    )
    task = instantiate(cfg.task)
    fresh_vllm.seek("training", 0)
    rollout = instantiate(cfg.rollout)(task=task, engine=fresh_vllm, tokenizer=tokenizer).next_batch()
    batch = rollout.tensors
    attempts = [ep for ep in rollout.episodes if ep.kind == "attempt"]
    reflections = [ep for ep in rollout.episodes if ep.kind == "reflection"]
    assert len(attempts) == 3 and all(len(ep.reflections) == 4 for ep in attempts)
    for ep in attempts:
        assert ep.rewards == [float(task.validate(ep.example, c.text)) for c in ep.reflections]
    failed = [ep for ep in attempts if not all(ep.retry_successes)]
    assert failed and [ep.example for ep in reflections] == [ep.example for ep in failed]
    render = ChatRenderer(tokenizer)
    for r3, grpo in zip(reflections, failed):
        assert r3.attempt is grpo.reflections[grpo.retry_successes.index(False)]  # its first failed attempt
        assert grpo.reflection_prompt_ids == render.for_task(
            task, grpo.example, task.first_attempt_messages(grpo.example)
        )
        assert r3.reflection_prompt_ids == render.for_task(
            task, r3.example, task.reflection_messages(r3.example, r3.attempt.text)
        )
        assert len(r3.reflections) == len(r3.retries) == 4
        assert r3.rewards == [float(task.validate(r3.example, c.text)) for c in r3.retries]
    rows = batch_rows(rollout.episodes)
    assert batch["row_kinds"].tolist() == [ROW_KINDS.index(ep.kind) for ep, _, _ in rows]
    assert len(rows) == 4 * (len(attempts) + len(reflections))
    for group in batch["group_ids"].unique():  # a group never mixes attempts and reflections
        assert batch["row_kinds"][batch["group_ids"] == group].unique().numel() == 1
    for b, (ep, _, j) in enumerate(rows):  # context, then exactly the trained completion under the mask
        assert batch["input_ids"][b, : len(ep.reflection_prompt_ids)].tolist() == ep.reflection_prompt_ids
        assert batch["input_ids"][b][batch["reflection_mask"][b]].tolist() == ep.reflections[j].token_ids
    stats = rollout.stats
    assert stats["rollout/attempt/groups"] == 3 and stats["rollout/reflection/groups"] == len(reflections)
    assert stats[keys.GROUPS] == 3 + len(reflections)
    assert stats["rollout/attempt/reward_mean"] == pytest.approx(sum(r for ep in attempts for r in ep.rewards) / 12)
    assert stats[keys.FIRST_TRY_SUCCESS] == sum(ep.first_try_success for ep in attempts) / 3
    assert keys.FOLLOW_RATE in stats


def test_a_reflection_reward_is_refused_by_the_protocol_without_reflections():
    """rollout.reward judges a reflection by its retry: rollout.protocol=grpo rewards attempts by the validator,
    so it refuses another reward in one line rather than ignoring it; r3 and r3_grpo use it."""
    from r3exp.errors import ConfigError
    from r3exp.rollout.datamodule import ReflectionRolloutDataModule
    from r3exp.rollout.episodes import ReflectionContains

    sampling = SamplingConfig()
    with pytest.raises(
        ConfigError,
        match=r"rollout.reward=r3exp.rollout.episodes.ReflectionContains rewards "
        r"reflections; rollout.protocol=grpo trains no reflection",
    ):
        ReflectionRolloutDataModule(
            None, None, None, sampling, sampling, sampling, reward=ReflectionContains("a"), protocol="grpo"
        )
    with pytest.raises(ConfigError, match="rollout.protocol=r3_grpo samples first attempts"):
        ReflectionRolloutDataModule(
            None,
            None,
            None,
            sampling,
            sampling,
            sampling,
            protocol="r3_grpo",
            source="failures",
            failures_path="x.jsonl",
        )


def test_a_budget_that_is_not_a_positive_number_of_tokens_is_refused_naming_the_key():
    from r3exp.errors import ConfigError
    from r3exp.grpo.token_budget import SampledTokenBudget

    with pytest.raises(ConfigError, match="callbacks.sampled_token_budget.max_sampled_tokens=0"):
        SampledTokenBudget(0)
    budget = SampledTokenBudget(1000)
    budget.load_state_dict({"sampled_tokens": 640})  # a resumed run spends what is left
    assert budget.state_dict() == {"sampled_tokens": 640}
