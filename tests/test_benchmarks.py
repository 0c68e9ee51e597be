"""Every benchmark, run at its smallest shape so that it cannot rot: benchmarks/trl_same_work.py's r3exp side,
steady_steps.py, r3_step_profile.py and step_time.py on the embedded model, base_rates.py on one task,
step_memory.py on a tiny random-init Qwen2 (gpu_check.py: tests/test_gpu_check.py). A last test fails when a
script in benchmarks/ is named by no test. (TRL's side of trl_same_work.py needs the `trl` extra, which the
test environment does not install; docs/results/speed.md has its figures.)"""

from __future__ import annotations

import ast
import json
import os
import re
import statistics
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.integration
def test_the_same_work_benchmark_trains_every_row_and_times_each_part(tmp_path):
    out = tmp_path / "r3exp.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "trl_same_work.py"),
            "--side",
            "r3exp",
            "--model",
            "tiny",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["rows"] == 64  # 8 prompts x 8 samples
        assert row["trained_rows"] >= 48  # the parity reward gives nearly every group a signal
        assert 0 < row["generation_seconds"] < row["seconds"] and row["train_seconds"] > 0
        assert 0 < row["sampled_tokens"] <= 64 * 48 and row["prompt_tokens"] > 0


@pytest.mark.integration
def test_the_steady_steps_benchmark_prints_each_steps_time_faults_and_memory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "steady_steps.py"), "--model", "tiny", "--steps", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("step", "median"))]
    assert [line.split(":")[0] for line in lines] == ["step  1", "step  2", "median over steps 2..2"]
    assert all("page faults" in line and "resident" in line for line in lines[:2])
    assert lines[-1].endswith("(freed memory kept)")


@pytest.mark.integration
def test_the_r3_step_profile_splits_each_step_and_measures_its_floor(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "r3_step_profile.py"),
            "--model",
            "tiny",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
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


@pytest.mark.integration
def test_the_step_memory_benchmark_steps_a_small_model_and_prints_its_figures(tmp_path):
    """benchmarks/step_memory.py at a tiny width (its real use is a real model's width and vocabulary)."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "step_memory.py"),
            "--rows",
            "2",
            "--context",
            "16",
            "--reflection",
            "8",
            "--vocab",
            "500",
            "--hidden",
            "64",
            "--intermediate",
            "128",
            "--heads",
            "4",
            "--kv-heads",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = dict(item.split("=") for item in result.stdout.strip().splitlines()[-1].split())
    assert set(last) == {"static_gib", "peak_rss_gib", "step_seconds", "tokens_per_second"}
    assert float(last["peak_rss_gib"]) >= float(last["static_gib"]) > 0 and float(last["tokens_per_second"]) > 0


@pytest.mark.integration
def test_the_step_time_benchmark_prints_every_steps_split_and_their_median(tmp_path):
    """benchmarks/step_time.py on the main job's config, 2 steps: a row per step (seconds of the step, its
    generation, training and weight sync; tokens per second of each) and the median over steps 2..n."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "trainer.max_steps=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["step", "step"])
    assert lines[header].split() == ["step", "step", "generation", "train", "sync", "gen", "tok/s", "train", "tok/s"]
    rows = [[float(x) for x in line.split()] for line in lines[header + 1 : header + 3]]
    assert [row[0] for row in rows] == [1, 2] and not lines[header + 3].strip()
    for _, step, generation, train, sync, generated_rate, trained_rate in rows:
        assert step > 0 and generation > 0 and train >= 0 and sync >= 0 and generated_rate > 0 and trained_rate >= 0
        # training is the step less generation and sync (rounded to the printed 3 decimals)
        assert abs(step - generation - train - sync) <= 0.002 and step < 600
    assert any(row[6] > 0 for row in rows)  # some step trained
    median = re.search(
        r"median over steps 2\.\.n: step_seconds ([\d.]+), generation_seconds ([\d.]+), "
        r"train_seconds ([\d.]+), sync_seconds ([\d.]+), generation (\d+) tok/s, training (\d+) tok/s",
        result.stdout,
    )
    assert median, result.stdout[-2000:]
    figures = [float(x) for x in median.groups()]
    steady = rows[1:]  # step 1 is the warm-up
    for column, figure in zip(range(1, 7), figures):
        assert abs(statistics.median(row[column] for row in steady) - figure) <= (0.001 if column < 5 else 1)


