"""The forgetting check: the real lm-evaluation-harness, through ``python -m r3exp``, on the embedded model
with the task r3exp ships in lm-eval's format (offline)."""

from __future__ import annotations

import json

import pytest

from r3exp.evaluation.general_ability import GeneralAbility, scores_of
from tests.test_cli import SHORT, r3exp

FORGETTING = ["forgetting.enabled=true", "forgetting.limit=40"]
SETTINGS = ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed", "limit", "batch_size", "model")


def lm_eval_results(run_dir, label) -> dict:
    """lm-eval's own aggregated results file for ``label``."""
    files = sorted((run_dir / "lm_eval" / label).rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.mark.integration
def test_main_job_scores_base_and_trained_with_lm_eval_and_compare_shows_it(tmp_path):
    sweep = tmp_path / "sweep"
    out = r3exp("-m", *SHORT, *FORGETTING, "seed=0,1", f"hydra.sweep.dir={sweep}", timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(path.parent for path in sweep.glob("*/results.json"))
    assert len(jobs) == 2
    for run_dir in jobs:
        results = json.loads((run_dir / "results.json").read_text())
        forgetting = results["forgetting"]
        for label in ("base", "trained"):
            own = lm_eval_results(run_dir, label)
            assert own["results"]["r3exp_arithmetic"]["sample_len"] == 40  # forgetting.limit reached lm-eval
            assert forgetting[label] == scores_of(own) and set(forgetting[label]) == {"r3exp_arithmetic/acc"}
            assert 0.0 <= forgetting[label]["r3exp_arithmetic/acc"] <= 1.0
            # identical settings for both models: the same task config (but for the model named in its
            # metadata), the same seeds and few-shot
            base_own = lm_eval_results(run_dir, "base")
            assert {k: v for k, v in own["configs"]["r3exp_arithmetic"].items() if k != "metadata"} == {
                k: v for k, v in base_own["configs"]["r3exp_arithmetic"].items() if k != "metadata"
            }
            assert [own["config"].get(k) for k in SETTINGS] == [base_own["config"].get(k) for k in SETTINGS]
        assert forgetting["difference"]["r3exp_arithmetic/acc"] == pytest.approx(
            forgetting["trained"]["r3exp_arithmetic/acc"] - forgetting["base"]["r3exp_arithmetic/acc"]
        )
    assert out.stdout.count("general ability (lm-eval)") == 2
    out = r3exp("mode=compare", f"compare.runs={sweep}", f"hydra.run.dir={tmp_path / 'compare'}")
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "compare" / "comparison.md").read_text()
    assert "Δ r3exp_arithmetic/acc (lm-eval)" in table.splitlines()[0]
    assert table.splitlines()[2].count("|") == table.splitlines()[0].count("|")  # one row, every column filled


@pytest.mark.integration
def test_forgetting_mode_scores_the_same_model_the_same_under_both_labels(tmp_path):
    """mode=forgetting, the embedded model (no warm start) as base and as forgetting.policy: identical
    settings give identical scores, so the difference is exactly 0."""
    from tests.conftest import CACHE

    out = r3exp("mode=forgetting", "model.warm_start=null", "forgetting.limit=40", f"hydra.run.dir={tmp_path / 'a'}")
    assert out.returncode == 0, out.stderr[-3000:]
    base = json.loads((tmp_path / "a" / "results.json").read_text())["forgetting"]
    assert set(base) == {"base", "difference"} and base["difference"] == {}
    model_dir = next((CACHE / "models").glob("tiny-h128-l2-*"))
    out = r3exp(
        "mode=forgetting",
        "model.warm_start=null",
        "forgetting.limit=40",
        f"forgetting.policy={model_dir}",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    both = json.loads((tmp_path / "b" / "results.json").read_text())["forgetting"]
    assert both["base"] == both["trained"] == base["base"] and both["difference"] == {"r3exp_arithmetic/acc": 0.0}
    assert "| r3exp_arithmetic/acc |" in out.stdout
    out = r3exp("mode=forgetting", "forgetting.policy=/nonexistent/policy", f"hydra.run.dir={tmp_path / 'c'}")
    assert out.returncode == 2 and "forgetting.policy='/nonexistent/policy'" in out.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "override, says",
    [
        ("forgetting.tasks=[gsm8k]", "'gsm8k': its dataset comes from the Hugging Face hub"),
        ("forgetting.tasks=[no_such_task]", "lm-eval knows no task 'no_such_task'"),
        ("forgetting.backend=tgi", "forgetting.backend='tgi'"),
    ],
)
def test_a_benchmark_that_cannot_run_here_fails_in_one_line_before_training(override, says, tmp_path):
    out = r3exp(*SHORT, "forgetting.enabled=true", override, f"hydra.run.dir={tmp_path}", timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "checkpoints").exists()  # refused before any training


def test_scores_keep_every_metric_and_filter_but_not_standard_errors():
    results = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.5,
                "exact_match_stderr,strict-match": 0.1,
                "exact_match,flexible-extract": 0.6,
            },
            "hellaswag": {"acc,none": 0.4, "acc_norm,none": 0.45, "acc_stderr,none": 0.01},
        }
    }
    assert scores_of(results) == {
        "gsm8k/exact_match,strict-match": 0.5,
        "gsm8k/exact_match,flexible-extract": 0.6,
        "hellaswag/acc": 0.4,
        "hellaswag/acc_norm": 0.45,
    }
    assert GeneralAbility().tasks == ["r3exp_arithmetic"]
