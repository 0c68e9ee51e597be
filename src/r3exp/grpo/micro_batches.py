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
                log.warning("a row of %d tokens exceeds grpo.max_tokens_per_micro_batch=%d: it goes through "
                            "on its own", lengths[index], max_tokens)
            batches.append([index])
    return batches


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
