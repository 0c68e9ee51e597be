"""The registry of modes (``mode=<name>``) and what a mode is handed and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from r3exp import keys
from r3exp.evaluation import EvalResult
from r3exp.modes.components import Components
from r3exp.timing import PhaseTimes


@dataclass
class RunResult:
    """What a mode produced. ``results``: evaluation tables by label (``base``, ``trained``, a model's
    name, ``warm_start``); the other fields are the paths a mode wrote, where it wrote them."""

    output_dir: Path
    results: dict[str, EvalResult] = field(default_factory=dict)
    results_path: Path | None = None
    policy: dict[str, Path] = field(default_factory=dict)  # mode=train/main: merged/ (and adapter/)
    model: Path | None = None  # mode=warmstart: the warm-started model
    data: Path | None = None  # mode=data: the splits' directory
    failures: Path | None = None  # mode=failures: the first-failure dataset
    comparison: dict[str, Any] = field(default_factory=dict)  # mode=compare: rows and the files written
    forgetting: dict[str, dict[str, float]] = field(default_factory=dict)  # lm-eval scores by label

    @property
    def objective(self) -> float | None:
        """What Hydra's sweepers maximise: the after-reflection accuracy of the trained model (of the
        only model evaluated, outside ``mode=main``); None when nothing was evaluated."""
        final = self.results.get(keys.TRAINED) or next(iter(self.results.values()), None)
        return final.after_reflection_accuracy if final else None


@dataclass
class RunContext:
    """What :func:`run` prepared for a mode."""

    run_dir: Path
    provenance: dict
    parts: Components | None = None  # task, model, tokenizer, engine (modes with ``engine=True``)
    phases: PhaseTimes = field(default_factory=PhaseTimes)  # seconds per phase (results.json, the table)


@dataclass(frozen=True)
class Mode:
    run: Callable[[DictConfig, RunContext], RunResult]
    ranked: bool = False  # runs on trainer.devices x trainer.num_nodes ranks (every rank runs it)
    engine: bool = True  # needs the task, model and engine


MODES: dict[str, Mode] = {}


def mode(name: str, ranked: bool = False, engine: bool = True):
    """Register a mode function as ``mode=<name>``."""
    def register(function: Callable[[DictConfig, RunContext], RunResult]):
        MODES[name] = Mode(function, ranked, engine)
        return function
    return register
