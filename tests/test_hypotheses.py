"""The pre-registered hypotheses' decisions (r3exp.results.hypotheses, analysis/r3_question.py)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from r3exp.results.across_runs import collect_runs, comparison_rows
from r3exp.results.hypotheses import BASE, Hypothesis, decide, evaluate, holm
from r3exp.results.paired import PairedTest
from tests.test_compare import write_run
from tests.test_paired import write_episodes

ROOT = Path(__file__).resolve().parents[1]


def test_holm_multiplies_the_i_th_smallest_by_m_minus_i_and_keeps_the_order():
    # statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03], method="holm")[1]: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def paired(gain: float, p: float, interval: tuple[float, float]) -> PairedTest:
    return PairedTest([gain], 0, 0, 100, p, p, interval)


@pytest.mark.parametrize(
    "test, adjusted, outcome",
    [
        (paired(0.05, 0.01, (0.01, 0.09)), 0.03, "supported"),
        (paired(0.05, 0.01, (0.01, 0.09)), 0.06, "not shown"),  # significant alone, not after Holm
        (paired(-0.05, 0.01, (-0.09, -0.01)), 0.02, "refuted"),
    ],
)
def test_superiority_needs_a_positive_gain_and_a_holm_adjusted_p_below_alpha(test, adjusted, outcome):
    assert decide(Hypothesis("h", "a", "b", "first try"), test, adjusted) == outcome


@pytest.mark.parametrize(
    "interval, outcome", [((-0.02, 0.04), "supported"), ((-0.04, 0.02), "inconclusive"), ((-0.09, -0.01), "refuted")]
)
def test_non_inferiority_reads_the_interval_against_the_margin(interval, outcome):
    h = Hypothesis("h", "a", "b", "after reflection", kind="non-inferiority", margin=0.03)
    assert decide(h, paired(0.0, 0.5, interval), 1.0) == outcome


def write_sweep(root):
    """Two seeds x four arms on the same ten test examples (first try, retry after reflection)."""
    base = [(False, False)] * 10
    arms = {
        "r3": [(False, True)] * 4 + [(False, False)] * 6,
        "grpo": [(True, None)] * 3 + [(False, False)] * 7,
        "r3_grpo": [(True, None)] * 3 + [(False, True)] * 1 + [(False, False)] * 6,
        "r3_grpo_distill": [(True, None)] * 6 + [(False, False)] * 4,
    }
    for seed in (0, 1):
        for protocol, trained in arms.items():
            run = root / f"part{protocol == 'r3_grpo_distill'}" / f"{protocol}{seed}"
            write_run(run, seed, [f"seed={seed}", f"rollout.protocol={protocol}"], (0, 0), (0, 0))
            write_episodes(run / "eval_base_episodes.jsonl", base)
            write_episodes(run / "eval_trained_episodes.jsonl", trained)
            results = json.loads((run / "results.json").read_text())
            results["trained"].update(
                shuffled_reflection_fixed=10 * seed, empty_reflection_fixed=0, followed=1, follow_defined=4
            )
            results["phases"] = {"training": 60.0, "trained evaluation": 30.0}
            (run / "results.json").write_text(json.dumps(results))
            (run / "train_metrics.csv").write_text("step,sampled_tokens\n0,100\n1,150\n")


def test_the_preregistered_analysis_decides_from_the_run_directories_of_every_part(tmp_path, capsys, monkeypatch):
    write_sweep(tmp_path)
    rows = comparison_rows(collect_runs(tmp_path))
    h1 = Hypothesis("H1", "r3", BASE, "after reflection")
    h3 = Hypothesis("H3", "r3_grpo_distill", "grpo", "first try")
    h1_verdict, h3_verdict = evaluate(rows, [h1, h3])
    assert h1_verdict.test.gains == [0.4, 0.4] and (h1_verdict.test.a_only, h1_verdict.test.b_only) == (8, 0)
    assert h3_verdict.test.gains == [0.3, 0.3] and (h3_verdict.test.a_only, h3_verdict.test.b_only) == (6, 0)
    assert h1_verdict.adjusted_p == pytest.approx(
        min(1.0, 2 * min(h1_verdict.test.bootstrap_p, h3_verdict.test.bootstrap_p))
    )
    with pytest.raises(ValueError, match="no runs of arm 'r3_lora'"):
        evaluate(rows, [Hypothesis("h", "r3_lora", "grpo", "first try")])
    monkeypatch.setattr(sys, "argv", ["r3_question.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "analysis" / "r3_question.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "| H3: R3+GRPO+distill > GRPO | r3_grpo_distill | grpo | first try | +30.0 ± 0.0 |" in printed
    assert (tmp_path / "hypotheses.md").read_text().strip() == printed.strip()
    # the controls as shares of the 100 failed first attempts (seeds 0 and 1: 0 and 10), steps, tokens, minutes
    assert "| grpo | 0.0 ± 0.0 | 5.0 ± 7.1 | 0.0 ± 0.0 | 25.0 ± 0.0 | 2 ± 0 | 250 ± 0 | 1.5 ± 0.0 |" in printed
