"""Would a better reflection help? Countdown retries of a model given every repair its reflection could name.

    .venv/bin/python analysis/retry_follows_repair.py <model dir> <run>/eval_base_episodes.jsonl [task overrides]

For each failed first attempt in the episodes file, the model's own reflection keeps its first sentences and
its last one (the repair) is replaced by each single change of the attempt ("I should use * instead of
the first +."); the model then retries greedily. Prints how often a retry makes the named change and how
often it repeats the attempt, how many failures one change would fix, how many of those the retry fixes
when the reflection names the right change (the ceiling of what R3 can teach the reflection), how many
some named change fixes, and the fixes to expect from a change named at random, next to the model's own
reflections. Task overrides as in the command line
(default: task=countdown_easy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from r3exp.rollout.engines.hf_engine import HFEngine
from r3exp.rollout.engines.interface import SamplingConfig
from r3exp.rollout.episodes import ChatRenderer
from r3exp.tasks.countdown import extract_answer, is_correct
from r3exp.tasks.countdown_reflections import REPAIR, repairs


def load_task(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from r3exp import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return instantiate(cfg.task)


def main(model: str, episodes_path: str, overrides: list[str]) -> None:
    task = load_task(overrides)
    engine = HFEngine(model, batch_size=256)
    render = ChatRenderer(engine.tokenizer)
    episodes = [json.loads(line) for line in Path(episodes_path).read_text().splitlines() if line.strip()]
    failures = [ep for ep in episodes if not ep["first_try_success"]]
    trials = []  # (failure index, the change is right, the changed attempt, reflection)
    for index, ep in enumerate(failures):
        attempt = extract_answer(ep["first_attempt"] or "")
        if attempt is None:
            continue
        found = REPAIR.search(ep["reflection"] or "")
        prefix = (ep["reflection"] or "")[: found.start()] if found else (ep["reflection"] or "") + " "
        for repair in repairs(attempt, ep["example"]["nums"]):
            changed = repair.apply(attempt)
            right = is_correct(changed, ep["example"]["nums"], ep["example"]["target"])
            trials.append((index, right, changed, prefix + repair.sentence(attempt)))
    prompts = [
        render.for_task(
            task,
            failures[i]["example"],
            task.retry_messages(failures[i]["example"], failures[i]["first_attempt"], reflection),
        )
        for i, _, _, reflection in trials
    ]
    retries = engine.generate(prompts, 1, SamplingConfig(max_tokens=64, temperature=0.0))
    by_failure: dict[int, list[tuple[bool, bool]]] = {}
    follows = repeats = 0
    for (index, right, changed, _), group in zip(trials, retries):
        by_failure.setdefault(index, []).append((right, task.validate(failures[index]["example"], group[0].text)))
        retry = (extract_answer(group[0].text) or "").split()
        follows += retry == changed.split()
        repeats += retry == extract_answer(failures[index]["first_attempt"]).split()
    fixable = [v for v in by_failure.values() if any(right for right, _ in v)]
    print(f"{episodes_path}: {len(failures)} failed first attempts, {len(trials)} named changes")
    print(f"  the retry makes the named change: {follows}; repeats the attempt: {repeats}")
    print(f"  one change fixes: {len(fixable)}")
    print(
        f"  retry fixes them when the reflection names the right change: "
        f"{sum(any(ok for right, ok in v if right) for v in fixable)} of {len(fixable)}"
    )
    print(f"  some named change leads to a fix: {sum(any(ok for _, ok in v) for v in by_failure.values())}")
    print(
        f"  expected fixes, a change named at random: "
        f"{sum(sum(ok for _, ok in v) / len(v) for v in by_failure.values()):.1f}"
    )
    print(f"  fixes with the model's own reflections: {sum(bool(ep['retry_success']) for ep in failures)}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
