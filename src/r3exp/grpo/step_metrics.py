"""A step's metrics merged: over the ranks that trained it, and over the rollouts (and ranks) it was drawn from."""

from __future__ import annotations

import math

from r3exp import keys
from r3exp.grpo import functions as F


def merge_rank_metrics(per_rank: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """The step's metrics from every rank's ``(metrics, reflection tokens)``: the loss shares, micro-batches,
    tokens and throughputs add up; the loss metrics merge as micro-batches do (token-weighted, max)."""
    additive = ("loss", "micro_batches", "trained_tokens", "tokens_per_second")
    merged = F.merge_metrics([({k: v for k, v in m.items() if k not in additive}, w) for m, w in per_rank])
    merged.update({key: sum(m.get(key, 0.0) for m, _ in per_rank) for key in additive})
    return merged


def merge_rank_rollout_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """The rollout metrics of a step over ranks: groups and sampled tokens add up, times are the slowest
    rank's (the ranks generate side by side), rates average over ranks."""
    if len(stats) == 1:
        return dict(stats[0])
    slowest = {keys.SECONDS, keys.WALL_SECONDS}
    additive = {keys.GROUPS, keys.SAMPLED_TOKENS, keys.DISTILLED_ROWS} | {
        key for key in stats[0] if key.endswith("/groups")
    }
    return {
        key: max(s[key] for s in stats)
        if key in slowest
        else sum(s[key] for s in stats)
        if key in additive
        else _mean_of_defined([s[key] for s in stats])
        for key in stats[0]
    }


def merge_rollout_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """The rollout metrics of a step drawn as several rollouts: counts and times add up, rates average."""
    if len(stats) == 1:
        return dict(stats[0])
    additive = {keys.GROUPS, keys.SECONDS, keys.WALL_SECONDS, keys.SAMPLED_TOKENS, keys.DISTILLED_ROWS} | {
        key for key in stats[0] if key.endswith("/groups")
    }  # and the groups of each kind of row
    return {
        key: sum(s[key] for s in stats) if key in additive else _mean_of_defined([s[key] for s in stats])
        for key in stats[0]
    }


def _mean_of_defined(values: list[float]) -> float:
    """The mean of the values that are not NaN (a rate some rollout could not measure), NaN if none is."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan
