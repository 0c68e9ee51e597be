"""The modes of ``python -m r3exp``: ``mode=<name>`` runs the function registered under that name, one
module each (:mod:`~r3exp.modes.main`, :mod:`~r3exp.modes.train`, :mod:`~r3exp.modes.evaluate`,
:mod:`~r3exp.modes.failures`, :mod:`~r3exp.modes.data`, :mod:`~r3exp.modes.warmstart`,
:mod:`~r3exp.modes.compare`, :mod:`~r3exp.modes.forgetting`). What they share: :mod:`~r3exp.modes.run` (the
run's common set-up), :mod:`~r3exp.modes.components` (task, model, engine, ranks),
:mod:`~r3exp.modes.evaluation_runs`, :mod:`~r3exp.modes.training`, :mod:`~r3exp.modes.publishing`
(results, tables, W&B), :mod:`~r3exp.modes.setup` and :mod:`~r3exp.modes.registry`."""
from __future__ import annotations

from r3exp.modes import compare, data, evaluate, failures, forgetting, main, train, warmstart  # noqa: F401 (register)
from r3exp.modes.registry import MODES, RunResult
from r3exp.modes.run import run

__all__ = ["MODES", "RunResult", "run"]
