"""Episodes to training tensors. The reflection mask is built here, in exactly one function."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, TypedDict

import torch

from r3exp.rollout.episodes import ROW_KINDS, Episode


class RolloutTensors(TypedDict):
    """One rollout's rows as tensors, as :func:`build_batch` makes them from the episodes. (N, T) tensors are
    right-padded rows of context ‖ reflection; (N,) tensors hold one value per row."""

    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor  # (N, T)
    reflection_mask: torch.Tensor  # (N, T) bool: exactly the reflection tokens (reflection_mask())
    behaviour_logprobs: torch.Tensor  # (N, T): the engine's log-prob of each reflection token, 0 elsewhere
    rewards: torch.Tensor  # (N,)
    group_ids: torch.Tensor  # (N,): one group per failed example (R3) or per example (GRPO's attempts)
    row_kinds: torch.Tensor  # (N,): what the row trains, an index into episodes.ROW_KINDS
    policy_version: torch.Tensor  # (N,): the weights that sampled the row
    off_policy: torch.Tensor  # (N,) bool: a distilled retry (r3_grpo_distill), trained with the shaped loss


@dataclass
class Rollout:
    """What the datamodule hands the trainer for one rollout: its rows' tensors, and apart from them the
    episodes they come from (in :func:`batch_rows` order, for sample tables), the rollout metrics
    (:mod:`r3exp.keys`) and whether some group's rewards differ. The trainer reads it and adds nothing: the
    step's own tensors (advantages, reference log-probs, correction weights) live in its
    :class:`~r3exp.grpo.step.StepBatch`."""

    tensors: RolloutTensors
    episodes: list[Episode] = field(repr=False)
    stats: dict[str, float]
    has_signal: bool


def reflection_mask(context_lengths: torch.Tensor, reflection_lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, T) bool mask selecting exactly the reflection tokens of right-padded rows.

    Row ``b`` holds ``context_lengths[b]`` context tokens (task prompt, attempt, reflection prompt)
    followed by ``reflection_lengths[b]`` reflection tokens (including the EOS the model produced), then
    padding. Context and padding are False.
    """
    positions = torch.arange(total).unsqueeze(0)  # (1, T)
    start = context_lengths.unsqueeze(1)  # (B, 1)
    return (positions >= start) & (positions < start + reflection_lengths.unsqueeze(1))


def batch_rows(episodes: Sequence[Episode]) -> list[tuple[Episode, int, int]]:
    """The batch's rows in order: (episode, group id, reflection index), one per reflection of every
    failed episode (or sampled attempt of a GRPO group): one group per episode, so a group never mixes
    kinds of rows. Everything that pairs rows with episodes (batches, sample tables) goes through here."""
    failed = [ep for ep in episodes if ep.reflections]
    return [(ep, group, j) for group, ep in enumerate(failed) for j in range(len(ep.reflections))]


def build_batch(episodes: Sequence[Episode], pad_id: int) -> RolloutTensors:
    """One row per reflection of every failed episode.

    Returns tensors: ``input_ids`` (B, T) context ‖ reflection, right-padded with ``pad_id``;
    ``attention_mask`` (B, T); ``reflection_mask`` (B, T); ``behaviour_logprobs`` (B, T), the engine's
    log-prob of each reflection token at its own position (0 elsewhere); ``rewards`` (B,);
    ``group_ids`` (B,), one group per episode; ``row_kinds`` (B,); ``policy_version`` (B,); ``off_policy``
    (B,) bool, the distilled retries (:func:`~r3exp.rollout.episodes.add_distilled_rows`).
    """
    rows = batch_rows(episodes)
    if not rows:
        return empty_batch()
    contexts = [ep.reflection_prompt_ids for ep, _, _ in rows]
    reflections = [ep.reflections[j] for ep, _, j in rows]
    context_len = torch.tensor([len(c) for c in contexts])
    reflection_len = torch.tensor([len(r.token_ids) for r in reflections])
    total = int((context_len + reflection_len).max())
    input_ids = torch.full((len(rows), total), pad_id, dtype=torch.long)
    behaviour = torch.zeros((len(rows), total), dtype=torch.float32)
    for b, (context, reflection) in enumerate(zip(contexts, reflections)):
        n = len(context)
        input_ids[b, :n] = torch.tensor(context)
        input_ids[b, n : n + len(reflection.token_ids)] = torch.tensor(reflection.token_ids, dtype=torch.long)
        behaviour[b, n : n + len(reflection.logprobs)] = torch.tensor(reflection.logprobs)
    positions = torch.arange(total).unsqueeze(0)
    return {
        "input_ids": input_ids,
        "attention_mask": (positions < (context_len + reflection_len).unsqueeze(1)).long(),
        "reflection_mask": reflection_mask(context_len, reflection_len, total),
        "behaviour_logprobs": behaviour,
        "rewards": torch.tensor([ep.rewards[j] for ep, _, j in rows], dtype=torch.float32),
        "group_ids": torch.tensor([g for _, g, _ in rows]),
        "row_kinds": torch.tensor([ROW_KINDS.index(ep.kind) for ep, _, _ in rows]),
        "policy_version": torch.tensor([ep.policy_version for ep, _, _ in rows]),
        "off_policy": torch.tensor([ep.is_off_policy(j) for ep, _, j in rows], dtype=torch.bool),
    }


def rollout_batch(episodes: Sequence[Episode], pad_id: int, stats: dict[str, float], has_signal: bool) -> Rollout:
    """What the datamodule hands the trainer for one rollout: the rows' tensors, the episodes, the rollout
    metrics and whether it carries a signal."""
    return Rollout(build_batch(episodes, pad_id), list(episodes), stats, has_signal)


def empty_batch() -> RolloutTensors:
    return {
        "input_ids": torch.zeros((0, 0), dtype=torch.long),
        "attention_mask": torch.zeros((0, 0), dtype=torch.long),
        "reflection_mask": torch.zeros((0, 0), dtype=torch.bool),
        "behaviour_logprobs": torch.zeros((0, 0)),
        "rewards": torch.zeros(0),
        "group_ids": torch.zeros(0, dtype=torch.long),
        "row_kinds": torch.zeros(0, dtype=torch.long),
        "policy_version": torch.zeros(0, dtype=torch.long),
        "off_policy": torch.zeros(0, dtype=torch.bool),
    }


def concat_batches(batches: Sequence[RolloutTensors]) -> RolloutTensors:
    """The rows of several batches (the rollouts of one optimizer step) as one batch: (N, T) tensors
    right-padded with 0 to the longest row (padding is never attended to nor trained on), group ids offset
    so that the groups of different batches stay apart."""
    template = empty_batch()
    if not batches:
        return template
    width = max(b["input_ids"].shape[1] for b in batches)
    merged, offset = {}, 0
    groups = []
    for b in batches:
        groups.append(b["group_ids"] + offset)
        offset += int(b["group_ids"].max()) + 1 if b["group_ids"].numel() else 0
    for key, value in template.items():
        parts = [b[key] for b in batches]
        if value.dim() == 2:
            parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
        merged[key] = torch.cat(parts)
    merged["group_ids"] = torch.cat(groups)
    return merged
