"""AdamW whose updates are not rounded away: PyTorch's over float32 weights, torch-optimi's Kahan-compensated
one over bfloat16/float16 weights.

A bfloat16 weight keeps 8 bits of mantissa, so an update smaller than about 1/256 of the weight's magnitude
rounds to nothing. AdamW's update is about ``lr`` per step, so at the paper's learning rates (1e-5 and below)
and weights of magnitude ~0.02, plain AdamW over bf16 weights leaves nearly every weight where it started
(``tests/test_precision.py`` shows it). Two ways out, chosen by ``model.master_weights``
(:class:`r3exp.models.ModelSpec`):

- ``float32``: the trainable weights are float32 (bf16 compute comes from ``trainer.precision=bf16-mixed``'s
  autocast); plain ``torch.optim.AdamW``. 16 bytes per trainable parameter (weight, gradient, two moments).
- ``kahan``: the trainable weights stay bf16 and :class:`optimi.AdamW` (torch-optimi, Warner 2023) adds each
  update with Kahan summation: a bf16 compensation buffer per weight carries what the rounding lost into
  the next step. 10 bytes per trainable parameter (weight, gradient, two bf16 moments, the buffer).

:func:`adamw` picks by the parameters' dtypes, so the optimizer config needs no switch of its own, and
:func:`check_updates_kept` refuses an optimizer that would round the updates of low-precision weights away.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from r3exp.errors import ConfigError

LOW_PRECISION = (torch.bfloat16, torch.float16)
KAHAN_EXTRA = "pip install 'r3exp[kahan]'"


def adamw(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """AdamW over ``params`` (decoupled weight decay scaled by ``lr``, as ``torch.optim.AdamW``):
    ``torch.optim.AdamW`` when every parameter is float32, else ``optimi.AdamW`` with Kahan summation
    (the same update rule: bias-corrected moments, ``eps`` outside the square root)."""
    params = list(params)
    betas = tuple(float(b) for b in betas)
    if not any(p.dtype in LOW_PRECISION for p in params):
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    try:
        import optimi  # noqa: PLC0415 - torch-optimi is optional (r3exp[kahan]); only low-precision weights need it
    except ImportError:
        raise ConfigError(
            f"model.master_weights=kahan trains {low_precision_dtypes(params)} weights, which needs "
            f"torch-optimi's Kahan-compensated AdamW: {KAHAN_EXTRA} (or model.master_weights=float32)"
        ) from None
    # triton=False: optimi's Triton kernels are CUDA-only and optional; foreach picks itself
    return optimi.AdamW(
        params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decouple_lr=False, kahan_sum=True, triton=False
    )


def low_precision_dtypes(params: Iterable[torch.Tensor]) -> str:
    return "/".join(sorted({str(p.dtype).removeprefix("torch.") for p in params if p.dtype in LOW_PRECISION}))


def compensates(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` keeps the updates of low-precision weights: torch-optimi with Kahan summation on."""
    module = type(optimizer).__module__
    return module.startswith("optimi") and all(group.get("kahan_sum") for group in optimizer.param_groups)


def check_updates_kept(optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimizer that would step bf16/fp16 weights without compensation (the updates would be
    rounded away); the message names the settings that fix it."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    low = [p for p in params if p.dtype in LOW_PRECISION]
    if not low or compensates(optimizer):
        return
    count = sum(p.numel() for p in low)
    raise ConfigError(
        f"{type(optimizer).__name__} would update {count:,} trainable {low_precision_dtypes(low)} parameters "
        "uncompensated: updates under 1/256 of a weight round to nothing (at lr 1e-5, almost all of them). Use "
        "model.master_weights=float32 (float32 weights, bf16 compute under trainer.precision=bf16-mixed) or "
        "model.master_weights=kahan with r3exp's optimizer=adamw (torch-optimi's Kahan summation)"
    )
