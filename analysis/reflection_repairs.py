"""What limits reflection on Countdown: reflection quality or the retry's faithfulness to it.

    .venv/bin/python analysis/reflection_repairs.py outputs/runs/<run>/eval_base_episodes.jsonl [more ...]

For each evaluation episodes file (written by every evaluation): failed first attempts, how many one
change would fix, how many reflections name a change that fits the attempt ("I should use 7 instead of
the second 8."), how many name the right change, how often the retry applies it, how often the retry
repeats the failed attempt word for word, and retry successes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from r3exp.evaluation.reflection_repairs import repair_statistics


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit(__doc__)
    columns = None
    for path in paths:
        episodes = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        stats = repair_statistics(episodes)
        if columns is None:
            columns = list(stats)
            print("| file | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
        print(f"| {path} | " + " | ".join(str(stats[c]) for c in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
