"""Paired tests of two models on the same test examples: the statistics behind "R3 beats the base model"
and "R3 beats plain GRPO". Outcomes are paired per example within a seed and pooled over seeds:

- the gain: mean over seeds of (accuracy of a - accuracy of b), with the per-seed gains and their std;
- McNemar's exact test on the pooled discordant pairs (a right and b wrong, and the reverse);
- a paired bootstrap: examples resampled with replacement, the pooled mean difference recomputed; the
  p-value is two-sided (twice the smaller tail at zero), the 95% interval the percentiles of the resamples.
  When every seed evaluated the same examples (the same test split; the pairs are in example order), an
  example is resampled in all seeds at once: the
  example, not the (seed, example) pair, is the unit, since one base model's outcomes recur in every
  seed's pairs. McNemar's test treats the pooled pairs as independent and is the less conservative one.

Pure functions over booleans; :func:`solved_after_reflection` reads them from ``eval_<label>_episodes.jsonl``.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r3exp.errors import ConfigError

Pairs = list[tuple[bool, bool]]  # per example: (a solved it, b solved it)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under the null, each discordant pair is a's with probability 1/2."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_sums(pairs_per_seed: list[Pairs], resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """(resamples,) pooled sums of the paired differences (a - b) over bootstrap resamples. Seeds of equal
    length are taken to pair the same examples in the same order, and an example is resampled in all of
    them at once; otherwise examples are resampled within each seed (the seeds as strata)."""
    rng = np.random.default_rng(seed)
    sums = np.zeros(resamples)
    if len({len(pairs) for pairs in pairs_per_seed}) == 1:
        differences = np.array([[int(a) - int(b) for a, b in pairs] for pairs in pairs_per_seed]).sum(axis=0)
        return differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].sum(axis=1)
    for pairs in pairs_per_seed:
        if not pairs:
            continue
        differences = np.array([int(a) - int(b) for a, b in pairs])
        sums += differences[rng.integers(0, len(pairs), size=(resamples, len(pairs)))].sum(axis=1)
    return sums


def paired_bootstrap_p(pairs_per_seed: list[Pairs], resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value of the pooled mean difference (a - b) (:func:`bootstrap_sums`)."""
    if sum(len(pairs) for pairs in pairs_per_seed) == 0:
        return 1.0
    return _two_sided(bootstrap_sums(pairs_per_seed, resamples, seed))


def bootstrap_interval(
    pairs_per_seed: list[Pairs], resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval (``level``) of the pooled mean difference (a - b), as fractions:
    the resamples of :func:`bootstrap_sums` divided by the number of pooled pairs."""
    total = sum(len(pairs) for pairs in pairs_per_seed)
    if total == 0:
        return 0.0, 0.0
    means = bootstrap_sums(pairs_per_seed, resamples, seed) / total
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _two_sided(sums: np.ndarray) -> float:
    below, above = np.mean(sums <= 0), np.mean(sums >= 0)
    return float(min(1.0, 2 * min(below, above)))


@dataclass(frozen=True)
class PairedTest:
    """a vs b over seeds. ``gains``: per seed, accuracy of a minus accuracy of b (fractions)."""

    gains: list[float]
    a_only: int
    b_only: int
    examples: int
    mcnemar_p: float
    bootstrap_p: float
    interval: tuple[float, float] = (0.0, 0.0)  # 95% bootstrap interval of the pooled mean difference

    @property
    def mean_gain(self) -> float:
        return statistics.fmean(self.gains)

    @property
    def std_gain(self) -> float:
        return statistics.stdev(self.gains) if len(self.gains) > 1 else 0.0

    def to_dict(self) -> dict:
        return {
            "gains": self.gains,
            "mean_gain": self.mean_gain,
            "std_gain": self.std_gain,
            "a_only": self.a_only,
            "b_only": self.b_only,
            "examples": self.examples,
            "mcnemar_p": self.mcnemar_p,
            "bootstrap_p": self.bootstrap_p,
            "interval_95": list(self.interval),
        }


def paired_test(pairs_per_seed: list[Pairs], resamples: int = 10_000) -> PairedTest:
    """Gains per seed, pooled McNemar and pooled bootstrap (p-value and 95% interval, from the same resamples)
    over ``pairs_per_seed`` (one list per seed)."""
    if not pairs_per_seed or any(not pairs for pairs in pairs_per_seed):
        raise ValueError("a paired test needs at least one seed, each with at least one example")
    gains = [sum(int(a) - int(b) for a, b in pairs) / len(pairs) for pairs in pairs_per_seed]
    a_only = sum(a and not b for pairs in pairs_per_seed for a, b in pairs)
    b_only = sum(b and not a for pairs in pairs_per_seed for a, b in pairs)
    return PairedTest(
        gains,
        a_only,
        b_only,
        sum(len(p) for p in pairs_per_seed),
        mcnemar_exact_p(a_only, b_only),
        paired_bootstrap_p(pairs_per_seed, resamples),
        bootstrap_interval(pairs_per_seed, resamples),
    )


def example_key(example: dict) -> str:
    """An example's identity across evaluations (its fields, without a witness solution)."""
    return json.dumps({k: v for k, v in example.items() if k != "solution"}, sort_keys=True)


def solved_after_reflection(episodes_path: str | Path, first_try_only: bool = False) -> dict[str, bool]:
    """Example key -> solved, from an ``eval_<label>_episodes.jsonl``: on the first try, or (unless
    ``first_try_only``) after one reflection and retry."""
    solved = {}
    with Path(episodes_path).open() as handle:
        for line in handle:
            row = json.loads(line)
            first = bool(row["first_try_success"])
            solved[example_key(row["example"])] = first or (not first_try_only and bool(row["retry_success"]))
    return solved


def pair(a: dict[str, bool], b: dict[str, bool], where: str = "") -> Pairs:
    """The paired outcomes of two evaluations of the same examples, in example-key order (refused, naming
    the runs, when their examples differ: e.g. runs of different ``evaluation.limit`` compared seed by seed)."""
    if a.keys() != b.keys():
        raise ConfigError(
            f"compare.runs: paired evaluations must cover the same examples{where}: "
            f"{len(a.keys() - b.keys())} only in one, {len(b.keys() - a.keys())} only in the other"
        )
    return [(a[key], b[key]) for key in sorted(a)]
