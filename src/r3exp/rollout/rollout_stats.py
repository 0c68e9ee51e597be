"""A rollout's statistics: what the step's episodes earned, how often retries followed their reflection, how long
and how fast they were generated (the metrics the trainer logs and the progress bar shows)."""

from __future__ import annotations

import math

import torch

from r3exp import keys
from r3exp.rollout.episodes import ATTEMPT, REFLECTION, Episode
from r3exp.tasks.base import Task


def rollout_stats(
    episodes: list[Episode],
    seconds: float,
    generated_tokens: int,
    followed: list[bool | None] | None = None,
    kinds: tuple[str, ...] = (REFLECTION,),
    distilling: bool = False,
) -> dict[str, float]:
    """Per-step rollout metrics (plain floats). ``followed``: for every sampled reflection, whether its retry
    did what it proposed (None where the task cannot read a proposal); the follow rate is NaN when no
    reflection proposed anything readable, and absent when ``followed`` is None (plain GRPO). The reward
    metrics cover every row; with several ``kinds`` of rows (``r3_grpo``) they are also given per kind,
    as ``rollout/<kind>/...``. The first-try success is that of the episodes that start from the task
    prompt (GRPO's first sample, when there are attempt groups). Off-policy rows (distilled retries) are
    counted apart (``rollout/distilled_rows``, given when ``distilling``), not in the reward, group and length
    metrics."""
    attempts = [ep for ep in episodes if ep.kind == ATTEMPT]
    first_tries = attempts or episodes
    stats = {
        keys.FIRST_TRY_SUCCESS: sum(ep.first_try_success for ep in first_tries) / max(len(first_tries), 1),
        "rollout/failure_fraction": sum(not ep.first_try_success for ep in first_tries) / max(len(first_tries), 1),
        **row_stats(episodes),
        keys.SECONDS: seconds,
        keys.GENERATED_TOKENS_PER_SECOND: generated_tokens / seconds if seconds > 0 else 0.0,
        keys.SAMPLED_TOKENS: float(generated_tokens),
    }
    if len(kinds) > 1:
        for kind in kinds:
            mine = row_stats([ep for ep in episodes if ep.kind == kind])
            stats.update({key.replace("rollout/", f"rollout/{kind}/", 1): value for key, value in mine.items()})
    if distilling:
        stats[keys.DISTILLED_ROWS] = float(sum(len(ep.reflections) - len(ep.on_policy_rows) for ep in episodes))
    return stats | ({} if followed is None else {keys.FOLLOW_RATE: follow_rate(followed)})


def row_stats(episodes: list[Episode]) -> dict[str, float]:
    """Reward, group and length metrics of the on-policy rows of ``episodes`` (R3's failures, GRPO's groups)."""
    failed = [ep for ep in episodes if ep.reflections]
    rewards = [ep.rewards[j] for ep in failed for j in ep.on_policy_rows]
    groups = [[ep.rewards[j] for j in ep.on_policy_rows] for ep in failed if ep.rewards]
    completions = [ep.reflections[j] for ep in failed for j in ep.on_policy_rows]
    lengths = [len(f.token_ids) for f in completions]
    tensor = torch.tensor(rewards) if rewards else torch.zeros(0)
    return {
        keys.RETRY_SUCCESS: sum(ep.retry_successes[j] for ep in failed for j in ep.on_policy_rows)
        / max(len(rewards), 1),
        keys.REWARD_MEAN: tensor.mean().item() if rewards else 0.0,
        "rollout/reward_std": tensor.std().item() if len(rewards) > 1 else 0.0,
        keys.FRAC_REWARD_ZERO_STD: sum(max(g) == min(g) for g in groups) / max(len(groups), 1),
        keys.REFLECTION_LENGTH: sum(lengths) / max(len(lengths), 1),
        keys.REFLECTIONS_TRUNCATED: sum(not f.finished for f in completions) / max(len(lengths), 1),
        keys.GROUPS: float(len(groups)),
    }


def reward_name(reward) -> str:
    """How a reward function is named in an error: its class or function, as a config's ``_target_``."""
    target = getattr(reward, "func", reward)  # a partial's function
    if not hasattr(target, "__qualname__"):  # an instance (ReflectionContains(text=...)): its class
        target = type(target)
    return f"{target.__module__}.{target.__qualname__}"


def follow_rate(followed: list[bool | None]) -> float:
    """The share of True among the defined verdicts (NaN when none is defined)."""
    defined = [f for f in followed if f is not None]
    return sum(defined) / len(defined) if defined else math.nan


def follow_verdicts(task: Task, episodes: list[Episode]) -> list[bool | None]:
    """For every sampled reflection of ``episodes``: did its retry do what it proposed
    (``Task.reflection_followed``)."""
    return [
        task.reflection_followed(ep.example, ep.attempt.text, reflection.text, retry.text)
        for ep in episodes
        if ep.reflections
        for reflection, retry in zip(ep.reflections, ep.retries)
    ]


def has_signal(episodes: list[Episode]) -> bool:
    """True when some group's rewards differ, i.e. some reflection gets a non-zero advantage."""
    return any(ep.rewards and max(ep.rewards) != min(ep.rewards) for ep in episodes)
