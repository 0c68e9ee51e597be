"""One optimizer step's rows, and their gradients accumulated over token-budget micro-batches.

The step's rows are every rollout of the step (``grpo.rollouts_per_step``). Their advantages and the loss
normaliser (:class:`~r3exp.grpo.functions.StepSize`) are computed over all of them before any forward, so
the micro-batches' losses sum to the loss of the step computed in one batch, whatever the split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from r3exp.grpo import functions as F
from r3exp.grpo.logprobs import ReflectionLogprobs, masked_token_logprobs, prompt_groups
from r3exp.grpo.micro_batches import select_rows, shared_prompt_micro_batches, token_budget_micro_batches
from r3exp.models.export import is_peft
from r3exp.rollout.batching import RolloutTensors, concat_batches
from r3exp.rollout.episodes import ROW_KINDS


@dataclass
class LossSettings:
    """What the micro-batch loss needs besides the rows (a ``GRPOLoss`` plus the step's shape)."""

    epsilon: float
    epsilon_high: float
    beta: float
    loss_type: str
    temperature: float
    max_reflection_tokens: int  # ``dr_grpo``'s constant
    max_tokens_per_micro_batch: int | None = 2048  # None: the whole step in one forward
    logprob_chunk_size: int = 512  # positions per output-layer chunk
    share_prompts: bool = False  # rows with one prompt run it once (logprobs.shared_prompt_logprobs)
    off_policy_shaping: float = 0.1  # γ of the distilled rows' shaped loss (functions.shaped_policy_loss)


class StepBatch(RolloutTensors, total=False):
    """The trainer's own rows of one optimizer step: the step's rollouts' tensors merged
    (:func:`step_rows`), with what the step computes for them."""

    advantages: torch.Tensor  # (N,)
    ref_logprobs: torch.Tensor  # (N, T), when beta > 0 (reference_logprobs)
    is_weights: torch.Tensor  # (N, T), with grpo.loss.correction (engine/trainer weights, correct_for_engine)


@dataclass
class StepRows:
    """The rows that go through the forward (``batch``: (N, T) tensors plus ``advantages`` (N,)), the size
    of the whole step (every row, including those left out) and the advantages of every row in rollout
    order (for sample tables)."""

    batch: StepBatch
    size: F.StepSize
    advantages: torch.Tensor

    @property
    def has_signal(self) -> bool:
        return bool(self.batch["advantages"].ne(0).any())


def step_rows(
    rollouts: Sequence[RolloutTensors],
    scale_rewards: str,
    beta: float,
    reward_moments: Callable[[list[float]], list[float]] = lambda moments: moments,
) -> StepRows:
    """Merge the step's rollouts, compute group advantages over all of them, and keep the rows that move
    the loss: with ``beta`` = 0 a row whose advantage is 0 adds exactly 0 to the loss and its gradient
    (``-min(ρ·0, clip(ρ)·0)``), so it is left out of the forward; it still counts in the step's size.
    Each kind of row (``row_kinds``: reflections, attempts) has its own advantages (:func:`kind_advantages`).
    ``reward_moments`` sums the (count, sum, sum of squares) of each kind's rewards over ranks, for ``batch``
    scaling."""
    batch = concat_batches(rollouts)
    advantages = kind_advantages(
        batch["rewards"], batch["group_ids"], batch["row_kinds"], scale_rewards, reward_moments
    )
    size = F.StepSize.of(batch["reflection_mask"][:, 1:])
    keep = torch.ones_like(advantages, dtype=torch.bool) if beta != 0.0 else advantages.ne(0)
    rows = keep.nonzero().squeeze(-1).tolist()
    moving = select_rows({**batch, "advantages": advantages}, rows)
    return StepRows(moving, size, advantages)


def kind_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    row_kinds: torch.Tensor,
    scale_rewards: str,
    reward_moments: Callable[[list[float]], list[float]] = lambda moments: moments,
) -> torch.Tensor:
    """(N,) group advantages computed for each kind of row on its own: groups never mix kinds, so only
    ``batch`` scaling differs from one computation over all rows (each kind is divided by the std of its
    own rewards; an attempt's reward and a reflection's measure different things). ``reward_moments`` is
    called once, on every rank alike, with 3 moments per kind of ``ROW_KINDS``."""
    advantages = torch.zeros_like(rewards)
    selections = [row_kinds == kind for kind in range(len(ROW_KINDS))]
    stds: list[float | None] = [None] * len(ROW_KINDS)
    if scale_rewards == "batch":
        moments = []
        for chosen in selections:
            values = rewards[chosen].double()
            moments += [float(len(values)), values.sum().item(), (values**2).sum().item()]
        moments = reward_moments(moments)
        stds = [F.pooled_std(*moments[3 * k : 3 * k + 3]) for k in range(len(ROW_KINDS))]
    for chosen, std in zip(selections, stds):
        if chosen.any():
            advantages[chosen] = F.group_advantages(rewards[chosen], group_ids[chosen], scale_rewards, batch_std=std)
    return advantages


