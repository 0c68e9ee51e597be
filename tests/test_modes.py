"""The modes: one registered function each, a typed result, the sweepers' objective from it."""
from __future__ import annotations

import pytest

from r3exp import keys
from r3exp.errors import ConfigError
from r3exp.evaluation import EvalResult
from r3exp.modes import MODES, RunResult, run


def result(first: int, fixed: int) -> EvalResult:
    return EvalResult("test", 100, first, fixed)


def test_every_mode_is_registered_with_what_it_needs():
    assert set(MODES) == {"main", "evaluate", "train", "failures", "data", "warmstart", "compare", "forgetting"}
    assert {name for name, mode in MODES.items() if mode.ranked} == {"main", "evaluate", "train"}
    assert {name for name, mode in MODES.items() if not mode.engine} == {"data", "compare", "forgetting"}


def test_the_objective_is_the_trained_models_accuracy_after_reflection(tmp_path):
    both = RunResult(tmp_path, results={keys.BASE: result(10, 5), keys.TRAINED: result(20, 10)})
    assert both.objective == result(20, 10).after_reflection_accuracy == 0.3
    assert RunResult(tmp_path, results={"qwen": result(10, 5)}).objective == 0.15  # mode=evaluate: its model
    assert RunResult(tmp_path).objective is None  # nothing evaluated (data, train, ...)


def test_an_unknown_mode_names_the_registered_ones():
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match="mode='serve'.*'main'"):
        run(OmegaConf.create({"mode": "serve"}))
