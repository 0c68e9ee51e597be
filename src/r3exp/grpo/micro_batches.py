"""The rows of one optimizer step, split into micro-batches under a token budget (verl's dynamic batch
size, ``ppo_max_token_len_per_gpu``; OpenRLHF's ``max_tokens_per_gpu``): what one forward holds is set by
the budget, never by how many rows the step drew."""

from __future__ import annotations

import logging
from typing import Sequence

import torch

log = logging.getLogger(__name__)


def token_budget_micro_batches(lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Row indices in micro-batches whose padded size, rows x longest row, stays within ``max_tokens``.

    Rows are sorted longest first (stable), so each micro-batch holds rows of similar length and pads
    little. A row longer than the budget on its own is a micro-batch of one (it cannot be split; a warning
    names the setting). ``max_tokens=None``: every row in one micro-batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if max_tokens is None:
        return [order] if order else []
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens}; expected >= 1 or None")
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(index)
        else:
            if lengths[index] > max_tokens:
                log.warning(
                    "a row of %d tokens exceeds grpo.max_tokens_per_micro_batch=%d: it goes through on its own",
                    lengths[index],
                    max_tokens,
                )
            batches.append([index])
    return batches


def shared_prompt_micro_batches(
    groups: Sequence[tuple[int, Sequence[int]]], lengths: Sequence[int], max_tokens: int | None
) -> list[list[int]]:
    """Row indices in micro-batches that keep the rows of a shared prompt together, for
    :func:`r3exp.grpo.logprobs.shared_prompt_logprobs`, which runs each prompt once and then every row's own
    tokens, both padded: ``groups`` are (prompt length, rows), and a micro-batch of g prompts and r rows
    costs ``g x longest prompt + r x longest continuation`` tokens (a continuation: a row's tokens after its
    prompt). A group over ``max_tokens`` on its own is split (longest rows first; each part runs the prompt
    again); parts are packed largest first, each into the last micro-batch while that stays within
    ``max_tokens``. None: one micro-batch."""
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens}; expected >= 1 or None")

    def cost(parts: list[tuple[int, list[int]]]) -> int:
        prompt = max(length for length, _ in parts)
        continuation = max(lengths[rows[0]] - length for length, rows in parts)  # rows: longest first
        return len(parts) * prompt + sum(len(rows) for _, rows in parts) * continuation

    parts: list[tuple[int, list[int]]] = []
    for prompt, rows in groups:
        part: list[int] = []
        for row in sorted(rows, key=lambda i: -lengths[i]):
            if part and max_tokens is not None and cost([(prompt, part + [row])]) > max_tokens:
                parts.append((prompt, part))
                part = []
            part.append(row)
        if part:
            parts.append((prompt, part))
    if max_tokens is None:
        return [[row for _, part in parts for row in part]] if parts else []
    batches: list[list[tuple[int, list[int]]]] = []
    for part in sorted(parts, key=lambda part: -cost([part])):
        if batches and cost(batches[-1] + [part]) <= max_tokens:
            batches[-1].append(part)
        else:
            batches.append([part])
    return [[row for _, rows in batch for row in rows] for batch in batches]


def select_rows(batch: dict, rows: list[int]) -> dict:
    """The (N, ...) tensors of ``batch`` at ``rows``, cut to the longest of those rows; other values as is."""
    index = torch.tensor(rows, dtype=torch.long)
    width = int(batch["attention_mask"][index].sum(-1).max()) if rows else 0
    picked = {}
    for key, value in batch.items():
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == batch["attention_mask"].shape[0]:
            value = value[index]
            picked[key] = value[:, :width] if value.dim() == 2 else value
        else:
            picked[key] = value
    return picked
