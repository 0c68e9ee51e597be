"""rollout.protocol=r3_grpo_distill: the rewarded retries join their example's attempt group as rows of the
original prompt, trained with LUFFY's shaped loss; without them the protocol is r3_grpo."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from r3exp import keys
from r3exp.errors import ConfigError
from r3exp.grpo import functions as F
from r3exp.grpo.module import GRPOLoss
from r3exp.grpo.step import LossSettings, accumulate_gradients, correct_for_engine, step_rows
from r3exp.rollout.batching import batch_rows, build_batch
from r3exp.rollout.datamodule import ReflectionRolloutDataModule
from r3exp.rollout.engines import SamplingConfig
from r3exp.rollout.engines.interface import Completion
from r3exp.rollout.episodes import ATTEMPT, ChatRenderer, Episode, add_distilled_rows
from r3exp.rollout.rollout_stats import rollout_stats
from r3exp.runtime.components import Components
from r3exp.runtime.fitting import fit_policy
from r3exp.tasks.countdown import CountdownTask
from tests.conftest import load_task
from tests.test_micro_batches import VOCAB, causal_lm, full_logits_logprobs, gradients
from tests.test_training import StepRecorder, training_config


def completion(ids: list[int], text: str = "") -> Completion:
    return Completion(list(ids), [-0.1 * (i + 1) for i in range(len(ids))], text or " ".join(map(str, ids)), True)


def groups_of_one_example():
    """An attempt group (prompt [1, 2, 3], four sampled attempts, one right) and the R3 group on its failed
    attempt: four reflections, whose retries pass, fail, pass (the same tokens as the first) and pass."""
    attempts = [completion([40, 41]), completion([42]), completion([43, 44, 45]), completion([46])]
    grpo = Episode(
        {"id": 0},
        attempts[0],
        False,
        reflection_prompt_ids=[1, 2, 3],
        reflections=attempts,
        rewards=[0.0, 1.0, 0.0, 0.0],
        retry_successes=[False, True, False, False],
        kind=ATTEMPT,
    )
    retries = [completion([50, 51]), completion([52]), completion([50, 51]), completion([53, 54, 55])]
    r3 = Episode(
        {"id": 0},
        attempts[0],
        False,
        reflection_prompt_ids=[1, 2, 3, 40, 41, 9, 9],
        reflections=[completion([60 + i, 70 + i]) for i in range(4)],
        retries=retries,
        rewards=[1.0, 0.0, 1.0, 1.0],
        retry_successes=[True, False, True, True],
    )
    return grpo, r3


@pytest.mark.parametrize(
    "distinct, added", [(True, [[50, 51], [53, 54, 55]]), (False, [[50, 51], [50, 51], [53, 54, 55]])]
)
def test_a_rewarded_retry_joins_the_attempt_group_as_a_row_of_the_original_prompt(distinct, added):
    grpo, r3 = groups_of_one_example()
    assert add_distilled_rows(grpo, r3, distinct=distinct) == len(added)
    assert [c.token_ids for c in grpo.reflections[4:]] == added
    assert grpo.rewards[4:] == [1.0] * len(added) and grpo.retry_successes[4:] == [True] * len(added)
    assert grpo.off_policy == [False] * 4 + [True] * len(added) and grpo.on_policy_rows == [0, 1, 2, 3]
    batch = build_batch([grpo, r3], pad_id=0)
    rows = batch_rows([grpo, r3])
    assert batch["off_policy"].tolist() == [grpo.is_off_policy(j) and ep is grpo for ep, _, j in rows]
    for b in range(4, 4 + len(added)):  # the distilled rows: the task prompt, then exactly the retry's tokens
        retry = grpo.reflections[b]
        ids = batch["input_ids"][b][batch["attention_mask"][b].bool()].tolist()
        assert ids == [1, 2, 3] + retry.token_ids  # no failed attempt, no reflection in its context
        assert not set(ids) & ({40, 41, 9} | {t for c in r3.reflections for t in c.token_ids})
        assert batch["input_ids"][b][batch["reflection_mask"][b]].tolist() == retry.token_ids
        assert batch["behaviour_logprobs"][b][batch["reflection_mask"][b]].tolist() == pytest.approx(retry.logprobs)
        assert batch["group_ids"][b] == batch["group_ids"][0] and batch["rewards"][b] == 1.0
    assert not batch["off_policy"][:4].any() and not batch["off_policy"][4 + len(added) :].any()


def test_distilled_rows_share_the_group_advantage_and_leave_on_policy_metrics_alone():
    grpo, r3 = groups_of_one_example()
    add_distilled_rows(grpo, r3)
    rows = step_rows([build_batch([grpo, r3], pad_id=0)], "group", beta=0.0)
    rewards = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])  # the attempt group with its two distilled rows
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    assert torch.allclose(rows.advantages[:6], expected)
    stats = rollout_stats([grpo, r3], 1.0, 10, kinds=(ATTEMPT, "reflection"), distilling=True)
    assert stats[keys.DISTILLED_ROWS] == 2.0
    assert stats["rollout/attempt/reward_mean"] == 0.25  # the four sampled attempts only


def hand_loss(policy, batch, advantages, count, epsilon, epsilon_high, gamma, temperature=1.0):
    """Token by token: the clipped ratio for sampled rows, -A p/(p + γ) for distilled ones, divided by the
    step's trained tokens (dapo)."""
    logprobs = full_logits_logprobs(policy, batch, temperature)
    mask, behaviour = batch["reflection_mask"][:, 1:], batch["behaviour_logprobs"][:, 1:]
    total = 0.0
    for n in range(mask.shape[0]):
        a = float(advantages[n])
        for t in mask[n].nonzero().flatten().tolist():
            if batch["off_policy"][n]:
                p = logprobs[n, t].exp()
                total = total - a * p / (p + gamma)
            else:
                ratio = (logprobs[n, t] - behaviour[n, t]).exp()
                total = total - torch.minimum(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon_high) * a)
    return total / count, logprobs