@pytest.mark.integration
def test_the_base_rates_benchmark_prints_each_tasks_success_rates(tmp_path):
    """benchmarks/base_rates.py on one task, 8 validation examples x 4 samples: rates that are counts of
    those, the share of examples some sample solves at least the per-sample rate."""
    examples, samples = 8, 4
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "base_rates.py"),
            "--tasks",
            "countdown_pairs",
            "--examples",
            str(examples),
            "--samples",
            str(samples),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"model tiny_warm, {samples} samples per example at temperature 1.0" in result.stdout
    assert "| task | examples | per sample | solved by some sample | greedy |" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| countdown_pairs |")]
    assert len(rows) == 1, result.stdout
    _, count, *rates = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert count == str(examples) and all(rate.endswith("%") for rate in rates)
    per_sample, some_sample, greedy = (float(rate.removesuffix("%")) for rate in rates)
    for rate, out_of in ((per_sample, examples * samples), (some_sample, examples), (greedy, examples)):
        assert abs(round(rate * out_of / 100) * 100 / out_of - rate) < 0.05  # a count of that many, as printed
    # the shipped warm start solves countdown_pairs about half the time (conf/model/tiny_warm.yaml)
    assert 0 < per_sample <= some_sample <= 100 and 0 <= greedy <= 100
    assert "countdown_pairs, a greedy reply: '" in result.stdout


# Each script in benchmarks/ and the test that runs it (whose source names it).
COVERED_BY = {
    "base_rates.py": "tests/test_benchmarks.py::test_the_base_rates_benchmark_prints_each_tasks_success_rates",
    "gpu_check.py": "tests/test_gpu_check.py::"
    "test_the_gpu_check_runs_every_configuration_with_only_torch_transformers_and_peft",
    "gpu_checks.py": "tests/test_gpu_check.py::test_the_weight_push_check_compares_every_tensor_bit_for_bit",
    "gpu_main_job.sh": "tests/test_gpu_main_job.py::"
    "test_the_main_job_runs_where_only_torch_transformers_peft_and_lightning_are",
    "r3_step_profile.py": "tests/test_benchmarks.py::test_the_r3_step_profile_splits_each_step_and_measures_its_floor",
    "steady_steps.py": "tests/test_benchmarks.py::"
    "test_the_steady_steps_benchmark_prints_each_steps_time_faults_and_memory",
    "step_memory.py": "tests/test_benchmarks.py::"
    "test_the_step_memory_benchmark_steps_a_small_model_and_prints_its_figures",
    "step_time.py": "tests/test_benchmarks.py::test_the_step_time_benchmark_prints_every_steps_split_and_their_median",
    "trl_same_work.py": "tests/test_benchmarks.py::test_the_same_work_benchmark_trains_every_row_and_times_each_part",
}
# A script another benchmark runs (and names), covered by that one's test.
RUN_BY = {"gpu_main_job_figures.py": "gpu_main_job.sh"}


def test_every_benchmark_is_run_by_a_test():
    """A new script in benchmarks/ (``*.py``, ``*.sh``) fails here until COVERED_BY names the test that runs it."""
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    named = COVERED_BY.keys() | RUN_BY.keys()
    assert not [s for s in scripts if s not in named], "benchmarks no test names (add them to COVERED_BY)"
    assert not [s for s in COVERED_BY.keys() | RUN_BY.keys() if s not in scripts], "gone: drop from COVERED_BY"
    for script, test in COVERED_BY.items():
        path, name = test.split("::")
        source = (ROOT / path).read_text()
        function = next(
            (node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef) and node.name == name),
            None,
        )
        assert function is not None, f"{test} (for {script}) does not exist"
        assert script.rsplit(".", 1)[0] in ast.get_source_segment(source, function), f"{test} does not name {script}"
    for script, runner in RUN_BY.items():
        assert runner in COVERED_BY and script in (ROOT / "benchmarks" / runner).read_text()
