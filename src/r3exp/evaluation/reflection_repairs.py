"""Countdown reflections measured: does a reflection name the right repair, and does the retry apply it?

Reads evaluation episodes (``eval_<label>_episodes.jsonl``); ``analysis/reflection_repairs.py`` prints
the figures for a set of runs. Repairs are the sentences the warm start teaches ("I should use 7 instead
of the second 8."; ``r3exp.tasks.countdown_reflections``).
"""

from __future__ import annotations

from r3exp.records import EpisodeRecord
from r3exp.tasks.countdown import extract_answer, is_correct
from r3exp.tasks.countdown_reflections import apply_repair, repairs


def repair_statistics(episodes: list[EpisodeRecord]) -> dict[str, int]:
    """How reflections on failed first attempts fare, from evaluation episodes (``eval_*_episodes.jsonl``
    rows): how many failures one change would fix, how many reflections name a change that fits the
    attempt, how many name the right one, how often the retry applies the named change, how often it
    repeats the failed attempt word for word, how often it succeeds. It separates a reflection's quality
    from the retry's faithfulness to it."""
    counts = dict.fromkeys(
        [
            "episodes",
            "failures",
            "one_change_fixes",
            "repair_fits",
            "repair_right",
            "retry_applies_repair",
            "retry_repeats_attempt",
            "retry_success",
        ],
        0,
    )
    for ep in episodes:
        counts["episodes"] += 1
        if ep["first_try_success"]:
            continue
        counts["failures"] += 1
        counts["retry_success"] += bool(ep.get("retry_success"))
        nums, target = ep["example"]["nums"], ep["example"]["target"]
        attempt = extract_answer(ep.get("first_attempt") or "")
        if attempt is None:
            continue
        retry = extract_answer(ep.get("retry") or "")
        counts["retry_repeats_attempt"] += retry is not None and retry.split() == attempt.split()
        counts["one_change_fixes"] += any(is_correct(r.apply(attempt), nums, target) for r in repairs(attempt, nums))
        repaired = apply_repair(attempt, ep.get("reflection") or "")
        if repaired is None:
            continue
        counts["repair_fits"] += 1
        counts["repair_right"] += is_correct(repaired, nums, target)
        counts["retry_applies_repair"] += retry is not None and retry.split() == repaired.split()
    return counts
