"""The DVC pipeline (dvc.yaml) runs for real, on tiny settings, in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import CACHE, CONF, ROOT

TINY = [
    "task.split_sizes.train=24",
    "task.split_sizes.validation=8",
    "task.split_sizes.test=8",
    "evaluation.limit=8",
    "failures.attempts=1",
    "trainer.max_steps=2",
    "rollout.examples_per_step=2",
    "rollout.group_size=2",
    "rollout.max_draws=1",
    "rollout.attempt.max_tokens=16",
    "rollout.reflection.max_tokens=16",
    "rollout.retry.max_tokens=16",
    "logger=csv",
    "model=tiny_warm",
    "model.warm_start.steps=2",
    "model.warm_start.episodes=32",  # a token warm start
    "forgetting.limit=20",
]
STAGES = ("data", "warmstart", "failures", "train", "evaluate_base", "evaluate", "forgetting")


def compose_params(repo: Path, overrides: list[str]) -> dict:
    """params.yaml as `dvc exp run -S ...` writes it: DVC's own Hydra composition of the packaged configs."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(repo / "params.yaml", str(repo / CONF.relative_to(ROOT)), None, "config", str(repo), overrides)
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_committed_params_yaml_is_the_composed_default_config(tmp_path):
    """One source of truth: params.yaml must be what DVC composes from src/r3exp/conf/ (regenerate it with
    `dvc exp run` or the command in docs/how-to/dvc.md when the configs change)."""
    shutil.copytree(CONF, tmp_path / CONF.relative_to(ROOT))
    assert compose_params(tmp_path, []) == yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    return copy


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "R3EXP_CACHE_DIR": str(CACHE),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "DVC_NO_ANALYTICS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.integration
def test_dvc_repro_runs_every_stage_then_skips_them_all(repo_copy):
    compose_params(repo_copy, TINY)
    out = dvc(repo_copy, "repro")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out.stdout

    pipeline = repo_copy / "pipeline"
    assert [
        len((pipeline / "data" / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "validation", "test")
    ] == [24, 8, 8]
    assert (pipeline / "warmstart" / "model" / "model.safetensors").exists()
    assert json.loads((pipeline / "warmstart" / "results.json").read_text())["warm_start"]["split"] == "validation"
    assert (pipeline / "failures" / "failures.jsonl").exists()
    assert (pipeline / "train" / "policy" / "merged" / "model.safetensors").exists()
    assert (pipeline / "train" / "train_metrics.csv").read_text().startswith("step,reward,")
    for label in ("base", "trained"):
        results = json.loads((pipeline / "evaluate" / label / "results.json").read_text())
        assert results[label]["total"] == 8 and 0.0 <= results[label]["after_reflection_accuracy"] <= 1.0
    forgetting = json.loads((pipeline / "forgetting" / "results.json").read_text())["forgetting"]
    assert set(forgetting) == {"base", "trained", "difference"} and "r3exp_arithmetic/acc" in forgetting["difference"]
    provenance = json.loads((pipeline / "train" / "provenance.json").read_text())
    assert any(path.startswith("pipeline/data/") for path in provenance["data_md5"])
    assert "pipeline/failures/failures.jsonl" in provenance["data_md5"]

    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    metrics = dvc(repo_copy, "metrics", "show", "--json")
    assert metrics.returncode == 0 and "after_reflection_accuracy" in metrics.stdout

    again = dvc(repo_copy, "repro")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Running stage" not in again.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout
