"""Training as the modes run it: the trainer's settings checked early, the checkpoint to resume from,
the Lightning fit over the rollout datamodule, and the exported policy."""
from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp.errors import ConfigError
from r3exp.modes.components import Components
from r3exp.modes.registry import RunContext
from r3exp.modes.setup import output_dir
from r3exp.timing import PhaseTimes
from r3exp.tracking.preemption import signal_numbers
from r3exp.tracking.wandb_run import backfill_history, log_dataset_artifact, log_policy_artifact

log = logging.getLogger(__name__)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: None (start), a path, ``last`` (the run directory's last.ckpt, which must exist) or
    ``auto`` (it when it exists, else start: a requeued job resumes, a new one starts)."""
    if cfg.ckpt_path is None:
        return None
    last = output_dir(cfg) / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path == "auto":
        return str(last) if last.exists() else None
    path = last if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.exists():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no checkpoint at {path}")
    return str(path)


def checkpoint_step(path: str) -> int:
    """The global step a Lightning checkpoint was written at (a file, or a sharded checkpoint's directory),
    read without loading its tensors, with torch's safe loader (a checkpoint never runs code). A file that
    is not a readable checkpoint is a :class:`ConfigError` naming it."""
    import torch

    meta = Path(path) / "meta.pt" if Path(path).is_dir() else Path(path)
    if meta.is_file() and not zipfile.is_zipfile(meta):
        raise ConfigError(f"ckpt_path: {meta} is not a Lightning checkpoint (not a torch zip archive: truncated, "
                          "corrupt or another format)")
    try:
        return int(torch.load(meta, map_location="cpu", weights_only=True, mmap=not Path(path).is_dir())["global_step"])
    except Exception as err:  # noqa: BLE001: torch's message advises weights_only=False, which r3exp never does
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt_path: {meta} is not a readable Lightning checkpoint ({type(err).__name__}: "
                          f"{reason})") from None


TRAINER_KEYS_OF_OURS = {  # Lightning's own versions of these do not apply to the module's manual optimization
    "accumulate_grad_batches": "grpo.rollouts_per_step (rollouts per optimizer step) and grpo.max_tokens_per_micro_batch (memory)",
    "gradient_clip_val": "grpo.max_grad_norm",
}


def check_trainer_config(cfg: DictConfig) -> None:
    """Settings that would otherwise fail late (after the engine and the base evaluation) or never."""
    from r3exp.grpo.schedule import check_decay

    if not isinstance(cfg.trainer.get("max_steps"), int) or cfg.trainer.max_steps < 1:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.get('max_steps')}: R3 trains a set number of optimizer "
                          "steps (>= 1; the learning-rate schedule needs the total)")
    if cfg.optimizer.get("scheduler"):
        check_decay(cfg.optimizer.scheduler.get("decay", "constant"))
    strategy = cfg.trainer.get("strategy") or ""
    if isinstance(strategy, str) and "fsdp" in strategy:
        raise ConfigError(f"trainer.strategy={strategy}: r3exp shards with FSDP2 through Lightning's "
                          "ModelParallelStrategy; use trainer=fsdp (trainer=cpu_fsdp on CPUs)")
    if not isinstance(strategy, str) and str(strategy.get("tensor_parallel_size", "auto")) not in ("auto", "1"):
        raise ConfigError(f"trainer.strategy.tensor_parallel_size={strategy.tensor_parallel_size}: r3exp shards the "
                          "policy over every rank (FSDP2) and does not split its layers; leave it at auto")
    for key, ours in TRAINER_KEYS_OF_OURS.items():
        if cfg.trainer.get(key) not in (None, 1 if key == "accumulate_grad_batches" else None):
            raise ConfigError(f"trainer.{key}={cfg.trainer.get(key)}: r3exp steps the optimizer itself over "
                              f"token-budget micro-batches; use {ours}")
    preemption = (cfg.get("callbacks") or {}).get("preemption") or {}
    signal_numbers(preemption.get("signals") or [])
    if str(cfg.trainer.get("precision", "")).startswith("bf16") and cfg.trainer.get("accelerator") == "cpu" \
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("trainer.precision=%s on a CPU without bf16 kernels (torch: %s): autocast emulates bf16 and is "
                    "slower than 32-true here (docs/results/speed.md, \"Speed on CPU\")", cfg.trainer.precision,
                    torch.backends.cpu.get_cpu_capability())


def run_training(cfg: DictConfig, parts: Components, logger, extra_callbacks: list | None = None,
                 phases: PhaseTimes | None = None) -> dict[str, Path]:
    check_trainer_config(cfg)
    policy = parts.model.load(parts.model_path)
    optimizer = instantiate(cfg.optimizer.optimizer)
    scheduler = instantiate(cfg.optimizer.scheduler) if cfg.optimizer.get("scheduler") else None
    module = instantiate(cfg.grpo)(policy=policy, engine=parts.engine, optimizer=optimizer, scheduler=scheduler,
                                   ranks=parts.ranks, reference_dtype=parts.model.dtype)
    datamodule = instantiate(cfg.rollout)(task=parts.task, engine=parts.engine, tokenizer=parts.tokenizer,
                                          ranks=parts.ranks)
    callbacks = [instantiate_callback(c, output_dir(cfg)) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += list(extra_callbacks or [])
    # Lightning warns that checkpoints of manual optimization hold the weights after the step: they should,
    # with global_step counting that step, so a resumed run continues from the next one.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks,
                                     default_root_dir=str(output_dir(cfg)))
    ckpt_path = resolve_ckpt_path(cfg)
    resumed_step = checkpoint_step(ckpt_path) if ckpt_path else None
    if ckpt_path:
        log.info("resuming from %s (after step %d)", ckpt_path, resumed_step)
    if ckpt_path and logger:
        backfilled = backfill_history(logger, output_dir(cfg), resumed_step)
        if backfilled:
            log.info("W&B history: steps %s restored from %s", backfilled, "train_metrics.csv")
    phases = phases or PhaseTimes()
    with phases("training"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    with phases("export"):
        return module.export_policy(parts.tokenizer, output_dir(cfg) / "policy")


def instantiate_callback(cfg: DictConfig, run_dir: Path):
    """A callback from its config; a checkpoint callback with ``dirpath: null`` saves to <run dir>/checkpoints."""
    if "dirpath" in cfg and cfg.dirpath is None:
        return instantiate(cfg, dirpath=str(run_dir / "checkpoints"))
    return instantiate(cfg)


def train_and_record(cfg: DictConfig, ctx: RunContext, logger) -> dict[str, Path]:
    """Train, with the dataset and the exported policy recorded as W&B artifacts."""
    parts = ctx.parts
    log_dataset_artifact(logger, parts.task.name, str(cfg.task.get("source")),
                         OmegaConf.to_container(cfg.task, resolve=True))
    policy = run_training(cfg, parts, logger, phases=ctx.phases)
    log_policy_artifact(logger, f"{cfg.run_name}-policy", ctx.run_dir / "policy",
                        {"model": parts.model.name, "task": parts.task.name, "seed": cfg.seed})
    return policy
