"""The paired statistics behind the R3-vs-base and R3-vs-GRPO claims, on outcomes written here."""

from __future__ import annotations

import json
import math

import pytest

from r3exp.errors import ConfigError
from r3exp.results.across_runs import collect_runs, comparison_rows, paired_comparisons, paired_markdown
from r3exp.results.paired import (
    bootstrap_interval,
    mcnemar_exact_p,
    pair,
    paired_bootstrap_p,
    paired_test,
    solved_after_reflection,
)
from tests.test_compare import write_run


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    assert mcnemar_exact_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 0.0386
    assert mcnemar_exact_p(2, 10) == mcnemar_exact_p(10, 2)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(8, 0) == pytest.approx(2 / 2**8)


def test_bootstrap_p_is_one_without_a_difference_and_small_with_a_consistent_one():
    same = [[(True, True), (False, False), (True, False), (False, True)] * 10]
    assert paired_bootstrap_p(same) == pytest.approx(1.0, abs=0.05)
    better = [[(True, False)] * 30 + [(False, False)] * 70, [(True, False)] * 25 + [(True, True)] * 75]
    assert paired_bootstrap_p(better) == 0.0
    assert paired_bootstrap_p(better) == paired_bootstrap_p(better)  # seeded
    # a gain of 3 discordant pairs in 200 examples is not significant
    weak = [[(True, False)] * 8 + [(False, True)] * 5 + [(False, False)] * 187]
    assert 0.3 < paired_bootstrap_p(weak) <= 1.0


def test_bootstrap_interval_is_the_spread_of_the_pooled_mean_difference():
    """A gain of 0.5 on 400 examples (a right where b is wrong on half of them): the interval is the normal
    approximation's 0.5 ± 1.96 · sqrt(0.25 / 400); it excludes 0 exactly when the two-sided p is below 0.05."""
    pairs = [[(True, False)] * 200 + [(False, False)] * 200]
    low, high = bootstrap_interval(pairs)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.005) and high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.005)
    assert bootstrap_interval([[(True, False)] * 10]) == (1.0, 1.0)
    for case in (
        [[(True, False)] * 8 + [(False, True)] * 5 + [(False, False)] * 187],
        [[(True, False)] * 14 + [(False, True)] * 4 + [(False, False)] * 182],
    ):
        low, high = bootstrap_interval(case)
        assert (low > 0) == (paired_bootstrap_p(case) < 0.05), (low, high, paired_bootstrap_p(case))
    test = paired_test(pairs)
    assert test.interval == bootstrap_interval(pairs) and test.to_dict()["interval_95"] == list(test.interval)


def test_bootstrap_resamples_an_example_in_every_seed_at_once():
    """Seeds evaluated on the same examples repeat the same evidence: three identical seeds are worth one,
    not three (resampling within each seed would call them three times the evidence)."""
    one = [(True, False)] * 6 + [(False, True)] * 2 + [(False, False)] * 42
    assert paired_bootstrap_p([one] * 3) == paired_bootstrap_p([one])
    assert paired_bootstrap_p([one] * 3) > paired_bootstrap_p([one, one, one + [(False, False)]])  # as strata


def test_paired_test_pools_seeds_and_keeps_per_seed_gains():
    seed0 = [(True, False)] * 6 + [(False, True)] * 2 + [(True, True)] * 12  # +20 points of 20
    seed1 = [(True, False)] * 3 + [(False, False)] * 17  # +15 points
    test = paired_test([seed0, seed1])
    assert test.gains == pytest.approx([0.2, 0.15])
    assert test.mean_gain == pytest.approx(0.175) and test.std_gain == pytest.approx(math.sqrt(2) * 0.025)
    assert (test.a_only, test.b_only, test.examples) == (9, 2, 40)
    assert test.mcnemar_p == pytest.approx(mcnemar_exact_p(9, 2))
    with pytest.raises(ValueError, match="at least one"):
        paired_test([seed0, []])


def write_episodes(path, outcomes):
    """outcomes: per example (first_try_success, retry_success or None)."""
    with path.open("w") as handle:
        for i, (first, retry) in enumerate(outcomes):
            handle.write(
                json.dumps(
                    {
                        "example": {"nums": [i, 1], "target": i + 1, "solution": "x"},
                        "first_try_success": first,
                        "retry_success": retry,
                    }
                )
                + "\n"
            )


