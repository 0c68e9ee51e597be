"""The trainer's settings, checked before anything starts: what would otherwise fail late (after the engine and
the base evaluation) or never."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from r3exp.errors import ConfigError
from r3exp.grpo.schedule import check_decay
from r3exp.runtime.preemption import signal_numbers

log = logging.getLogger(__name__)

TRAINER_KEYS_OF_OURS = {  # Lightning's own versions of these do not apply to the module's manual optimization
    "accumulate_grad_batches": "grpo.rollouts_per_step (rollouts per optimizer step) and "
    "grpo.max_tokens_per_micro_batch (memory)",
    "gradient_clip_val": "grpo.max_grad_norm",
}


def check_trainer_config(cfg: DictConfig) -> None:
    """Settings that would otherwise fail late (after the engine and the base evaluation) or never."""
    if not isinstance(cfg.trainer.get("max_steps"), int) or cfg.trainer.max_steps < 1:
        raise ConfigError(
            f"trainer.max_steps={cfg.trainer.get('max_steps')}: R3 trains a set number of optimizer "
            "steps (>= 1; the learning-rate schedule needs the total)"
        )
    if cfg.optimizer.get("scheduler"):
        check_decay(cfg.optimizer.scheduler.get("decay", "constant"))
    strategy = cfg.trainer.get("strategy") or ""
    if isinstance(strategy, str) and "fsdp" in strategy:
        raise ConfigError(
            f"trainer.strategy={strategy}: r3exp shards with FSDP2 through Lightning's "
            "ModelParallelStrategy; use trainer=fsdp (trainer=cpu_fsdp on CPUs)"
        )
    if not isinstance(strategy, str) and str(strategy.get("tensor_parallel_size", "auto")) not in ("auto", "1"):
        raise ConfigError(
            f"trainer.strategy.tensor_parallel_size={strategy.tensor_parallel_size}: r3exp shards the "
            "policy over every rank (FSDP2) and does not split its layers; leave it at auto"
        )
    for key, ours in TRAINER_KEYS_OF_OURS.items():
        if cfg.trainer.get(key) not in (None, 1 if key == "accumulate_grad_batches" else None):
            raise ConfigError(
                f"trainer.{key}={cfg.trainer.get(key)}: r3exp steps the optimizer itself over "
                f"token-budget micro-batches; use {ours}"
            )
    preemption = (cfg.get("callbacks") or {}).get("preemption") or {}
    signal_numbers(preemption.get("signals") or [])
    if (
        str(cfg.trainer.get("precision", "")).startswith("bf16")
        and cfg.trainer.get("accelerator") == "cpu"
        and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        log.warning(
            "trainer.precision=%s on a CPU without bf16 kernels (torch: %s): autocast emulates bf16 and is "
            'slower than 32-true here (docs/results/speed.md, "Speed on CPU")',
            cfg.trainer.precision,
            torch.backends.cpu.get_cpu_capability(),
        )