def tiny_step_batch(generator):
    """Two groups of three sampled rows after a shared prompt, and one distilled row in each group."""
    prompts = [torch.randint(3, VOCAB, (5,), generator=generator).tolist() for _ in range(2)]
    episodes = []
    for g, prompt in enumerate(prompts):
        rows = [completion(torch.randint(3, VOCAB, (2 + i,), generator=generator).tolist()) for i in range(3)]
        for row in rows:
            row.logprobs = (-1.5 - torch.rand(len(row.token_ids), generator=generator)).tolist()
        ep = Episode(
            {"id": g},
            rows[0],
            False,
            reflection_prompt_ids=prompt,
            reflections=rows,
            rewards=[1.0, 0.0, 0.0] if g == 0 else [0.0, 1.0, 0.0],
            retry_successes=[False] * 3,
            kind=ATTEMPT,
        )
        retry = completion(torch.randint(3, VOCAB, (3,), generator=generator).tolist())
        add_distilled_rows(ep, Episode(ep.example, rows[0], False, retries=[retry], retry_successes=[True]))
        episodes.append(ep)
    return build_batch(episodes, pad_id=0)


@pytest.mark.parametrize("share_prompts", [False, True], ids=["whole_rows", "shared_prompts"])
def test_the_shaped_loss_and_its_gradient_equal_a_hand_computation(share_prompts):
    generator = torch.Generator().manual_seed(0)
    batch = tiny_step_batch(generator)
    policy = causal_lm(tied=False, lora=False)
    settings = LossSettings(
        0.2,
        0.28,
        0.0,
        "dapo",
        1.0,
        8,
        max_tokens_per_micro_batch=24,
        share_prompts=share_prompts,
        off_policy_shaping=0.1,
    )
    rows = step_rows([batch], "group", beta=0.0)
    assert rows.batch["off_policy"].sum() == 2
    metrics = accumulate_gradients(policy, rows, settings)
    assert metrics["micro_batches"] >= 2
    got = gradients(policy)
    policy.zero_grad()
    expected, logprobs = hand_loss(policy, rows.batch, rows.batch["advantages"], rows.size.tokens, 0.2, 0.28, 0.1)
    expected.backward()
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    for name, grad in gradients(policy).items():
        assert torch.allclose(got[name], grad, rtol=1e-4, atol=1e-6), name
    mask = rows.batch["reflection_mask"][:, 1:] & rows.batch["off_policy"].unsqueeze(1)
    assert metrics["distill/prob_mean"] == pytest.approx(logprobs.exp()[mask].mean().item(), rel=1e-4)
    # the shaped term's gradient is REINFORCE's weighted by γ p / (p + γ)²: -A γ p/(p+γ)² ∇log p
    policy.zero_grad()
    only = {**rows.batch, "reflection_mask": rows.batch["reflection_mask"] & rows.batch["off_policy"].unsqueeze(1)}
    logprobs = full_logits_logprobs(policy, only, 1.0)
    mask = only["reflection_mask"][:, 1:]
    p = logprobs.detach().exp()
    weight = 0.1 * p / (p + 0.1) ** 2
    (-(rows.batch["advantages"].unsqueeze(1) * weight * logprobs)[mask].sum()).backward()
    reinforce = gradients(policy)
    policy.zero_grad()
    shaped = F.shaped_policy_loss(full_logits_logprobs(policy, only, 1.0), rows.batch["advantages"], mask, 0.1)
    shaped.sum().backward()
    for name, grad in gradients(policy).items():
        assert torch.allclose(reinforce[name], grad, rtol=1e-4, atol=1e-7), name


