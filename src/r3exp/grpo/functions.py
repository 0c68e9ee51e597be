"""Masked GRPO as pure tensor functions.

Shapes: ``N`` rows (one per reflection), ``T`` token positions, ``V`` vocabulary. ``mask`` is the
(N, T) reflection mask (True on reflection tokens only), so advantages reach reflection tokens only.

References: GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300); clip-higher and token-level
aggregation from DAPO (Yu et al. 2025, arXiv 2503.14476); Dr. GRPO (Liu et al. 2025, arXiv 2503.20783);
the k3 KL estimator (Schulman 2020, "Approximating KL divergence"). Aggregation names and formulas
follow TRL's ``GRPOTrainer`` (``loss_type``). The engine/trainer correction is truncated importance
sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training"), as
TRL's ``vllm_importance_sampling_correction`` (``token_truncate``, ``token_mask``) computes it. Off-policy
rows (distilled retries) take LUFFY's policy shaping (Yan et al. 2025, arXiv 2504.14945, ``f(p) = p / (p + γ)``),
as Critique-GRPO (Zhang et al. 2025, arXiv 2506.03106) trains its refinements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

SCALE_REWARDS = ("group", "batch", "none")
CORRECTIONS = ("none", "truncate", "mask")


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    scale_rewards: str = "group",
    eps: float = 1e-4,
    batch_std: float | None = None,
) -> torch.Tensor:
    """(N,) advantages ``(r - mean_group) / (std + eps)``.

    ``scale_rewards``: ``group`` divides by the group's std (GRPO), ``batch`` by the std of all rewards
    (more robust to easy/hard groups, Dr. GRPO's criticism of per-group scaling), ``none`` only centres
    (Dr. GRPO). Stds are unbiased (Bessel), as ``torch.std`` and TRL; a group of one has std 0.
    Groups need not be contiguous or of equal size. ``batch_std`` replaces the std of ``rewards`` for
    ``batch`` scaling when the batch is larger than these rows (several ranks: :func:`pooled_std`).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}; expected one of {SCALE_REWARDS}")
    _, group_index = torch.unique(group_ids, return_inverse=True)
    num_groups = int(group_index.max()) + 1 if len(group_index) else 0
    counts = torch.zeros(num_groups, dtype=rewards.dtype).index_add_(0, group_index, torch.ones_like(rewards))
    sums = torch.zeros(num_groups, dtype=rewards.dtype).index_add_(0, group_index, rewards)
    mean = (sums / counts)[group_index]
    centred = rewards - mean
    if scale_rewards == "none":
        return centred
    if scale_rewards == "batch":
        if batch_std is not None:
            return centred / (batch_std + eps)
        std = rewards.std() if len(rewards) > 1 else rewards.new_zeros(())
        return centred / (std + eps)
    squares = torch.zeros(num_groups, dtype=rewards.dtype).index_add_(0, group_index, centred**2)
    std = (squares / (counts - 1).clamp(min=1)).sqrt()[group_index]
    return centred / (std + eps)


def pooled_std(count: float, total: float, total_of_squares: float) -> float:
    """Unbiased std of values known by their count, sum and sum of squares (summed over ranks); 0 for one."""
    if count < 2:
        return 0.0
    return max((total_of_squares - total * total / count) / (count - 1), 0.0) ** 0.5


