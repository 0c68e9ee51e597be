"""One resolved run (:class:`Run`), built once by :func:`r3exp.runtime.launch.launch` after the config checks and
handed to the mode; what a mode is (:class:`ModeSpec`) and what it returns (:class:`ModeResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from r3exp import keys
from r3exp.distributed import Ranks
from r3exp.evaluation import EvalResult
from r3exp.runtime.components import Components
from r3exp.timing import PhaseTimes


@dataclass(frozen=True)
class Resume:
    """The checkpoint a training run continues from (``ckpt_path``, resolved) and the step it was saved at."""

    path: str
    step: int


@dataclass
class Run:
    """Everything a mode works with, resolved once: the composed config, the run directory, the checkpoint to
    resume from (ranked modes), how the ranks share engines, the provenance written to the run directory, the
    phase timer, the task/model/engine (modes that need them) and the logger (rank 0 of the modes that log;
    ``False`` otherwise)."""

    cfg: DictConfig
    run_dir: Path
    ranks: Ranks
    provenance: dict
    phases: PhaseTimes = field(default_factory=PhaseTimes)  # seconds per phase (results.json, the table)
    resume: Resume | None = None
    parts: Components | None = None
    logger: Any = False


@dataclass
class ModeResult:
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


@dataclass(frozen=True)
class ModeSpec:
    """A ``mode=<name>``: its function and what :func:`~r3exp.runtime.launch.launch` prepares for it."""

    run: Callable[[Run], ModeResult]
    ranked: bool = False  # runs on trainer.devices x trainer.num_nodes ranks (every rank runs it)
    engine: bool = True  # needs the task, model and engine (Run.parts)
    logs: bool = False  # gets the configured logger (W&B) on rank 0 (Run.logger)
    check: Callable[[DictConfig], None] | None = None  # its own config checks, before the engine starts
