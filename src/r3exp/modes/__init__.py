"""The modes of ``python -m r3exp``: ``mode=<name>`` runs the function registered under that name in
:data:`MODES`, one short module each. What they share lives in :mod:`r3exp.runtime` (the resolved
:class:`~r3exp.runtime.run.Run` each is handed, and the evaluation, training and publishing it runs)."""

from __future__ import annotations

from omegaconf import DictConfig

from r3exp.errors import ConfigError
from r3exp.modes import compare, data, evaluate, failures, forgetting, main, train, warmstart
from r3exp.runtime.launch import launch
from r3exp.runtime.run import ModeResult, ModeSpec

MODES: dict[str, ModeSpec] = {
    "main": ModeSpec(main.main_mode, ranked=True, logs=True, check=main.check),
    "train": ModeSpec(train.train_mode, ranked=True, logs=True),
    "evaluate": ModeSpec(evaluate.evaluate_mode, ranked=True),
    "failures": ModeSpec(failures.failures_mode),
    "data": ModeSpec(data.data_mode, engine=False),
    "warmstart": ModeSpec(warmstart.warmstart_mode),
    "compare": ModeSpec(compare.compare_mode, engine=False),
    "forgetting": ModeSpec(forgetting.forgetting_mode, engine=False),
}


def run(cfg: DictConfig) -> ModeResult:
    """Run ``cfg.mode`` (:func:`r3exp.runtime.launch.launch`)."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; expected one of {tuple(MODES)}")
    return launch(cfg, MODES[cfg.mode])


__all__ = ["MODES", "ModeResult", "run"]
