"""benchmarks/gpu_main_job.sh at CPU shapes, in an environment like the lent GPU machine's: this environment's
site-packages less what that image lacks (vLLM, Hydra, OmegaConf, the antlr4 runtime, torch-optimi and every
optional extra), with the wheels the script fetched here installed there by the script, offline."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import CACHE, ROOT
from tests.site_packages import packages_without
from tests.test_cli import SHORT
from tests.test_extras import EXTRAS
from tests.test_random_init import SMALL_QWEN2

pytestmark = pytest.mark.integration  # benchmarks/gpu_main_job.sh fetch and run, in subprocesses

ABSENT_ON_THE_GPU_IMAGE = EXTRAS + ("hydra", "omegaconf", "antlr4")
SCRIPT = ROOT / "benchmarks" / "gpu_main_job.sh"


def script(*args: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """``gpu_main_job.sh fetch``: the wheels, from the package registry (as on the CPU machine)."""
    directory = tmp_path_factory.mktemp("gpu-wheels")
    out = script("fetch", env={"WHEELS": str(directory), "PYTHON": sys.executable}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return directory


def test_fetch_builds_the_four_wheels_from_the_lock_file(wheels):
    names = sorted(path.name.split("-")[0].lower() for path in wheels.glob("*.whl"))
    assert names == ["antlr4_python3_runtime", "hydra_core", "omegaconf", "torch_optimi"]
    lock = (ROOT / "scripts" / "cpu.lock").read_text().lower()
    for path in wheels.glob("*.whl"):
        name, version = path.name.split("-")[:2]
        assert f"{name.replace('_', '-')}=={version}" in lock, path.name  # the pinned versions


def test_the_main_job_runs_where_only_torch_transformers_peft_and_lightning_are(wheels, tmp_path):
    """``gpu_main_job.sh run`` at CPU shapes: the wheels installed offline, the main job, its figures."""
    view = packages_without(tmp_path / "site-packages", ABSENT_ON_THE_GPU_IMAGE)
    missing = subprocess.run(
        [sys.executable, "-S", "-c", "import hydra"], env={"PYTHONPATH": str(view)}, capture_output=True, text=True
    )
    assert missing.returncode != 0  # else this test proves nothing
    short = [o for o in SHORT if not o.startswith("model.warm_start")]
    env = {
        "WHEELS": str(wheels),
        "PYTHON": f"{sys.executable} -S",
        "PYTHONPATH": str(view),
        "R3EXP_CACHE_DIR": str(CACHE),
        "RUN_DIR": str(tmp_path / "run"),
    }
    out = script(
        "run",
        "trainer=cpu",
        "model.dtype=float32",
        *SMALL_QWEN2,
        *short,
        f"paths.results_cache={tmp_path}",
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "[gpu_main_job] installed antlr4" in out.stdout  # the wheels went in, offline
    for phase in ("model build", "engine start", "base evaluation", "training", "export", "trained evaluation"):
        assert f"| {phase} | " in out.stdout
    steps = [line for line in out.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(steps) == 2 and all(float(line.split("|")[-2]) > 0 for line in steps)  # each step's peak memory
    assert "| step | step s | generation s | training s |" in out.stdout
