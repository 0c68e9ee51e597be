"""The pre-registered R3 question (docs/results/preregistration-2026-12-07.md), from its run directories:

    .venv/bin/python analysis/r3_question.py outputs/multiruns/r3_question

Prints (and writes to <root>/hypotheses.md) the comparison of every arm (mean ± std over seeds), every
pair of arms' paired tests, and the three pre-registered hypotheses with their decisions (Holm over the
three primary tests), then each hypothesis on its other measure (reported, no decision).
"""
from __future__ import annotations

import sys
from pathlib import Path

from r3exp.results.compare import collect_runs, comparison_rows, paired_comparisons, paired_markdown, to_markdown
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


def main(args: list[str]) -> None:
    if len(args) != 1:
        sys.exit(__doc__)
    root = Path(args[0])
    rows = comparison_rows(collect_runs(root))
    text = "\n\n".join([
        "## Arms (mean ± std over seeds)", to_markdown(rows),
        "## Paired tests (every pair of arms, pooled over seeds)", paired_markdown(paired_comparisons(rows)),
        "## Pre-registered hypotheses", verdicts_markdown(evaluate(rows, PREREGISTERED)),
    ])
    (root / "hypotheses.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
