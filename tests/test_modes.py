"""The modes: one registered function each, a typed result, the sweepers' objective from it."""

from __future__ import annotations

import pytest

from r3exp import keys
from r3exp.errors import ConfigError
from r3exp.evaluation import EvalResult
from r3exp.modes import MODES, ModeResult, run


def result(first: int, fixed: int) -> EvalResult:
    return EvalResult("test", 100, first, fixed)


def test_every_mode_is_registered_with_what_it_needs():
    assert set(MODES) == {"main", "evaluate", "train", "failures", "data", "warmstart", "compare", "forgetting"}
    assert {name for name, mode in MODES.items() if mode.ranked} == {"main", "evaluate", "train"}
    assert {name for name, mode in MODES.items() if not mode.engine} == {"data", "compare", "forgetting"}


def test_the_objective_is_the_trained_models_accuracy_after_reflection(tmp_path):
    both = ModeResult(tmp_path, results={keys.BASE: result(10, 5), keys.TRAINED: result(20, 10)})
    assert both.objective == result(20, 10).after_reflection_accuracy == 0.3
    assert ModeResult(tmp_path, results={"qwen": result(10, 5)}).objective == 0.15  # mode=evaluate: its model
    assert ModeResult(tmp_path).objective is None  # nothing evaluated (data, train, ...)


def test_an_unknown_mode_names_the_registered_ones():
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match="mode='serve'.*'main'"):
        run(OmegaConf.create({"mode": "serve"}))


def composed(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path / 'run'}", "logger=none", *overrides])


def test_a_mode_is_handed_one_resolved_run(tmp_path):
    """launch resolves the run once (directory, provenance, ranks, no checkpoint, no logger) before the mode;
    a mode without an engine gets no parts."""
    from r3exp.runtime.launch import launch
    from r3exp.runtime.run import ModeSpec

    seen = []
    launch(
        composed(tmp_path, "mode=data"), ModeSpec(lambda run: seen.append(run) or ModeResult(run.run_dir), engine=False)
    )
    (run,) = seen
    assert run.run_dir == tmp_path / "run" and (run.run_dir / "provenance.json").exists()
    assert run.cfg.mode == "data" and run.resume is None and run.parts is None and run.logger is False
    assert run.provenance["seed"] == run.cfg.seed


def test_a_modes_own_check_runs_before_its_run_directory_is_made(tmp_path):
    from r3exp.runtime.launch import launch
    from r3exp.runtime.run import ModeSpec

    def refuse(cfg):
        raise ConfigError("compare.runs: refused")

    with pytest.raises(ConfigError, match="refused"):
        launch(composed(tmp_path, "mode=data"), ModeSpec(lambda run: pytest.fail("ran"), engine=False, check=refuse))
    assert not (tmp_path / "run").exists()


def test_every_mode_reads_in_one_screen():
    """modes/ holds entry points only: what they share is in r3exp.runtime."""
    from tests.conftest import ROOT

    for path in (ROOT / "src" / "r3exp" / "modes").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 50, f"{path.name}: a mode that grew past one screen"
