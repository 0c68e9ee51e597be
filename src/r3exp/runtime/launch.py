"""Running a mode: :func:`launch` checks the config, sets up the environment, starts the ranks, resolves the run
once (:class:`~r3exp.runtime.run.Run`: its directory, checkpoint, provenance, parts, logger) and owns the engine's
and W&B's lifetime around the mode's own work."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from r3exp import distributed
from r3exp.config_types import check_config_types
from r3exp.console.library_logs import quiet_console
from r3exp.distributed import Ranks
from r3exp.errors import RankFailed
from r3exp.extras import check_extras
from r3exp.runtime.checkpoints import resolve_resume
from r3exp.runtime.components import build_components
from r3exp.runtime.environment import CODE_DIR, local_data_paths, output_dir, setup_environment
from r3exp.runtime.publishing import build_logger, finish_wandb
from r3exp.runtime.run import ModeResult, ModeSpec, Resume, Run
from r3exp.runtime.trainer_settings import check_trainer_config
from r3exp.tracking.provenance import collect_provenance, write_provenance


def launch(cfg: DictConfig, mode: ModeSpec) -> ModeResult:
    """Run ``mode`` with ``cfg``. Ranked modes run on ``trainer.devices`` x ``trainer.num_nodes`` ranks (every
    rank runs it); the ranks this process launched are stopped when it fails and waited for when it succeeds
    (a rank that failed is a :class:`~r3exp.errors.RankFailed`)."""
    check_config_types(cfg)
    check_extras(cfg, engine=mode.engine)  # a missing optional package: one line, before anything starts
    setup_environment(verbose=cfg.get("verbose", False), keep_freed_memory=cfg.get("reuse_freed_memory", True))
    run_dir = output_dir(cfg)
    if not mode.ranked:
        if distributed.launched_rank() > 0:  # SLURM or torchrun started several tasks: one does this mode's work
            print(f"mode={cfg.mode} runs on one rank; rank {distributed.launched_rank()} has nothing to do")
            return ModeResult(run_dir)
        return run_on_ranks(cfg, mode, Ranks(), run_dir, resume=None)
    check_trainer_config(cfg)
    resume = resolve_resume(cfg, run_dir)  # readable, before the engine starts
    launched = distributed.launch_ranks(cfg.trainer)  # several devices or nodes: every rank runs from here on
    try:
        ranks = Ranks.of_engines(int(cfg.engine.get("tensor_parallel_size") or 1))
        produced = run_on_ranks(cfg, mode, ranks, run_dir, resume)
    except BaseException:
        launched.finish(failed=True)
        raise
    if code := launched.finish(failed=False):
        raise RankFailed(code)
    return produced


def run_on_ranks(cfg: DictConfig, mode: ModeSpec, ranks: Ranks, run_dir, resume: Resume | None) -> ModeResult:
    """This rank's part: the mode's own checks, the run directory, its console and provenance, the seed, the parts
    and the logger, resolved into one :class:`Run`; the engine closed and W&B finished after the mode."""
    if mode.check:
        mode.check(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.get("verbose", False):
        quiet_console(run_dir, distributed.rank())
    L.seed_everything(cfg.seed, workers=True)
    run = Run(cfg, run_dir, ranks, collect_provenance(CODE_DIR, cfg.seed, local_data_paths(cfg)), resume=resume)
    if distributed.is_main():
        write_provenance(run.provenance, run_dir)
    if not mode.engine:
        return mode.run(run)
    run.parts = build_components(cfg, run.phases, ranks)
    run.provenance["model_path"] = run.parts.model_path  # the weights the run started from (hub id, cache, shipped)
    try:
        if distributed.is_main():
            write_provenance(run.provenance, run_dir)
            if mode.logs:
                run.logger = build_logger(cfg, run_dir, run.provenance)
        return mode.run(run)
    finally:
        run.parts.engine.close()
        finish_wandb()