def micro_batch_loss(
    policy, micro: dict, settings: LossSettings, size: F.StepSize
) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the step's loss; (N, T-1) tensors below are aligned on the predicted token."""
    mask = micro["reflection_mask"][:, 1:]
    logprobs = masked_token_logprobs(
        policy,
        micro["input_ids"],
        micro["attention_mask"],
        mask,
        settings.temperature,
        settings.logprob_chunk_size,
        settings.share_prompts,
    )
    ref = micro["ref_logprobs"][:, 1:] if settings.beta else None
    weights = micro["is_weights"][:, 1:] if "is_weights" in micro else None
    return F.grpo_loss(
        logprobs,
        micro["behaviour_logprobs"][:, 1:],
        micro["advantages"],
        mask,
        epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high,
        loss_type=settings.loss_type,
        beta=settings.beta,
        ref_logprobs=ref,
        max_tokens=settings.max_reflection_tokens,
        step=size,
        is_weights=weights,
        off_policy=micro.get("off_policy"),
        shaping_gamma=settings.off_policy_shaping,
    )


def share_of_engine(rows: StepRows, engine_rank: int, engine_ranks: int) -> StepRows:
    """The rows this rank trains when ``engine_ranks`` ranks share one engine, and so the same rollouts:
    every ``engine_ranks``-th row from ``engine_rank``. The loss is a sum over rows divided by the whole
    step's size, so the shares' gradients sum to the whole batch's."""
    if engine_ranks == 1:
        return rows
    mine = list(range(engine_rank, len(rows.batch["advantages"]), engine_ranks))
    return StepRows(select_rows(rows.batch, mine), rows.size, rows.advantages)


def micro_batches(batch: StepBatch, settings: LossSettings) -> list[list[int]]:
    """The rows of ``batch`` in micro-batches under the token budget: padded rows x longest row, or with
    ``share_prompts`` the tokens that run once a shared prompt runs once (rows without a scored token count
    whole)."""
    lengths = batch["attention_mask"].sum(-1).tolist()
    if not settings.share_prompts:
        return token_budget_micro_batches(lengths, settings.max_tokens_per_micro_batch)
    groups = prompt_groups(batch["input_ids"], batch["reflection_mask"][:, 1:])
    grouped = {row for _, rows in groups for row in rows}
    groups += [(0, [row]) for row in range(len(lengths)) if row not in grouped]
    return shared_prompt_micro_batches(groups, lengths, settings.max_tokens_per_micro_batch)


def micro_batch_count(batch: StepBatch, settings: LossSettings) -> int:
    """How many micro-batches the rows of ``batch`` take under the token budget."""
    return len(micro_batches(batch, settings))


def padding_pass(policy, device: torch.device | str, backward: Callable[[torch.Tensor], None] | None) -> None:
    """A forward (and ``backward``) of one two-token row whose loss is weighted 0: under FSDP a rank with
    fewer micro-batches than the others runs these, so every rank runs the same collectives. The gradient
    it adds is exactly 0."""
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    values = masked_token_logprobs(
        policy, ids, torch.ones_like(ids), torch.ones((1, 1), dtype=torch.bool, device=device)
    )
    if backward is not None and values.requires_grad:
        backward(0.0 * values.sum())