def test_off_policy_rows_take_neither_the_ratio_nor_the_engine_correction():
    generator = torch.Generator().manual_seed(1)
    batch = tiny_step_batch(generator)
    policy = causal_lm(tied=True, lora=False)
    settings = LossSettings(0.2, 0.28, 0.0, "dapo", 1.0, 8)
    loss_cfg = GRPOLoss(behaviour="trainer", correction="truncate")
    rows = step_rows([batch], "group", beta=0.0)
    engine = rows.batch["behaviour_logprobs"].clone()
    metrics = correct_for_engine(policy, rows.batch, settings, loss_cfg)
    off = rows.batch["off_policy"]
    assert torch.equal(rows.batch["is_weights"][off], torch.ones_like(rows.batch["is_weights"][off]))
    assert torch.equal(rows.batch["behaviour_logprobs"][off], engine[off])  # kept for distill/context_gap
    on_mask = rows.batch["reflection_mask"][~off][:, 1:]
    assert not torch.equal(rows.batch["behaviour_logprobs"][~off][:, 1:][on_mask], engine[~off][:, 1:][on_mask])
    trainer_gap = (rows.batch["behaviour_logprobs"] - engine)[~off][:, 1:][on_mask].abs()  # the sampled rows'
    assert metrics["engine_gap_max"] == pytest.approx(trainer_gap.max().item(), rel=1e-5)
    # the distilled rows' loss does not read their behaviour log-probs
    logprobs = full_logits_logprobs(policy, rows.batch, 1.0).detach()
    mask = rows.batch["reflection_mask"][:, 1:]
    kwargs = dict(epsilon=0.2, epsilon_high=0.28, loss_type="dapo", off_policy=off)
    one, _ = F.grpo_loss(logprobs, rows.batch["behaviour_logprobs"][:, 1:], rows.batch["advantages"], mask, **kwargs)
    moved = rows.batch["behaviour_logprobs"][:, 1:].clone()
    moved[off] -= 3.0
    two, _ = F.grpo_loss(logprobs, moved, rows.batch["advantages"], mask, **kwargs)
    assert one.item() == two.item()


def test_without_off_policy_rows_the_loss_is_the_clipped_loss_exactly():
    generator = torch.Generator().manual_seed(2)
    n, t = 6, 9
    logprobs, behaviour = -torch.rand(n, t, generator=generator) * 3, -torch.rand(n, t, generator=generator) * 3
    mask = torch.rand(n, t, generator=generator) > 0.3
    advantages = torch.randn(n, generator=generator)
    kwargs = dict(epsilon=0.2, epsilon_high=0.28, loss_type="dapo")
    plain = F.grpo_loss(logprobs, behaviour, advantages, mask, **kwargs)
    none_off = F.grpo_loss(logprobs, behaviour, advantages, mask, off_policy=torch.zeros(n, dtype=torch.bool), **kwargs)
    assert plain[0].item() == none_off[0].item() and plain[1] == none_off[1]


def test_rollout_distill_is_refused_where_it_is_not_read_and_checked_where_it_is():
    sampling = SamplingConfig()
    with pytest.raises(ConfigError, match=r"rollout.distill=all is read by rollout.protocol=r3_grpo_distill only"):
        ReflectionRolloutDataModule(None, None, None, sampling, sampling, sampling, protocol="r3_grpo", distill="all")
    with pytest.raises(ConfigError, match=r"rollout.distill='some'; expected one of \('distinct', 'all', 'none'\)"):
        ReflectionRolloutDataModule(
            None, None, None, sampling, sampling, sampling, protocol="r3_grpo_distill", distill="some"
        )
    with pytest.raises(ConfigError, match=r"rollout.retry.max_tokens=64 > rollout.attempt.max_tokens=16"):
        ReflectionRolloutDataModule(
            None, None, None, SamplingConfig(max_tokens=16), sampling, SamplingConfig(64), protocol="r3_grpo_distill"
        )
    with pytest.raises(ConfigError, match=r"grpo.loss.off_policy_shaping=0: expected > 0"):
        GRPOLoss(off_policy_shaping=0)