def reward_std_is_zero(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(G,) bool per group (in ``torch.unique`` order): True when all rewards of the group are equal."""
    _, group_index = torch.unique(group_ids, return_inverse=True)
    num_groups = int(group_index.max()) + 1 if len(group_index) else 0
    high = torch.full((num_groups,), -torch.inf).scatter_reduce(0, group_index, rewards, "amax")
    low = torch.full((num_groups,), torch.inf).scatter_reduce(0, group_index, rewards, "amin")
    return high == low


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, T) log-prob of ``tokens[n, t]`` under ``softmax(logits[n, t] / temperature)``.

    The caller aligns them: ``logits[:, :-1]`` with ``input_ids[:, 1:]``. Computed row by row as
    ``gather - logsumexp`` to avoid materialising a (N, T, V) log-softmax.
    """
    rows = []
    for row_logits, row_tokens in zip(logits, tokens):  # (T, V), (T,)
        row_logits = row_logits.float() / temperature
        picked = row_logits.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows) if rows else logits.new_zeros(tokens.shape)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over True positions of ``mask`` (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def clipped_surrogate(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) per-token PPO-clip loss ``-min(ρ A, clip(ρ, 1-ε, 1+ε_high) A)`` and the ratio ``ρ``.

    ``ρ = exp(logprobs - behaviour_logprobs)`` is the importance ratio against the policy that sampled
    the tokens. Off-mask positions are set to ratio 1 before the exp, so their gradient is exactly 0.
    """
    log_ratio = torch.where(mask, logprobs - behaviour_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)  # (N, 1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high) * adv
    return -torch.minimum(unclipped, clipped), ratio


def importance_weights(
    trainer_logprobs: torch.Tensor,
    engine_logprobs: torch.Tensor,
    mask: torch.Tensor,
    correction: str,
    cap: float = 2.0,
    low: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(N, T) per-token weights that correct for the engine sampling from a slightly different policy than
    the trainer computes (other kernels, another precision), and their metrics.

    ``w = π_trainer(y) / π_engine(y)`` on each sampled token, from the trainer's log-probs under the
    sampling weights and the engine's. ``correction``: ``none`` (every weight 1), ``truncate``
    (``min(w, cap)``: truncated importance sampling), ``mask`` (``w`` inside ``[low, cap]``, 0 outside: the
    token leaves the loss, still counted by its normaliser). Off-mask positions weigh 1. Metrics (masked
    over this batch's tokens): ``engine_gap_mean`` / ``engine_gap_max`` (``|log π_trainer - log π_engine|``),
    ``engine_ratio_min`` / ``engine_ratio_max`` (``w``), and ``correction_share``: the share of tokens
    whose weight the correction changed (truncated, or masked).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction={correction!r}; expected one of {CORRECTIONS}")
    gap = torch.where(mask, trainer_logprobs - engine_logprobs, torch.zeros_like(trainer_logprobs))
    ratio = torch.exp(gap)
    if correction == "truncate":
        changed = mask & (ratio > cap)
        weights = ratio.clamp(max=cap)
    elif correction == "mask":
        changed = mask & ((ratio < low) | (ratio > cap))
        weights = torch.where(changed, torch.zeros_like(ratio), ratio)
    else:
        changed = torch.zeros_like(mask)
        weights = torch.ones_like(ratio)
    weights = torch.where(mask, weights, torch.ones_like(weights))
    any_token = bool(mask.any())
    metrics = {
        "engine_gap_mean": masked_mean(gap.abs(), mask).item(),
        "engine_gap_max": gap.abs().max().item() if any_token else 0.0,
        "engine_ratio_min": ratio[mask].min().item() if any_token else 1.0,
        "engine_ratio_max": ratio[mask].max().item() if any_token else 1.0,
        "correction_share": masked_mean(changed.float(), mask).item(),
    }
    return weights.detach(), metrics


def shaped_policy_loss(
    logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """(N, T) per-token loss ``-A · p / (p + γ)`` of off-policy rows, ``p = exp(logprobs)`` the policy's
    probability of the token (LUFFY's policy shaping, unclipped, no behaviour probability in the denominator:
    LUFFY's ``π_φ = 1``). Its gradient is ``-A · γ p / (p + γ)² · ∇log p``: REINFORCE's ``-A · ∇log p``
    weighted by ``γ p / (p + γ)²``, against ``p`` for the importance ratio ``p / 1``: ``γ / (p + γ)²`` times
    the ratio's, about ``1/γ`` (10x at γ = 0.1) for unlikely tokens, where both still shrink with ``p``, and
    about ``γ`` for tokens the policy already gives probability near 1.
    Off-mask positions are 0 with gradient 0."""
    probs = torch.exp(torch.where(mask, logprobs, torch.full_like(logprobs, -torch.inf)))
    return torch.where(mask, -advantages.unsqueeze(1) * probs / (probs + gamma), torch.zeros_like(logprobs))


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, T) k3 estimator of KL(π‖π_ref): ``exp(ref - lp) - (ref - lp) - 1`` (≥ 0, unbiased); 0 off-mask."""
    delta = torch.where(mask, ref_logprobs - logprobs, torch.zeros_like(logprobs))
    return torch.exp(delta) - delta - 1.0


@dataclass(frozen=True)
class StepSize:
    """The size of a whole optimizer step: its rows and reflection tokens, over every micro-batch (and, with
    several ranks, every rank). Each micro-batch divides its share of the loss by these, so the shares sum
    to the loss of the step computed in one batch."""

    rows: int
    tokens: int

    @classmethod
    def of(cls, mask: torch.Tensor) -> "StepSize":
        """The size of one batch on its own, from its (N, T) mask."""
        return cls(rows=int(mask.shape[0]), tokens=int(mask.sum()))


def aggregate_grpo(per_token: torch.Tensor, mask: torch.Tensor, step: StepSize, max_tokens: int) -> torch.Tensor:
    """``grpo``: mean over each sequence's tokens, then over the step's sequences (long sequences weigh less
    per token)."""
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / max(step.rows, 1)


def aggregate_dr_grpo(per_token: torch.Tensor, mask: torch.Tensor, step: StepSize, max_tokens: int) -> torch.Tensor:
    """``dr_grpo``: sum over tokens divided by ``rows * max_tokens``, a constant (no length bias)."""
    return (per_token * mask.to(per_token.dtype)).sum() / (max(step.rows, 1) * max_tokens)


def aggregate_dapo(per_token: torch.Tensor, mask: torch.Tensor, step: StepSize, max_tokens: int) -> torch.Tensor:
    """``dapo``: token-level mean, the sum divided by the number of reflection tokens of the whole step."""
    return (per_token * mask.to(per_token.dtype)).sum() / max(step.tokens, 1)


AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": aggregate_grpo,
    "dr_grpo": aggregate_dr_grpo,
    "dapo": aggregate_dapo,
}


def grpo_loss(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float,
    loss_type: str,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    max_tokens: int = 1,
    step: StepSize | None = None,
    is_weights: torch.Tensor | None = None,
    off_policy: torch.Tensor | None = None,
    shaping_gamma: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked clipped GRPO objective (+ ``beta`` · k3 KL to the reference). Returns (loss, metrics).

    All (N, T) inputs are aligned on the predicted token; ``advantages`` is (N,). ``step`` is the size of
    the whole optimizer step when these rows are one micro-batch of it (default: these rows alone); the
    losses of a step's micro-batches then sum to the loss of the step in one batch. Metrics are masked
    means over this batch's tokens (``logprob_diff_max`` a max): :func:`merge_metrics` combines them.
    ``is_weights``: (N, T) per-token weights of the policy-gradient term (:func:`importance_weights`),
    applied before the KL term is added (as TRL). ``off_policy``: (N,) bool, rows that the policy did not
    sample (distilled retries): their tokens take :func:`shaped_policy_loss` (``shaping_gamma``) instead of the
    clipped ratio and no ``is_weights``, count in the aggregation like any token, and are left out of the
    ratio and clip metrics; ``distill/prob_mean`` (their ``p``) and ``distill/context_gap`` (behaviour minus
    policy log-prob: how much more likely the engine made them with the reflection in context) describe them.
    ``distill/tokens`` counts their tokens, so that :func:`merge_metrics` weighs each metric by the tokens
    it was taken over.
    """
    if loss_type not in AGGREGATIONS:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {sorted(AGGREGATIONS)}")
    has_off_policy = off_policy is not None and bool(off_policy.any())
    on_policy = mask & ~off_policy.unsqueeze(1) if has_off_policy else mask  # the ratio's tokens
    per_token, ratio = clipped_surrogate(logprobs, behaviour_logprobs, advantages, on_policy, epsilon, epsilon_high)
    if is_weights is not None:
        per_token = per_token * is_weights
    metrics: dict[str, float] = {}
    if has_off_policy:
        rows = off_policy.unsqueeze(1)
        per_token = torch.where(rows, shaped_policy_loss(logprobs, advantages, mask, shaping_gamma), per_token)
        off_tokens = mask & rows
        with torch.no_grad():
            metrics[DISTILLED_TOKENS] = float(off_tokens.sum())
            metrics["distill/prob_mean"] = masked_mean(logprobs.exp(), off_tokens).item()
            metrics["distill/context_gap"] = masked_mean(behaviour_logprobs - logprobs, off_tokens).item()
    if beta != 0.0:
        if ref_logprobs is None:
            raise ValueError("beta != 0 needs ref_logprobs")
        kl = kl_k3(logprobs, ref_logprobs, mask)
        per_token = per_token + beta * kl
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
    loss = AGGREGATIONS[loss_type](per_token, mask, step or StepSize.of(mask), max_tokens)
    with torch.no_grad():
        adv = advantages.unsqueeze(1)
        low = (ratio < 1.0 - epsilon) & (adv < 0)
        high = (ratio > 1.0 + epsilon_high) & (adv > 0)
        metrics["clip_ratio/low"] = masked_mean(low.float(), on_policy).item()
        metrics["clip_ratio/high"] = masked_mean(high.float(), on_policy).item()
        metrics["clip_ratio/region"] = masked_mean((low | high).float(), on_policy).item()
        metrics["ratio_mean"] = masked_mean(ratio, on_policy).item()
        metrics["ratio_min"] = ratio[on_policy].min().item() if on_policy.any() else 1.0
        metrics["ratio_max"] = ratio[on_policy].max().item() if on_policy.any() else 1.0
        # 0 up to numerics when the batch is on-policy (first of the mu updates): a staleness detector
        diff = torch.where(on_policy, (logprobs - behaviour_logprobs).abs(), torch.zeros_like(logprobs))
        metrics["logprob_diff_max"] = diff.max().item() if diff.numel() else 0.0
    return loss, metrics


DISTILLED_TOKENS = "distill/tokens"  # the off-policy rows' tokens in a batch (grpo_loss's metrics)
ON_POLICY_METRICS = ("clip_ratio/", "ratio_", "logprob_diff_max")  # taken over the sampled rows' tokens only


def metric_weight(key: str, metrics: dict[str, float], tokens: float) -> float:
    """The tokens a masked-mean metric of a batch with ``tokens`` reflection tokens was taken over: the
    distilled rows' for ``distill/*``, the sampled rows' for the ratio metrics, all of them otherwise."""
    distilled = metrics.get(DISTILLED_TOKENS, 0.0)
    if key.startswith("distill/"):
        return distilled
    return tokens - distilled if key.startswith(ON_POLICY_METRICS) else tokens


def merge_metrics(parts: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Metrics of a whole step from its micro-batches' ``(metrics, reflection tokens)``: keys ending in
    ``_max`` take the max, ``_min`` the min, ``distill/tokens`` the sum, the others (masked means) the mean
    weighted by the tokens each was taken over (:func:`metric_weight`), which equals the masked mean over
    all the step's tokens. A micro-batch without such tokens has no min or max to give."""
    merged: dict[str, float] = {}
    for key in {k for metrics, _ in parts for k in metrics}:
        values = [(metrics[key], metric_weight(key, metrics, tokens)) for metrics, tokens in parts if key in metrics]
        extreme = [v for v, w in values if w > 0] or [v for v, _ in values]
        total = sum(w for _, w in values)
        if key == DISTILLED_TOKENS:
            merged[key] = sum(v for v, _ in values)
        elif key.endswith("_max"):
            merged[key] = max(extreme)
        elif key.endswith("_min"):
            merged[key] = min(extreme)
        else:
            merged[key] = sum(v * w for v, w in values) / total if total else 0.0
    return merged
