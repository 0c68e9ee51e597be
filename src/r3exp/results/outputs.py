"""The files of a comparison, written next to the runs or in ``mode=compare``'s directory: ``comparison.md``
(the paper's table, then the paired tests), ``comparison.csv``, ``paired.json``, ``accuracy.png`` and
``training.png`` (the learning curves)."""

from __future__ import annotations

import json
from pathlib import Path

from r3exp.results.across_runs import (
    RunResult,
    comparison_rows,
    paired_comparisons,
    paired_markdown,
    to_markdown,
    write_csv,
)
from r3exp.results.plots import plot_accuracy, plot_training


def write_comparison(runs: list[RunResult], out: str | Path) -> dict:
    """Compare ``runs`` and write the comparison's files to ``out``; returns what it wrote (paths, the
    rows, the paired tests and the Markdown ``text``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs)
    text = to_markdown(rows)
    paired = paired_comparisons(rows)
    if paired:  # on the same test examples, pooled over seeds (r3exp.results.paired)
        text += "\n\nPaired on the same test examples, pooled over seeds:\n\n" + paired_markdown(paired)
        (out / "paired.json").write_text(
            json.dumps([{"a": c.a, "b": c.b, "measure": c.measure, **c.test.to_dict()} for c in paired], indent=2)
        )
    (out / "comparison.md").write_text(text + "\n")
    return {
        "rows": rows,
        "paired": paired,
        "text": text,
        "table": out / "comparison.md",
        "csv": write_csv(rows, out / "comparison.csv"),
        "accuracy_png": plot_accuracy(rows, out / "accuracy.png"),
        "training_png": plot_training(rows, out / "training.png"),
    }
