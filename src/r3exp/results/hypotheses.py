"""Pre-registered hypotheses over a comparison's arms: each one paired test, a decision rule, and Holm's
correction over the primary ones (docs/results/preregistration-2026-12-07.md).

A hypothesis compares arm ``a`` (a ``rollout.protocol``) with arm ``b`` or, when ``b`` is ``base``, with the
base model of ``a``'s own runs, on one measure (``after reflection`` or ``first try``), paired per test example
and pooled over seeds (:func:`r3exp.results.across_runs.paired_evaluations`). ``superiority``: supported when the
pooled difference is positive and the Holm-adjusted bootstrap p is below ``alpha``, refuted when it is negative
and so significant, else not shown. ``non-inferiority`` (``margin`` points): supported when the bootstrap's
95% interval lies above ``-margin``, refuted when it lies below 0, else inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

from r3exp import keys
from r3exp.results.across_runs import ComparisonRow, arm_of, paired_evaluations
from r3exp.results.paired import PairedTest

BASE = "base"
KINDS = ("superiority", "non-inferiority")


@dataclass(frozen=True)
class Hypothesis:
    name: str
    a: str  # an arm (rollout.protocol)
    b: str  # another arm, or "base": the base model of a's runs
    measure: str  # "after reflection" | "first try"
    kind: str = "superiority"
    margin: float = 0.0  # non-inferiority margin, as a fraction (0.03: 3 points)
    primary: bool = True  # in Holm's correction


@dataclass(frozen=True)
class Verdict:
    hypothesis: Hypothesis
    test: PairedTest
    adjusted_p: float | None  # Holm-adjusted bootstrap p (primary hypotheses; all of them are in the correction)
    outcome: str  # supported | refuted | not shown | inconclusive | (secondary: reported)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest is multiplied by (m - i),
    then made non-decreasing in that order, and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def decide(hypothesis: Hypothesis, test: PairedTest, adjusted_p: float | None, alpha: float = 0.05) -> str:
    """The pre-registered decision rule's outcome (secondary hypotheses are reported without one)."""
    if not hypothesis.primary:
        return "reported"
    if hypothesis.kind == "non-inferiority":
        low, high = test.interval
        if low > -hypothesis.margin:
            return "supported"
        return "refuted" if high < 0 else "inconclusive"
    p = test.bootstrap_p if adjusted_p is None else adjusted_p
    gain = test.mean_gain
    if p < alpha and gain > 0:
        return "supported"
    return "refuted" if p < alpha and gain < 0 else "not shown"


def evaluate(rows: list[ComparisonRow], hypotheses: list[Hypothesis], alpha: float = 0.05) -> list[Verdict]:
    """Every hypothesis's paired test and outcome over the comparison's rows (one row per arm; refused, naming
    the arm, when an arm is missing or has no evaluations to pair)."""
    arms = {arm_of(row.setting)[0]: row for row in rows}
    tests = []
    for h in hypotheses:
        for arm in (h.a, h.b):
            if arm != BASE and arm not in arms:
                raise ValueError(f"hypothesis {h.name!r}: no runs of arm {arm!r} (found {sorted(arms)})")
        a = arms[h.a]
        b_runs, b_label = (a.runs, keys.BASE) if h.b == BASE else (arms[h.b].runs, keys.TRAINED)
        test = paired_evaluations(a.runs, keys.TRAINED, b_runs, b_label, h.measure)
        if test is None:
            raise ValueError(f"hypothesis {h.name!r}: the runs of {h.a!r} and {h.b!r} have no paired evaluations")
        tests.append(test)
    primary = [i for i, h in enumerate(hypotheses) if h.primary]  # a non-inferiority test's p: its superiority
    adjusted = dict(zip(primary, holm([tests[i].bootstrap_p for i in primary])))
    return [
        Verdict(h, t, adjusted.get(i), decide(h, t, adjusted.get(i), alpha))
        for i, (h, t) in enumerate(zip(hypotheses, tests))
    ]


def verdicts_markdown(verdicts: list[Verdict]) -> str:
    header = (
        "| hypothesis | a | b | measure | gain (points, mean ± std over seeds) | 95% interval | a only / b only "
        "| McNemar p | bootstrap p | Holm p | outcome |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    corrected = sum(v.adjusted_p is not None for v in verdicts)
    for v in verdicts:
        h, t = v.hypothesis, v.test
        # 10,000 resamples: a bootstrap p of 0 is below 1e-4, and Holm's multiplies it by at most the tests
        adjusted = "–" if v.adjusted_p is None else p_text(v.adjusted_p, floor=corrected * 1e-4)
        lines.append(
            f"| {h.name} | {h.a} | {h.b} | {h.measure} | {100 * t.mean_gain:+.1f} ± {100 * t.std_gain:.1f} "
            f"| {100 * t.interval[0]:+.1f} to {100 * t.interval[1]:+.1f} | {t.a_only} / {t.b_only} "
            f"| {t.mcnemar_p:.2g} | {p_text(t.bootstrap_p)} | {adjusted} | {v.outcome} |"
        )
    return "\n".join(lines)


def p_text(value: float, floor: float = 1e-4) -> str:
    """A p-value in two significant digits; a bootstrap's 0 (no resample on the other side) as "< floor"."""
    return f"{value:.2g}" if value > 0 else "< " + f"{floor:.0e}".replace("e-0", "e-")
