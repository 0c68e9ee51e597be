"""The pre-registered R3 question (docs/results/preregistration-2026-12-07.md), from its run directories:

    .venv/bin/python analysis/r3_question.py outputs/multiruns/r3_question

Prints (and writes to <root>/hypotheses.md) the comparison of every arm (mean ± std over seeds), every
pair of arms' paired tests, the three pre-registered hypotheses with their decisions (Holm over the three
primary tests), then each hypothesis on its other measure (reported, no decision), and the secondary
measures per arm: the controls (the share of failed first attempts that a retry fixes with the model's own
reflection, another example's, an empty one), the follow rate, the forgetting check, and per job the
training steps, tokens sampled and wall time (the phases `results.json` records).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from r3exp.results.across_runs import (
    ComparisonRow,
    arm_of,
    collect_runs,
    comparison_rows,
    paired_comparisons,
    paired_markdown,
    to_markdown,
)
from r3exp.results.hypotheses import BASE, Hypothesis, evaluate, verdicts_markdown

AFTER, FIRST = "after reflection", "first try"
PREREGISTERED = [
    Hypothesis("H1: R3 > base", "r3", BASE, AFTER),
    Hypothesis("H2: R3+GRPO >= GRPO", "r3_grpo", "grpo", AFTER, kind="non-inferiority", margin=0.03),
    Hypothesis("H3: R3+GRPO+distill > GRPO", "r3_grpo_distill", "grpo", FIRST),
    Hypothesis("H1 (first try)", "r3", BASE, FIRST, primary=False),
    Hypothesis("H2 (first try)", "r3_grpo", "grpo", FIRST, primary=False),
    Hypothesis("H3 (after reflection)", "r3_grpo_distill", "grpo", AFTER, primary=False),
]


def run_figures(directory: Path, label: str) -> dict[str, float]:
    """One job's secondary figures for its ``label`` (base | trained) evaluation."""
    results = json.loads((directory / "results.json").read_text())
    ev = results[label]
    failures = max(ev["total"] - ev["first_try_correct"], 1)
    figures = {
        name: ev[key] / failures
        for name, key in (
            ("own reflection fixes", "reflection_fixed"),
            ("another's fixes", "shuffled_reflection_fixed"),
            ("empty fixes", "empty_reflection_fixed"),
        )
        if ev.get(key) is not None
    }
    if ev.get("follow_defined"):
        figures["follow rate"] = ev["followed"] / ev["follow_defined"]
    if label == "trained":
        differences = (results.get("forgetting") or {}).get("difference", {})
        figures.update({f"forgetting {k}": v for k, v in differences.items()})
        if (directory / "train_metrics.csv").exists():
            with (directory / "train_metrics.csv").open() as handle:
                steps = list(csv.DictReader(handle))
            figures["steps"] = len(steps)
            figures["sampled tokens"] = sum(float(row["sampled_tokens"]) for row in steps)
        if results.get("phases"):
            figures["job minutes"] = sum(results["phases"].values()) / 60
    return figures


def secondary_markdown(rows: list[ComparisonRow]) -> str:
    """Mean ± std over seeds of :func:`run_figures`: the base model (from every job) and each arm's trained model."""
    table = [("base", [run_figures(run.directory, "base") for row in rows for run in row.runs])]
    table += [(arm_of(row.setting)[0], [run_figures(run.directory, "trained") for run in row.runs]) for row in rows]
    columns = list(dict.fromkeys(key for _, figures in table for f in figures for key in f))
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, figures in table:
        cells = []
        for column in columns:
            values = [f[column] for f in figures if column in f and f[column] == f[column]]
            if not values:
                cells.append("–")
                continue
            mean, std = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            percent = column not in ("steps", "sampled tokens", "job minutes")
            scale, digits = (100, 1) if percent else (1, 0 if column != "job minutes" else 1)
            cells.append(f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args: list[str]) -> None:
    if len(args) != 1:
        sys.exit(__doc__)
    root = Path(args[0])
    rows = comparison_rows(collect_runs(root))
    text = "\n\n".join(
        [
            "## Arms (mean ± std over seeds)",
            to_markdown(rows),
            "## Paired tests (every pair of arms, pooled over seeds)",
            paired_markdown(paired_comparisons(rows)),
            "## Pre-registered hypotheses",
            verdicts_markdown(evaluate(rows, PREREGISTERED)),
            "## Secondary (mean ± std over seeds; shares in %, of the failed first attempts for the controls)",
            secondary_markdown(rows),
        ]
    )
    (root / "hypotheses.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
