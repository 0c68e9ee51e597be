"""Learning-rate schedules as ``LambdaLR`` factories (``_partial_`` in the optimizer config)."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR

from r3exp.errors import ConfigError

DECAYS = ("constant", "linear", "cosine")


def check_decay(decay: str) -> None:
    if decay not in DECAYS:
        raise ConfigError(f"optimizer.scheduler.decay={decay!r}; expected one of {', '.join(DECAYS)}")


def warmup_schedule(
    optimizer, total_steps: int, warmup_steps: int = 0, decay: str = "constant", min_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup over ``warmup_steps``, then ``constant``, ``linear`` or ``cosine`` decay to
    ``min_ratio`` × lr at ``total_steps``."""
    check_decay(decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "constant" or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_ratio + (1.0 - min_ratio) * shape

    return LambdaLR(optimizer, factor)