class EvenLengthTask(CountdownTask):
    """A toy validator the untrained tiny model passes about half the time: an answer of even length."""

    def validate(self, example, answer):
        return len(answer) % 2 == 0


def datamodule(cfg, engine, tokenizer, task, **overrides):
    """A rollout datamodule that samples as a new process would: from the stream's start, with an empty prefix
    cache (prompt blocks computed by an earlier run change the log-probs in their last digits)."""
    engine.seek("training", 0)
    engine.llm.reset_prefix_cache()
    return instantiate(cfg.rollout, **overrides)(task=task, engine=engine, tokenizer=tokenizer)


@pytest.mark.integration
def test_the_protocol_without_distilled_rows_is_r3_grpo_and_with_them_adds_the_rewarded_retries(
    tmp_path, tokenizer, fresh_vllm
):
    cfg = training_config(tmp_path, "rollout.examples_per_step=4", "rollout.group_size=4", "rollout.on_no_signal=skip")
    task = load_task("countdown", _target_=f"{__name__}.EvenLengthTask")
    reference = datamodule(cfg, fresh_vllm, tokenizer, task, protocol="r3_grpo").next_batch()
    without = datamodule(cfg, fresh_vllm, tokenizer, task, protocol="r3_grpo_distill", distill="none").next_batch()
    assert reference.tensors.keys() == without.tensors.keys()
    for key, value in reference.tensors.items():
        assert torch.equal(value, without.tensors[key]), key
    timing = (keys.SECONDS, keys.GENERATED_TOKENS_PER_SECOND, keys.WALL_SECONDS)
    assert reference.stats.keys() == without.stats.keys()
    for key in set(reference.stats) - set(timing):
        a, b = reference.stats[key], without.stats[key]
        assert a == b or (math.isnan(a) and math.isnan(b)), key

    distilled = datamodule(cfg, fresh_vllm, tokenizer, task, protocol="r3_grpo_distill").next_batch()
    render = ChatRenderer(tokenizer)
    attempts = [ep for ep in distilled.episodes if ep.kind == ATTEMPT]
    reflections = [ep for ep in distilled.episodes if ep.kind != ATTEMPT]
    added = 0
    for grpo in attempts:  # the same samples as r3_grpo, and the rewarded retries of its R3 group on top
        r3 = next((ep for ep in reflections if ep.example is grpo.example), None)
        passed = [] if r3 is None else [tuple(c.token_ids) for c, ok in zip(r3.retries, r3.retry_successes) if ok]
        extra = [tuple(grpo.reflections[j].token_ids) for j in range(len(grpo.reflections)) if grpo.is_off_policy(j)]
        assert extra == list(dict.fromkeys(passed))  # each distinct rewarded retry, in order
        prompt = render.for_task(task, grpo.example, task.first_attempt_messages(grpo.example))
        assert grpo.reflection_prompt_ids == prompt
        added += len(extra)
    assert added > 0 and distilled.stats[keys.DISTILLED_ROWS] == added
    assert distilled.tensors["off_policy"].sum() == added
    on_policy = ~distilled.tensors["off_policy"]
    for key, value in reference.tensors.items():
        if value.dim() == 1:
            assert torch.equal(value, distilled.tensors[key][on_policy]), key


@pytest.mark.integration
def test_a_distilling_run_trains_every_step_with_its_retries(tmp_path, tiny_path, tokenizer, fresh_vllm):
    """The real Lightning module over r3_grpo_distill's batches: the distilled rows are trained (their
    metrics are logged) and the sampled rows' ratio is still 1 on the first update."""
    cfg = training_config(
        tmp_path,
        "trainer.max_steps=2",
        "rollout.protocol=r3_grpo_distill",
        "rollout.group_size=4",
        "rollout.examples_per_step=4",
        "rollout.on_no_signal=skip",
        "optimizer.optimizer.lr=1e-3",
    )
    recorder = StepRecorder()
    fresh_vllm.seek("training", 0)
    task = load_task("countdown", _target_=f"{__name__}.EvenLengthTask")
    parts = Components(task, instantiate(cfg.model), str(tiny_path), tokenizer, fresh_vllm)
    fit_policy(cfg, parts, Path(cfg.paths.output_dir), extra_callbacks=[recorder])
    assert len(recorder.rows) == 2
    for row in recorder.rows:
        assert row[keys.DISTILLED_ROWS] > 0 and 0 < row["train/distill/prob_mean"] < 1
        assert row["train/distill/context_gap"] == row["train/distill/context_gap"]  # a number
        assert row["train/logprob_diff_max"] < 1e-3  # the sampled rows: on-policy
