"""Benchmarks that would otherwise rot, at their smallest shapes: benchmarks/trl_same_work.py's r3exp side,
steady_steps.py and r3_step_profile.py on the embedded model, step_memory.py on a tiny random-init Qwen2.
(TRL's side needs the `trl` extra, which the test environment does not install; docs/results/speed.md has its figures.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_the_same_work_benchmark_trains_every_row_and_times_each_part(tmp_path):
    out = tmp_path / "r3exp.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trl_same_work.py"), "--side", "r3exp",
                             "--model", "tiny", "--steps", "2", "--out", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["rows"] == 64  # 8 prompts x 8 samples
        assert row["trained_rows"] >= 48  # the parity reward gives nearly every group a signal
        assert 0 < row["generation_seconds"] < row["seconds"] and row["train_seconds"] > 0
        assert 0 < row["sampled_tokens"] <= 64 * 48 and row["prompt_tokens"] > 0


def test_the_steady_steps_benchmark_prints_each_steps_time_faults_and_memory(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "steady_steps.py"), "--model", "tiny",
                             "--steps", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("step", "median"))]
    assert [line.split(":")[0] for line in lines] == ["step  1", "step  2", "median over steps 2..2"]
    assert all("page faults" in line and "resident" in line for line in lines[:2])
    assert lines[-1].endswith("(freed memory kept)")


def test_the_r3_step_profile_splits_each_step_and_measures_its_floor(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "r3_step_profile.py"), "--model", "tiny",
                             "--steps", "2", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(out.read_text())["steps"]
    assert [row["step"] for row in steps] == [1, 2]
    for row in steps:
        assert set(row["turns"]) == {"attempt", "reflection", "retry"}  # R3's three dependent calls
        assert row["sampled_tokens"] == sum(t["sampled_tokens"] for t in row["turns"].values()) > 0
        assert row["turns"]["reflection"]["rows"] > row["turns"]["reflection"]["prompts"]  # G samples per prompt
        assert abs(sum(row["parts"].values()) - row["wall"]) < 0.05 * row["wall"]  # the parts add up to the step
        floor = row["floor"]
        assert floor["generation"] > 0 and floor["sampled_tokens"] >= row["sampled_tokens"]  # the same tokens, or more
        assert floor["total"] == floor["generation"] + floor["training"] and row["ratio"] > 0
    assert "step / floor:" in result.stdout and "floor: generation" in result.stdout


def test_the_step_memory_benchmark_steps_a_small_model_and_prints_its_figures(tmp_path):
    """benchmarks/step_memory.py at a tiny width (its real use is a real model's width and vocabulary)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_memory.py"), "--rows", "2", "--context",
                             "16", "--reflection", "8", "--vocab", "500", "--hidden", "64", "--intermediate", "128",
                             "--heads", "4", "--kv-heads", "2"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = dict(item.split("=") for item in result.stdout.strip().splitlines()[-1].split())
    assert set(last) == {"static_gib", "peak_rss_gib", "step_seconds", "tokens_per_second"}
    assert float(last["peak_rss_gib"]) >= float(last["static_gib"]) > 0 and float(last["tokens_per_second"]) > 0