def test_solved_after_reflection_reads_first_try_or_retry_and_pairs_by_example(tmp_path):
    write_episodes(tmp_path / "a.jsonl", [(True, None), (False, True), (False, False)])
    assert list(solved_after_reflection(tmp_path / "a.jsonl").values()) == [True, True, False]
    assert list(solved_after_reflection(tmp_path / "a.jsonl", first_try_only=True).values()) == [True, False, False]
    write_episodes(tmp_path / "b.jsonl", [(False, False), (False, False)])
    with pytest.raises(ConfigError, match="same examples"):
        pair(solved_after_reflection(tmp_path / "a.jsonl"), solved_after_reflection(tmp_path / "b.jsonl"))


def test_compare_tests_trained_vs_base_and_every_pair_of_arms_seed_by_seed(tmp_path):
    base = [(False, False)] * 10
    for seed in (0, 1):
        for protocol, trained in (
            ("r3", [(False, True)] * 4 + [(False, False)] * 6),
            ("grpo", [(True, None)] * 1 + [(False, False)] * 9),
            ("r3_grpo", [(True, None)] * 2 + [(False, True)] * 3 + [(False, False)] * 5),
        ):
            run = tmp_path / f"{protocol}{seed}"
            write_run(run, seed, [f"seed={seed}", f"rollout.protocol={protocol}"], (0, 0), (0, 0))
            write_episodes(run / "eval_base_episodes.jsonl", base)
            write_episodes(run / "eval_trained_episodes.jsonl", trained)
    rows = comparison_rows(collect_runs(tmp_path))
    found = {(c.a, c.b, c.measure): c.test for c in paired_comparisons(rows)}
    assert set(found) == {
        ("rollout.protocol=r3 trained", "rollout.protocol=r3 base", "after reflection"),
        ("rollout.protocol=r3 trained", "rollout.protocol=r3 base", "first try"),
        ("rollout.protocol=grpo trained", "rollout.protocol=grpo base", "after reflection"),
        ("rollout.protocol=grpo trained", "rollout.protocol=grpo base", "first try"),
        ("rollout.protocol=r3 trained", "rollout.protocol=grpo trained", "after reflection"),
        ("rollout.protocol=r3 trained", "rollout.protocol=grpo trained", "first try"),
        *[
            (f"rollout.protocol=r3_grpo {model}", f"rollout.protocol=r3_grpo {base}", measure)
            for model, base in (("trained", "base"),)
            for measure in ("after reflection", "first try")
        ],
        *[
            ("rollout.protocol=r3_grpo trained", f"rollout.protocol={other} trained", measure)
            for other in ("r3", "grpo")
            for measure in ("after reflection", "first try")
        ],
    }
    r3_vs_base = found[("rollout.protocol=r3 trained", "rollout.protocol=r3 base", "after reflection")]
    assert r3_vs_base.gains == [0.4, 0.4] and (r3_vs_base.a_only, r3_vs_base.b_only) == (8, 0)
    r3_vs_grpo = found[("rollout.protocol=r3 trained", "rollout.protocol=grpo trained", "first try")]
    assert r3_vs_grpo.gains == [-0.1, -0.1] and (r3_vs_grpo.a_only, r3_vs_grpo.b_only) == (0, 2)
    both_vs_grpo = found[("rollout.protocol=r3_grpo trained", "rollout.protocol=grpo trained", "after reflection")]
    assert both_vs_grpo.gains == [0.4, 0.4] and (both_vs_grpo.a_only, both_vs_grpo.b_only) == (8, 0)
    both_vs_r3 = found[("rollout.protocol=r3_grpo trained", "rollout.protocol=r3 trained", "first try")]
    assert both_vs_r3.gains == [0.2, 0.2]
    table = paired_markdown(paired_comparisons(rows))
    assert (
        "| rollout.protocol=r3 trained | rollout.protocol=r3 base | after reflection | +40.0, +40.0 | +40.0 | 8 / 0 "
        "| 20 |" in table
    )
