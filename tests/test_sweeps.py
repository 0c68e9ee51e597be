"""A real Hydra multirun on the tiny model, the comparison over its directory, and the analysis notebook
executed on one of its runs."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.test_cli import SHORT, r3exp

pytestmark = pytest.mark.integration  # a real multirun of the command line


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("multirun")
    out = r3exp(
        "-m",
        *SHORT,
        "callbacks.reflection_samples.every_n_steps=1",
        "rollout.protocol=r3,grpo",
        f"hydra.sweep.dir={sweep_dir}",
        "+hydra.callbacks.compare._target_=r3exp.results.sweep_callback.CompareSweep",
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return sweep_dir


def test_each_job_has_its_own_run_directory_and_wandb_run_in_one_group(multirun):
    from r3exp.tracking.offline_run import read_offline_run

    jobs = sorted(p.parent for p in multirun.glob("*/results.json"))
    assert [job.name[:2] for job in jobs] == ["0_", "1_"] and all(len(job.name) <= 122 for job in jobs)
    runs = [read_offline_run(next((job / "wandb").glob("offline-run-*"))) for job in jobs]
    assert len({run.run_id for run in runs}) == 2
    assert len({run.group for run in runs}) == 1
    assert [run.config["rollout"]["protocol"] for run in runs] == ["r3", "grpo"]


def test_compare_reproduces_each_runs_results_and_draws_the_plots(multirun, tmp_path):
    out = r3exp("mode=compare", f"compare.runs={multirun}", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert [row["setting"] for row in rows] == ["rollout.protocol=r3", "rollout.protocol=grpo"]
    for row in rows:
        (run_dir,) = row["runs"].split()
        results = json.loads((multirun / os.path.basename(run_dir) / "results.json").read_text())
        for label in ("base", "trained"):
            for kind in ("first_try", "after_reflection"):
                assert float(row[f"{label}_{kind}"]) == results[label][f"{kind}_accuracy"]
        assert float(row["delta_training_after_reflection"]) == pytest.approx(
            results["trained"]["after_reflection_accuracy"] - results["base"]["after_reflection_accuracy"]
        )
        assert row["seeds"] == "1" and row["n"] == "16"
    table = (tmp_path / "comparison.md").read_text()
    assert table.startswith("| task | model | setting |") and "rollout.protocol=grpo" in table
    # the same examples, paired: each trained model vs its base, and R3 vs the GRPO baseline
    paired = json.loads((tmp_path / "paired.json").read_text())
    assert {(c["a"], c["b"]) for c in paired} == {
        ("rollout.protocol=r3 trained", "rollout.protocol=r3 base"),
        ("rollout.protocol=grpo trained", "rollout.protocol=grpo base"),
        ("rollout.protocol=r3 trained", "rollout.protocol=grpo trained"),
    }
    assert all(c["examples"] == 16 and 0 <= c["mcnemar_p"] <= 1 for c in paired)
    for png in ("accuracy.png", "training.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.dumps(json.loads((tmp_path / "report.json").read_text()))
    assert "rollout/reward_mean" in report and '"name": "group"' in report
    assert '"value": "countdown_pairs-tiny_warm"' in report


def test_the_sweep_callback_writes_the_comparison_into_the_sweep_directory(multirun, tmp_path):
    """hydra.callbacks.compare (experiment=r3_demo sets it): the comparison of the finished multirun, in
    its directory, the same as mode=compare over it."""
    out = r3exp("mode=compare", f"compare.runs={multirun}", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (multirun / "comparison.md").read_text() == (tmp_path / "comparison.md").read_text()
    assert (multirun / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_without_runs_explains_what_it_needs(tmp_path):
    out = r3exp("mode=compare", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "compare.runs=" in out.stderr
    out = r3exp("mode=compare", f"compare.runs={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_analysis_notebook_executes_on_a_run(multirun, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from tests.conftest import ROOT

    job = sorted(p.parent for p in multirun.glob("*/results.json"))[0]
    monkeypatch.setenv("R3EXP_RUN_DIR", str(job))
    notebook = nbformat.read(ROOT / "notebooks" / "reflection_analysis.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    printed = "".join(
        o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )
    assert "reflection samples" in printed and "== first sampled step" in printed
    assert any(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for cell in notebook.cells
        for o in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials_and_reports_the_best(tmp_path):
    fixed = [o for o in SHORT if not o.startswith(("rollout.group_size", "rollout.reflection.max_tokens"))]
    out = r3exp(
        "-m",
        "--config-dir",
        "sweeps",
        "--config-name",
        "optuna_reflection",
        *fixed,
        "evaluation.split=validation",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={tmp_path}",
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import yaml

    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 0.0 <= best["best_value"] <= 1.0
    assert len(list(tmp_path.glob("*/results.json"))) == 2
