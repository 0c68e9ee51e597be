"""Token-budget micro-batches and reflection-only log-probs equal the simple computation: one forward over
every row of the step, full-sequence logits over the whole vocabulary (fp32, 1e-5)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r3exp.grpo import functions as F
from r3exp.grpo.logprobs import (
    can_share_prompts,
    decoder_and_output_layer,
    masked_token_logprobs,
    prompt_groups,
    shared_prompt_logprobs,
)
from r3exp.grpo.micro_batches import shared_prompt_micro_batches, token_budget_micro_batches
from r3exp.grpo.module import GRPOLoss
from r3exp.grpo.step import LossSettings, accumulate_gradients, correct_for_engine, reference_logprobs, step_rows
from r3exp.rollout.batching import reflection_mask

VOCAB = 97
CLOSE = {"rtol": 1e-5, "atol": 1e-5}


def causal_lm(tied: bool, lora: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tied,
            max_position_embeddings=128,
        )
    )
    if lora:
        from peft import LoraConfig, get_peft_model

        # init_lora_weights=False: B is random too, so the adapter's A matrices get non-zero gradients
        model = get_peft_model(
            model,
            LoraConfig(
                r=4,
                lora_alpha=8,
                init_lora_weights=False,
                task_type="CAUSAL_LM",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
    return model.train()


def rollout(generator: torch.Generator, groups: int, group_size: int, shared_prompts: bool = False) -> dict:
    """A rollout batch of the shape ``rollout.batching.build_batch`` gives: right-padded rows of context ‖
    reflection, 0/1 rewards in groups, behaviour log-probs near the policy's (random). Both kinds of rows,
    as ``rollout.protocol=r3_grpo`` makes: the odd groups train attempts. ``shared_prompts``: the rows of
    a group share their context, as real groups do (G samples after one prompt)."""
    n = groups * group_size
    context = torch.randint(3, 12, (n,), generator=generator)
    reflection = torch.randint(1, 9, (n,), generator=generator)
    if shared_prompts:
        context = context[::group_size].repeat_interleave(group_size)
    total = int((context + reflection).max())
    positions = torch.arange(total).unsqueeze(0)
    attention = (positions < (context + reflection).unsqueeze(1)).long()
    mask = reflection_mask(context, reflection, total)
    rewards = torch.randint(0, 2, (n,), generator=generator).float()
    rewards[::group_size] = 1.0 - rewards[1::group_size]  # every group has signal
    input_ids = torch.randint(0, VOCAB, (n, total), generator=generator)
    if shared_prompts:
        first = input_ids[::group_size].repeat_interleave(group_size, dim=0)
        input_ids = torch.where(positions < context.unsqueeze(1), first, input_ids)
    return {
        "input_ids": input_ids * attention,
        "attention_mask": attention,
        "reflection_mask": mask,
        "behaviour_logprobs": torch.where(mask, -2.0 + torch.rand(n, total, generator=generator), 0.0),
        "rewards": rewards,
        "group_ids": torch.arange(groups).repeat_interleave(group_size),
        "row_kinds": (torch.arange(groups) % 2).repeat_interleave(group_size),
        "policy_version": torch.zeros(n, dtype=torch.long),
        "off_policy": torch.zeros(n, dtype=torch.bool),
    }


def full_logits_logprobs(model, batch, temperature):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return F.token_logprobs(logits, batch["input_ids"][:, 1:], temperature)


def one_batch_loss(
    policy,
    reference,
    rollouts,
    settings: LossSettings,
    scale_rewards: str,
    correction: tuple[str, torch.Tensor] | None = None,
):
    """The simple computation: every row in one forward, full-vocabulary logits at every position.
    ``correction``: (behaviour, the trainer's log-probs before the first update, full logits) for the
    engine/trainer correction of ``grpo.loss`` (``correction`` ``truncate``, cap 2)."""
    width = max(r["input_ids"].shape[1] for r in rollouts)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    batch = {
        k: torch.cat([pad(r[k]) for r in rollouts])
        for k in ("input_ids", "attention_mask", "reflection_mask", "behaviour_logprobs")
    }
    rewards = torch.cat([r["rewards"] for r in rollouts])
    groups = torch.cat([r["group_ids"] + 1000 * i for i, r in enumerate(rollouts)])
    kinds = torch.cat([r["row_kinds"] for r in rollouts])
    advantages = torch.zeros_like(rewards)
    for kind in kinds.unique():  # each kind of row on its own
        advantages[kinds == kind] = F.group_advantages(rewards[kinds == kind], groups[kinds == kind], scale_rewards)
    mask = batch["reflection_mask"][:, 1:]
    logprobs = full_logits_logprobs(policy, batch, settings.temperature)
    ref = None
    if settings.beta:
        with torch.no_grad():
            if reference is None:
                with policy.disable_adapter():
                    ref = full_logits_logprobs(policy, batch, settings.temperature)
            else:
                ref = full_logits_logprobs(reference, batch, settings.temperature)
    behaviour, weights = batch["behaviour_logprobs"][:, 1:], None
    if correction is not None:
        mode, old = correction
        weights = torch.exp(old - behaviour).clamp(max=2.0).where(mask, torch.ones_like(old))
        behaviour = old if mode == "trainer" else behaviour
    loss, _ = F.grpo_loss(
        logprobs,
        behaviour,
        advantages,
        mask,
        epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high,
        loss_type=settings.loss_type,
        beta=settings.beta,
        ref_logprobs=ref,
        max_tokens=settings.max_reflection_tokens,
        is_weights=weights,
    )
    return loss


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("share_prompts", [False, True], ids=["whole_rows", "shared_prompts"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("rollouts_per_step", [1, 2], ids=["accumulate1", "accumulate2"])
@pytest.mark.parametrize("mu", [1, 2], ids=["mu1", "mu2"])
@pytest.mark.parametrize("beta", [0.0, 0.04], ids=["beta0", "beta0.04"])
@pytest.mark.parametrize("loss_type", sorted(F.AGGREGATIONS))
def test_micro_batched_step_equals_one_batch(loss_type, beta, mu, rollouts_per_step, lora, share_prompts):
    """Micro-batches (and, with ``share_prompts``, each group's prompt run once) give the loss and the
    gradients of the whole step in one batch of whole rows."""
    generator = torch.Generator().manual_seed(7)
    rollouts = [
        rollout(generator, groups=3, group_size=4, shared_prompts=share_prompts) for _ in range(rollouts_per_step)
    ]
    rollouts[0]["rewards"][4:8] = 1.0  # one group without signal: left out of the forward when beta = 0
    simple = causal_lm(tied=lora, lora=lora)
    chunked = copy.deepcopy(simple)
    reference = None if lora or not beta else copy.deepcopy(simple).eval().requires_grad_(False)
    settings = LossSettings(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=beta,
        loss_type=loss_type,
        temperature=0.7,
        max_reflection_tokens=8,
        max_tokens_per_micro_batch=40,
        logprob_chunk_size=5,
        share_prompts=share_prompts,
    )
    rows = step_rows(rollouts, "group", beta)
    if beta:
        rows.batch["ref_logprobs"] = reference_logprobs(chunked, reference, rows.batch, settings)
    for _ in range(mu):  # the mu optimizer steps on the same rows: the second has ratios away from 1
        for model in (simple, chunked):
            model.zero_grad(set_to_none=True)
        expected = one_batch_loss(simple, reference, rollouts, settings, "group")
        expected.backward()
        metrics = accumulate_gradients(chunked, rows, settings)
        assert metrics["micro_batches"] >= 2
        assert metrics["loss"] == pytest.approx(expected.item(), abs=1e-5)
        want, got = gradients(simple), gradients(chunked)
        assert want.keys() == got.keys() and want
        for name in want:
            torch.testing.assert_close(got[name], want[name], **CLOSE, msg=name)
        with torch.no_grad():  # the same SGD update on both
            for model in (simple, chunked):
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.5 * p.grad


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_reflection_only_logprobs_equal_full_logits_values_and_gradients(tied, lora):
    batch = rollout(torch.Generator().manual_seed(3), groups=2, group_size=3)
    mask = batch["reflection_mask"][:, 1:]
    simple = causal_lm(tied, lora)
    chunked = copy.deepcopy(simple)
    expected = full_logits_logprobs(simple, batch, 0.7)
    got = masked_token_logprobs(chunked, batch["input_ids"], batch["attention_mask"], mask, 0.7, chunk_size=4)
    torch.testing.assert_close(got[mask], expected[mask], **CLOSE)
    assert torch.all(got[~mask] == 0)
    weights = torch.randn(mask.shape)  # any function of the masked log-probs
    (expected * weights * mask).sum().backward()
    (got * weights * mask).sum().backward()
    want, have = gradients(simple), gradients(chunked)
    assert want.keys() == have.keys()
    for name in want:
        torch.testing.assert_close(have[name], want[name], **CLOSE, msg=name)


def test_token_budget_bounds_padded_tokens_and_keeps_every_row_once():
    lengths = [5, 17, 3, 9, 9, 30, 1, 12]
    batches = token_budget_micro_batches(lengths, max_tokens=24)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 24 or batch == [5]  # row 5 (30 tokens) is over budget on its own
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    assert [5] in batches
    assert token_budget_micro_batches(lengths, None) == [[5, 1, 7, 3, 4, 0, 2, 6]]
    assert token_budget_micro_batches([], 24) == []


def test_rows_without_advantage_leave_the_forward_only_when_beta_is_zero():
    rollouts = [rollout(torch.Generator().manual_seed(1), groups=3, group_size=4)]
    rollouts[0]["rewards"][4:8] = 1.0  # group 1: equal rewards, advantage 0
    rows = step_rows(rollouts, "group", beta=0.0)
    assert rows.batch["input_ids"].shape[0] == 8 and rows.size.rows == 12  # normaliser counts every row
    assert rows.size.tokens == int(rollouts[0]["reflection_mask"].sum())
    assert step_rows(rollouts, "group", beta=0.1).batch["input_ids"].shape[0] == 12


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_is_on_and_changes_no_gradient(lora):
    """With ``model.gradient_checkpointing`` the decoder layers run again in the backward pass (their
    activations were not kept), for full fine-tuning and under a LoRA adapter, with the same gradients."""
    from r3exp.models.loading import LoraSpec, prepare_policy

    batch = rollout(torch.Generator().manual_seed(5), groups=2, group_size=2)
    mask = batch["reflection_mask"][:, 1:]
    results = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        base = causal_lm(tied=True, lora=False)
        policy = prepare_policy(base, LoraSpec(r=4) if lora else None, gradient_checkpointing=checkpointing)
        runs = []
        # a pre-hook: the recompute stops early (torch) once the tensors it needs are back, before forward ends
        decoder_and_output_layer(policy)[0].layers[1].mlp.register_forward_pre_hook(lambda *_: runs.append(1))
        logprobs = masked_token_logprobs(policy, batch["input_ids"], batch["attention_mask"], mask, chunk_size=4)
        assert len(runs) == 1
        logprobs.sum().backward()
        results[checkpointing] = (len(runs), gradients(policy))
    assert results[False][0] == 1 and results[True][0] == 2
    for name, grad in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], grad, **CLOSE)


def test_each_kind_of_row_has_its_own_advantages():
    """rollout.protocol=r3_grpo trains attempts and reflections in one step: groups never mix kinds, and
    ``batch`` scaling divides each kind by the std of its own rewards (not one std over both)."""
    from r3exp.grpo.step import kind_advantages

    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    kinds = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    for scale in ("group", "none"):
        assert torch.equal(kind_advantages(rewards, groups, kinds, scale), F.group_advantages(rewards, groups, scale))
    both = kind_advantages(rewards, groups, kinds, "batch")
    for kind in (0, 1):
        chosen = kinds == kind
        assert torch.allclose(both[chosen], F.group_advantages(rewards[chosen], groups[chosen], "batch"))
    assert not torch.allclose(both, F.group_advantages(rewards, groups, "batch"))
    # several ranks: each kind's moments are summed over ranks, in one call
    calls = []
    kind_advantages(rewards, groups, kinds, "batch", lambda moments: calls.append(moments) or moments)
    assert calls == [[6.0, 4.0, 4.0, 4.0, 1.0, 1.0]]  # (count, sum, sum of squares) of reflections, attempts


@pytest.mark.parametrize("behaviour", ["engine", "trainer"])
@pytest.mark.parametrize("loss_type", sorted(F.AGGREGATIONS))
def test_micro_batched_step_equals_one_batch_with_the_engine_correction(loss_type, behaviour):
    """Truncated importance weights (the fixture's engine log-probs are far from the policy's, so many
    are truncated) and, with behaviour=trainer, the ratio against the trainer's own log-probs taken before
    the first update: two optimizer steps on the same rows, micro-batched = one batch."""
    generator = torch.Generator().manual_seed(11)
    rollouts = [rollout(generator, groups=3, group_size=4)]
    mask = rollouts[0]["reflection_mask"]  # engine log-probs around the policy's (~log 1/97): ratios 0.2-4
    rollouts[0]["behaviour_logprobs"] = torch.where(mask, -6.0 + 3.0 * torch.rand(mask.shape, generator=generator), 0.0)
    simple = causal_lm(tied=False, lora=False)
    chunked = copy.deepcopy(simple)
    settings = LossSettings(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        loss_type=loss_type,
        temperature=0.7,
        max_reflection_tokens=8,
        max_tokens_per_micro_batch=40,
        logprob_chunk_size=5,
    )
    rows = step_rows(rollouts, "group", 0.0)
    metrics = correct_for_engine(chunked, rows.batch, settings, GRPOLoss(correction="truncate", behaviour=behaviour))
    assert 0 < metrics["correction_share"] < 1 and metrics["engine_ratio_max"] > 2.0
    with torch.no_grad():
        old = full_logits_logprobs(simple, rollouts[0], settings.temperature)
    for _ in range(2):
        for model in (simple, chunked):
            model.zero_grad(set_to_none=True)
        expected = one_batch_loss(simple, None, rollouts, settings, "group", correction=(behaviour, old))
        expected.backward()
        got_metrics = accumulate_gradients(chunked, rows, settings)
        assert got_metrics["micro_batches"] >= 2
        assert got_metrics["loss"] == pytest.approx(expected.item(), abs=1e-5)
        want, got = gradients(simple), gradients(chunked)
        for name in want:
            torch.testing.assert_close(got[name], want[name], **CLOSE, msg=name)
        with torch.no_grad():
            for model in (simple, chunked):
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.5 * p.grad


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_shared_prompt_logprobs_equal_whole_rows_values_and_gradients(tied, lora):
    """Each group's prompt runs once and its rows continue from the prompt's key/value cache: the same
    log-probs and the same gradients as running every row whole, for groups of different prompt lengths,
    rows of different lengths (right-padded) and a row with nothing scored."""
    batch = rollout(torch.Generator().manual_seed(5), groups=3, group_size=4, shared_prompts=True)
    mask = batch["reflection_mask"][:, 1:].clone()
    mask[5] = False  # a row with nothing scored: zeros, no forward
    assert len(prompt_groups(batch["input_ids"], mask)) == 3
    whole = causal_lm(tied, lora)
    shared = copy.deepcopy(whole)
    expected = masked_token_logprobs(whole, batch["input_ids"], batch["attention_mask"], mask, 0.7, chunk_size=4)
    got = shared_prompt_logprobs(shared, batch["input_ids"], batch["attention_mask"], mask, 0.7, chunk_size=4)
    torch.testing.assert_close(got, expected, **CLOSE)
    assert torch.all(got[~mask] == 0)
    weights = torch.randn(mask.shape)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    want, have = gradients(whole), gradients(shared)
    assert want.keys() == have.keys() and want
    for name in want:
        torch.testing.assert_close(have[name], want[name], **CLOSE, msg=name)


def test_prompt_groups_are_rows_with_the_same_tokens_before_their_first_scored_token():
    ids = torch.tensor([[1, 2, 3, 4, 0], [1, 2, 3, 5, 6], [1, 2, 9, 4, 0], [1, 2, 3, 7, 0], [1, 2, 3, 4, 5]])
    mask = torch.zeros(5, 4, dtype=torch.bool)  # aligned on the predicted token: mask[:, t] scores ids[:, t + 1]
    mask[0, 2:3] = mask[1, 2:4] = mask[2, 1:3] = mask[3, 2:3] = True  # row 4 scores nothing
    assert prompt_groups(ids, mask) == [(3, [0, 1, 3]), (2, [2])]


def test_shared_prompt_micro_batches_keep_groups_together_within_the_budget():
    lengths = [10, 12, 11, 30, 31, 6]
    groups = [(8, [0, 1, 2]), (20, [3, 4]), (0, [5])]  # costs alone: 8 + 3 x 4 = 20, 20 + 2 x 11 = 42, 6
    assert shared_prompt_micro_batches(groups, lengths, None) == [[1, 2, 0, 4, 3, 5]]  # longest rows first
    # padded together: the first two groups 2 x 20 + 5 x 11 = 95 > 64; the first and the last 2 x 8 + 4 x 6 = 40
    assert shared_prompt_micro_batches(groups, lengths, 64) == [[4, 3], [1, 2, 0, 5]]
    # within 95 the first two go together; all three would be 3 x 20 + 6 x 11 = 126
    assert shared_prompt_micro_batches(groups, lengths, 95) == [[4, 3, 1, 2, 0], [5]]
    batches = shared_prompt_micro_batches(groups, lengths, 30)  # the second group splits: 20 + 11 = 31 > 30
    assert sorted(row for batch in batches for row in batch) == list(range(6))
    assert [4] in batches and [3] in batches  # one row each, over the budget alone (31 > 30, 30 <= 30)
    assert any(set(batch) >= {0, 1, 2} for batch in batches)  # the first group stays whole (20 <= 30)
    with pytest.raises(ValueError):
        shared_prompt_micro_batches(groups, lengths, 0)


def test_gradient_checkpointing_runs_rows_whole():
    model = causal_lm(tied=False, lora=False)
    assert can_share_prompts(model)
    model.gradient_checkpointing_enable()
    assert not can_share_prompts(model)
