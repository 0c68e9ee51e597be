"""The Hydra entry point: ``python -m r3exp [group=option ...] [key=value ...]``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from r3exp.errors import R3Error

# ${basename:path}: the last component of a path (sweeps name their W&B group after the sweep directory).
OmegaConf.register_new_resolver("basename", lambda path: Path(str(path)).name, replace=True)
# ${truncate:text,n}: at most n characters (multirun job directories are named after their overrides).
OmegaConf.register_new_resolver("truncate", lambda text, n: str(text)[: int(n)], replace=True)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")  # the packaged configs
def app(cfg: DictConfig) -> float | None:
    # imported here: torch, Lightning and the rest load in seconds, which `--help` and Hydra's own errors skip
    from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: PLC0415 - seconds to import

    from r3exp.modes import run  # noqa: PLC0415 - seconds to import (torch, Lightning, transformers)
    from r3exp.runtime.preemption import EXIT_CODE, Preempted  # noqa: PLC0415 - imports Lightning

    if cfg.paths.get("output_dir") is None:
        cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    try:
        try:
            produced = run(cfg)  # the ranks it launched are stopped when it fails, waited for when it succeeds
        except InstantiationException as err:  # a config class refused its settings: its own error, one line
            if isinstance(err.__cause__, R3Error):
                raise err.__cause__ from None
            raise
    except R3Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    except (SIGTERMException, Preempted) as stop:  # r3exp.runtime.preemption saved the step's checkpoint
        print(
            "stopped by a scheduler's signal after an optimizer step; its checkpoint is last.ckpt: rerun with "
            "ckpt_path=last to continue",
            file=sys.stderr,
        )
        if isinstance(stop, Preempted):
            stop.hand_over()  # a requeue signal: the scheduler's own handler (submitit requeues the job and exits)
        sys.exit(EXIT_CODE)
    return produced.objective  # what Hydra's sweepers maximise


def main() -> None:
    app()
