"""What every mode shares: :func:`run` checks the config, sets up the environment, starts the ranks,
seeds, makes the run directory and provenance, builds the parts and owns the engine's lifetime."""
from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from r3exp import distributed
from r3exp.config_types import check_config_types
from r3exp.distributed import Ranks
from r3exp.errors import ConfigError, RankFailed
from r3exp.extras import check_extras
from r3exp.modes.components import build_components
from r3exp.modes.publishing import finish_wandb
from r3exp.modes.registry import MODES, Mode, RunContext, RunResult
from r3exp.modes.setup import CODE_DIR, local_data_paths, output_dir, setup_environment
from r3exp.modes.training import check_trainer_config, checkpoint_step, resolve_ckpt_path
from r3exp.timing import PhaseTimes
from r3exp.tracking.console import quiet_console
from r3exp.tracking.provenance import collect_provenance, write_provenance


def run(cfg: DictConfig) -> RunResult:
    """Run ``cfg.mode``. Several ranks (``trainer.devices`` x ``trainer.num_nodes``): every rank runs it; the
    ranks this process launched are stopped when it fails and waited for when it succeeds (a rank that
    failed is a :class:`~r3exp.errors.RankFailed`)."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; expected one of {tuple(MODES)}")
    selected = MODES[cfg.mode]
    check_config_types(cfg)
    check_extras(cfg, engine=selected.engine)  # a missing optional package: one line, before anything starts
    setup_environment(verbose=cfg.get("verbose", False), keep_freed_memory=cfg.get("reuse_freed_memory", True))
    if not selected.ranked:
        if distributed.launched_rank() > 0:  # SLURM or torchrun started several tasks: one does this mode's work
            print(f"mode={cfg.mode} runs on one rank; rank {distributed.launched_rank()} has nothing to do")
            return RunResult(output_dir(cfg))
        return run_on_ranks(cfg, selected, Ranks())
    check_trainer_config(cfg)
    if ckpt_path := resolve_ckpt_path(cfg):
        checkpoint_step(ckpt_path)  # readable, before the engine starts
    launched = distributed.launch_ranks(cfg.trainer)  # several devices or nodes: every rank runs from here on
    try:
        produced = run_on_ranks(cfg, selected, Ranks.of_engines(int(cfg.engine.get("tensor_parallel_size") or 1)))
    except BaseException:
        launched.finish(failed=True)
        raise
    if code := launched.finish(failed=False):
        raise RankFailed(code)
    return produced


def run_on_ranks(cfg: DictConfig, selected: Mode, ranks: Ranks) -> RunResult:
    """This rank's part of the run: the run directory, its console and provenance, the seed, the parts and
    the engine's lifetime, around the mode's own work."""
    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.get("verbose", False):
        quiet_console(run_dir, distributed.rank())
    L.seed_everything(cfg.seed, workers=True)
    provenance = collect_provenance(CODE_DIR, cfg.seed, local_data_paths(cfg))
    if distributed.is_main():
        write_provenance(provenance, run_dir)
    if not selected.engine:
        return selected.run(cfg, RunContext(run_dir, provenance))
    phases = PhaseTimes()
    parts = build_components(cfg, phases, ranks)
    provenance["model_path"] = parts.model_path  # the weights the run started from (hub id, cache, shipped)
    if distributed.is_main():
        write_provenance(provenance, run_dir)
    try:
        return selected.run(cfg, RunContext(run_dir, provenance, parts, phases))
    finally:
        parts.engine.close()
        finish_wandb()
