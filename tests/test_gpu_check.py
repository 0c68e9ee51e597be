"""benchmarks/gpu_check.py, the one command for a lent GPU machine, run here at small shapes on CPU, in an
environment without what that machine lacks (vLLM, Hydra, OmegaConf, W&B, lm-eval, DVC), so it cannot rot."""
from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.site_packages import packages_without, python_without_site

ABSENT_ON_THE_GPU_MACHINE = ("vllm", "hydra", "omegaconf", "wandb", "lm_eval", "dvc")


def gpu_machine_packages(directory: Path) -> Path:
    """This environment's site-packages less the packages the GPU machine lacks (links to the rest)."""
    return packages_without(directory, ABSENT_ON_THE_GPU_MACHINE)


def test_the_gpu_check_runs_every_configuration_with_only_torch_transformers_and_peft(tmp_path):
    packages = gpu_machine_packages(tmp_path / "site")
    out = python_without_site(
        packages, "benchmarks/gpu_check.py", "--cpu-shapes", "--steps", "2", "--examples", "4", "--group-size", "4",
        "--attempt-tokens", "12", "--reflection-tokens", "12", "--paper-rows", "8", "--paper-context", "60",
        "--paper-reflection", "20", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    checks = [line for line in out.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    # two models (tied and untied output layer) x LoRA and full fine-tuning, six checks each
    assert len(checks) == 24 and all(line.startswith("PASS") for line in checks), "\n".join(checks)
    assert "gpu_check: 24 of 24 checks passed" in out.stdout
    for name in ("qwen2_1.5b · LoRA r16", "qwen2_1.5b · full fine-tuning", "qwen2_7b · LoRA r16",
                 "qwen2_7b · full fine-tuning"):
        assert f"PASS {name} · float32 · cpu: engine/trainer log-prob gap" in out.stdout
        assert f"PASS {name} · float32 · cpu: reflection groups carry a reward" in out.stdout


def test_that_environment_lacks_those_packages_and_has_the_rest(tmp_path):
    """Else the test above proves nothing."""
    packages = gpu_machine_packages(tmp_path / "site")
    for name in ABSENT_ON_THE_GPU_MACHINE:
        out = python_without_site(packages, "-c", f"import {name}", timeout=120)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, name
    out = python_without_site(packages, "-c", "import torch, transformers, peft", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_sleep_check_counts_a_tied_output_layer_once():
    """On the GPU, Qwen2-1.5B's sleep check once failed by exactly its tied embedding (2.88 of 3.31 GiB): the
    state dict lists the shared tensor twice. The weights a sleeping engine must free count it once."""
    import importlib.util

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
    try:
        spec.loader.exec_module(gpu_check)
    finally:
        del sys.modules["gpu_check"]
    for tied in (True, False):
        model = Qwen2ForCausalLM(Qwen2Config(**dict(gpu_check.SMALL, tie_word_embeddings=tied)))
        unique = sum(p.numel() * p.element_size() for p in model.parameters())  # parameters() lists each once
        listed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        assert gpu_check.weight_gib(model) * gpu_check.GIB == unique
        assert (listed > unique) == tied