def accumulate_gradients(
    policy,
    rows: StepRows,
    settings: LossSettings,
    device: torch.device | str = "cpu",
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    pad_to: int | None = None,
) -> dict[str, float]:
    """Forward and ``backward`` every micro-batch of the step; gradients accumulate in ``policy``. Returns
    the step's metrics: ``loss`` (the sum of the shares), the merged loss metrics, ``micro_batches``,
    ``trained_tokens`` (attended tokens of the rows that went through) and ``tokens_per_second`` (of
    those, forward and backward). ``pad_to`` (sharded training): run :func:`padding_pass` until this many
    micro-batches have run, so every rank runs as many as the rank with most."""
    start = time.perf_counter()
    parts, loss, trained_tokens = [], 0.0, 0
    splits = micro_batches(rows.batch, settings)
    for indices in splits:
        micro = {k: v.to(device) if torch.is_tensor(v) else v for k, v in select_rows(rows.batch, indices).items()}
        share, metrics = micro_batch_loss(policy, micro, settings, rows.size)
        if share.requires_grad:  # a micro-batch without reflection tokens (empty reflections) has no graph
            backward(share)
        loss += share.item()
        parts.append((metrics, float(micro["reflection_mask"][:, 1:].sum())))
        trained_tokens += int(micro["attention_mask"].sum())
    for _ in range(len(splits), pad_to or 0):
        padding_pass(policy, device, backward)
    metrics = F.merge_metrics(parts)
    seconds = time.perf_counter() - start
    metrics.update(
        loss=loss,
        micro_batches=float(len(splits)),
        trained_tokens=float(trained_tokens),
        tokens_per_second=trained_tokens / seconds if seconds > 0 else 0.0,
    )
    return metrics


def reference_logprobs(
    policy,
    reference,
    batch: StepBatch,
    settings: LossSettings,
    device: torch.device | str = "cpu",
    pad_to: int | None = None,
) -> torch.Tensor:
    """(N, T) log-prob of each reflection token under the reference at the token's own position (as
    ``behaviour_logprobs``), 0 elsewhere; micro-batched under the same token budget as the step. The
    reference is ``reference`` (a frozen copy of the initial policy), or for a LoRA policy with
    ``reference=None`` the base model: the policy with its adapter switched off. ``pad_to``: as in
    :func:`accumulate_gradients` (sharded models)."""
    if reference is None:
        inner = policy.policy if isinstance(policy, ReflectionLogprobs) else policy
        if not is_peft(inner):
            raise ValueError("beta != 0 needs a reference model (or a LoRA policy, whose base model is one)")
        with inner.disable_adapter():
            return _logprobs_without_grad(policy, batch, settings, device, pad_to)
    return _logprobs_without_grad(reference, batch, settings, device, pad_to)


def correct_for_engine(
    policy,
    batch: StepBatch,
    settings: LossSettings,
    loss,
    device: torch.device | str = "cpu",
    pad_to: int | None = None,
) -> dict[str, float]:
    """One no-grad pass of the trainer over ``batch`` (micro-batched, reflection tokens only) before the
    step's first update: the trainer's log-probs of the sampled tokens under the sampling weights. In place:
    ``batch["is_weights"]`` (per-token engine/trainer correction, ``loss.correction``) and, with
    ``loss.behaviour == "trainer"``, ``batch["behaviour_logprobs"]`` become the trainer's. Returns the
    mismatch metrics of :func:`~r3exp.grpo.functions.importance_weights` over these rows. Off-policy rows
    (``off_policy``: distilled retries, sampled with another context) are left out: weight 1, the engine's
    log-probs kept, no part in the metrics."""
    trainer = _logprobs_without_grad(policy, batch, settings, device, pad_to)
    off_policy = batch["off_policy"].unsqueeze(1) if "off_policy" in batch else torch.zeros((1, 1), dtype=torch.bool)
    mask = batch["reflection_mask"][:, 1:] & ~off_policy
    weights, metrics = F.importance_weights(
        trainer[:, 1:],
        batch["behaviour_logprobs"][:, 1:],
        mask,
        loss.correction,
        loss.correction_cap,
        loss.correction_low,
    )
    if loss.correction != "none":
        batch["is_weights"] = torch.cat([torch.ones_like(weights[:, :1]), weights], dim=1)
    if loss.behaviour == "trainer":
        batch["behaviour_logprobs"] = torch.where(off_policy, batch["behaviour_logprobs"], trainer)
    return metrics


@torch.no_grad()
def _logprobs_without_grad(model, batch: StepBatch, settings: LossSettings, device, pad_to: int | None) -> torch.Tensor:
    out = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)
    splits = micro_batches(batch, settings)
    for indices in splits:
        micro = {k: v.to(device) for k, v in select_rows(batch, indices).items() if torch.is_tensor(v)}
        mask = micro["reflection_mask"][:, 1:]
        values = masked_token_logprobs(
            model,
            micro["input_ids"],
            micro["attention_mask"],
            mask,
            settings.temperature,
            settings.logprob_chunk_size,
            settings.share_prompts,
        )
        out[indices, 1 : 1 + values.shape[1]] = values.float().cpu()
    for _ in range(len(splits), pad_to or 0):
        padding_pass(model, device, backward=None)
    return out
