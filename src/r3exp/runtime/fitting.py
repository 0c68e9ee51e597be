"""Training as the modes run it: the Lightning fit over the rollout datamodule, from the resolved checkpoint,
and the exported policy; with the dataset and the policy recorded as W&B artifacts."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp.runtime.components import Components
from r3exp.runtime.preemption import raise_if_preempted
from r3exp.runtime.run import Resume, Run
from r3exp.timing import PhaseTimes
from r3exp.tracking.wandb_run import backfill_history, log_dataset_artifact, log_policy_artifact

log = logging.getLogger(__name__)


def fit_policy(
    cfg: DictConfig,
    parts: Components,
    run_dir: Path,
    logger=False,
    resume: Resume | None = None,
    extra_callbacks: list | None = None,
    phases: PhaseTimes | None = None,
) -> dict[str, Path]:
    """Train the policy of ``parts`` with R3 (``cfg.grpo``, ``cfg.rollout``, ``cfg.trainer``), from ``resume``
    when given, checkpoints and callbacks' files under ``run_dir``; export it to ``<run_dir>/policy``. A requeue
    signal that stopped the fit is raised as :class:`~r3exp.runtime.preemption.Preempted`."""
    policy = parts.model.load(parts.model_path)
    optimizer = instantiate(cfg.optimizer.optimizer)
    scheduler = instantiate(cfg.optimizer.scheduler) if cfg.optimizer.get("scheduler") else None
    module = instantiate(cfg.grpo)(
        policy=policy,
        engine=parts.engine,
        optimizer=optimizer,
        scheduler=scheduler,
        ranks=parts.ranks,
        reference_dtype=parts.model.dtype,
    )
    datamodule = instantiate(cfg.rollout)(
        task=parts.task, engine=parts.engine, tokenizer=parts.tokenizer, ranks=parts.ranks
    )
    callbacks = [instantiate_callback(c, run_dir) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += list(extra_callbacks or [])
    # Lightning warns that checkpoints of manual optimization hold the weights after the step: they should,
    # with global_step counting that step, so a resumed run continues from the next one.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir))
    if resume:
        log.info("resuming from %s (after step %d)", resume.path, resume.step)
    if resume and logger:
        backfilled = backfill_history(logger, run_dir, resume.step)
        if backfilled:
            log.info("W&B history: steps %s restored from %s", backfilled, "train_metrics.csv")
    phases = phases or PhaseTimes()
    with phases("training"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.path if resume else None)
    raise_if_preempted(callbacks)
    with phases("export"):
        return module.export_policy(parts.tokenizer, run_dir / "policy")


def instantiate_callback(cfg: DictConfig, run_dir: Path):
    """A callback from its config; a checkpoint callback with ``dirpath: null`` saves to <run dir>/checkpoints."""
    if "dirpath" in cfg and cfg.dirpath is None:
        return instantiate(cfg, dirpath=str(run_dir / "checkpoints"))
    return instantiate(cfg)


def train_and_record(run: Run) -> dict[str, Path]:
    """Train, with the dataset and the exported policy recorded as W&B artifacts."""
    cfg, parts = run.cfg, run.parts
    log_dataset_artifact(
        run.logger, parts.task.name, str(cfg.task.get("source")), OmegaConf.to_container(cfg.task, resolve=True)
    )
    policy = fit_policy(cfg, parts, run.run_dir, run.logger, run.resume, phases=run.phases)
    log_policy_artifact(
        run.logger,
        f"{cfg.run_name}-policy",
        run.run_dir / "policy",
        {"model": parts.model.name, "task": parts.task.name, "seed": cfg.seed},
    )
    return policy
