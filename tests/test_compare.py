"""The comparison's grouping and arithmetic on run directories written here (no model needed)."""

from __future__ import annotations

import json

import pytest
import yaml

from r3exp.results.across_runs import collect_runs, comparison_rows, to_markdown, write_csv


def write_run(directory, seed, overrides, base, trained, model="tiny"):
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"task": {"name": "countdown"}, "model": {"name": model}, "seed": seed})
    )
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    def result(first, after):
        return {
            "split": "test",
            "total": 100,
            "first_try_correct": first,
            "reflection_fixed": after - first,
            "after_reflection_correct": after,
            "first_try_accuracy": first / 100,
            "after_reflection_accuracy": after / 100,
        }

    (directory / "results.json").write_text(json.dumps({"base": result(*base), "trained": result(*trained)}))


def test_seeds_are_averaged_and_other_overrides_are_rows(tmp_path):
    write_run(tmp_path / "0", 0, ["seed=0", "optimizer.optimizer.lr=1e-4"], (10, 20), (20, 40))
    write_run(tmp_path / "1", 1, ["seed=1", "optimizer.optimizer.lr=1e-4"], (12, 22), (24, 44))
    write_run(tmp_path / "2", 0, ["seed=0", "optimizer.optimizer.lr=3e-4", "hydra.run.dir=x"], (10, 20), (10, 20))
    write_run(
        tmp_path / "3",
        0,
        ["model=qwen2_1.5b", "seed=0", "optimizer.optimizer.lr=1e-4"],
        (50, 60),
        (55, 70),
        model="qwen2_1.5b",
    )
    rows = comparison_rows(collect_runs(tmp_path))
    assert [(r.model, r.setting, len(r.runs)) for r in rows] == [
        ("tiny", "optimizer.optimizer.lr=1e-4", 2),
        ("tiny", "optimizer.optimizer.lr=3e-4", 1),
        ("qwen2_1.5b", "optimizer.optimizer.lr=1e-4", 1),
    ]
    first = rows[0]
    assert first.mean("trained_after_reflection") == pytest.approx(0.42)
    assert first.std("trained_after_reflection") == pytest.approx(0.02 * 2**0.5)
    assert first.delta("trained_after_reflection", "base_after_reflection") == pytest.approx(0.21)
    table = to_markdown(rows)
    assert (
        "| countdown | tiny | optimizer.optimizer.lr=1e-4 | 2 | 100 | 11.0 ± 1.4 | 21.0 ± 1.4 | 22.0 ± 2.8 "
        "| 42.0 ± 2.8 | +10.0 | +11.0 | +21.0 |" in table
    )
    rows_csv = (write_csv(rows, tmp_path / "c.csv")).read_text().splitlines()
    assert len(rows_csv) == 4 and rows_csv[0].startswith("task,model,setting,seeds,n,base_first_try")


def test_collect_runs_names_the_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_runs(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no results.json"):
        collect_runs(tmp_path)


def test_forgetting_differences_become_one_column_per_benchmark(tmp_path):
    for seed, difference in ((0, 0.02), (1, -0.04)):
        write_run(tmp_path / str(seed), seed, [f"seed={seed}"], (10, 20), (20, 40))
        results = json.loads((tmp_path / str(seed) / "results.json").read_text())
        results["forgetting"] = {
            "base": {"gsm8k/exact_match": 0.5},
            "trained": {"gsm8k/exact_match": 0.5 + difference},
            "difference": {"gsm8k/exact_match": difference},
        }
        (tmp_path / str(seed) / "results.json").write_text(json.dumps(results))
    rows = comparison_rows(collect_runs(tmp_path))
    assert rows[0].mean("forgetting:gsm8k/exact_match") == pytest.approx(-0.01)
    table = to_markdown(rows)
    assert "Δ gsm8k/exact_match (lm-eval)" in table.splitlines()[0]
    assert f"| -1.0 ± {100 * rows[0].std('forgetting:gsm8k/exact_match'):.1f} |" in table
    write_csv(rows, tmp_path / "comparison.csv")
    assert "forgetting:gsm8k/exact_match" in (tmp_path / "comparison.csv").read_text().splitlines()[0]


def test_runs_without_the_forgetting_check_add_no_column(tmp_path):
    write_run(tmp_path / "0", 0, ["seed=0"], (10, 20), (20, 40))
    assert "lm-eval" not in to_markdown(comparison_rows(collect_runs(tmp_path)))
