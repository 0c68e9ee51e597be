"""Masked GRPO as pure tensor functions.

Shapes: ``N`` rows (one per reflection), ``T`` token positions, ``V`` vocabulary. ``mask`` is the
(N, T) reflection mask (True on reflection tokens only), so advantages reach reflection tokens only.

References: GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300); clip-higher and token-level
aggregation from DAPO (Yu et al. 2025, arXiv 2503.14476); Dr. GRPO (Liu et al. 2025, arXiv 2503.20783);
the k3 KL estimator (Schulman 2020, "Approximating KL divergence"). Aggregation names and formulas
follow TRL's ``GRPOTrainer`` (``loss_type``).
"""
from __future__ import annotations

from typing import Callable

import torch

SCALE_REWARDS = ("group", "batch", "none")


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, scale_rewards: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """(N,) advantages ``(r - mean_group) / (std + eps)``.

    ``scale_rewards``: ``group`` divides by the group's std (GRPO), ``batch`` by the std of all rewards
    (more robust to easy/hard groups, Dr. GRPO's criticism of per-group scaling), ``none`` only centres
    (Dr. GRPO). Stds are unbiased (Bessel), as ``torch.std`` and TRL; a group of one has std 0.
    Groups need not be contiguous or of equal size.
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
        std = rewards.std() if len(rewards) > 1 else rewards.new_zeros(())
        return centred / (std + eps)
    squares = torch.zeros(num_groups, dtype=rewards.dtype).index_add_(0, group_index, centred**2)
    std = (squares / (counts - 1).clamp(min=1)).sqrt()[group_index]
    return centred / (std + eps)


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


def clipped_surrogate(logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, epsilon: float, epsilon_high: float) -> tuple[torch.Tensor, torch.Tensor]:
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


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, T) k3 estimator of KL(π‖π_ref): ``exp(ref - lp) - (ref - lp) - 1`` (≥ 0, unbiased); 0 off-mask."""
    delta = torch.where(mask, ref_logprobs - logprobs, torch.zeros_like(logprobs))
    return torch.exp(delta) - delta - 1.0


def aggregate_grpo(per_token: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """``grpo``: mean over each sequence's tokens, then over sequences (long sequences weigh less per token)."""
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def aggregate_dr_grpo(per_token: torch.Tensor, mask: torch.Tensor, max_tokens: int, **_) -> torch.Tensor:
    """``dr_grpo``: sum over tokens divided by ``N * max_tokens``, a constant (no length bias)."""
    return (per_token * mask.to(per_token.dtype)).sum() / (per_token.shape[0] * max_tokens)


def aggregate_dapo(per_token: torch.Tensor, mask: torch.Tensor, num_items: float | None = None, **_) -> torch.Tensor:
    """``dapo``: token-level mean, ``sum / num_items`` where ``num_items`` is the number of reflection tokens
    in the whole optimizer step (across gradient-accumulation micro-batches; defaults to this batch's)."""
    normaliser = float(num_items) if num_items is not None else mask.sum().clamp(min=1).item()
    return (per_token * mask.to(per_token.dtype)).sum() / max(normaliser, 1.0)


AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": aggregate_grpo,
    "dr_grpo": aggregate_dr_grpo,
    "dapo": aggregate_dapo,
}


def grpo_loss(logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, *, epsilon: float, epsilon_high: float, loss_type: str, beta: float = 0.0,
              ref_logprobs: torch.Tensor | None = None, max_tokens: int = 1, num_items: float | None = None,
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked clipped GRPO objective (+ ``beta`` · k3 KL to the reference). Returns (loss, metrics).

    All (N, T) inputs are aligned on the predicted token; ``advantages`` is (N,).
    """
    if loss_type not in AGGREGATIONS:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {sorted(AGGREGATIONS)}")
    per_token, ratio = clipped_surrogate(logprobs, behaviour_logprobs, advantages, mask, epsilon, epsilon_high)
    metrics: dict[str, float] = {}
    if beta != 0.0:
        if ref_logprobs is None:
            raise ValueError("beta != 0 needs ref_logprobs")
        kl = kl_k3(logprobs, ref_logprobs, mask)
        per_token = per_token + beta * kl
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
    loss = AGGREGATIONS[loss_type](per_token, mask, max_tokens=max_tokens, num_items=num_items)
    with torch.no_grad():
        adv = advantages.unsqueeze(1)
        low = (ratio < 1.0 - epsilon) & (adv < 0)
        high = (ratio > 1.0 + epsilon_high) & (adv > 0)
        metrics["clip_ratio/low"] = masked_mean(low.float(), mask).item()
        metrics["clip_ratio/high"] = masked_mean(high.float(), mask).item()
        metrics["clip_ratio/region"] = masked_mean((low | high).float(), mask).item()
        metrics["ratio_mean"] = masked_mean(ratio, mask).item()
        # 0 up to numerics when the batch is on-policy (first of the mu updates): a staleness detector
        diff = torch.where(mask, (logprobs - behaviour_logprobs).abs(), torch.zeros_like(logprobs))
        metrics["logprob_diff_max"] = diff.max().item() if diff.numel() else 0.0
    return loss, metrics
