"""The figures of a main job's run directory (benchmarks/gpu_main_job.sh prints them): each phase's seconds
(``results.json``), and per step the generation and training seconds, the generated tokens/s and the peak
memory (``logger=csv``'s ``metrics.csv``).

    python benchmarks/gpu_main_job_figures.py <run dir>

Standard library only: it runs where only the job's own interpreter is.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

STEP_COLUMNS = {
    "time/step_seconds": "step s",
    "time/generation_seconds": "generation s",
    "time/train_seconds": "training s",
    "rollout/generated_tokens_per_second": "generated tok/s",
    "train/tokens_per_second": "trained tok/s",
    "memory/peak_gib": "peak memory GiB",
}


def number(text: str) -> str:
    value = float(text)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def main(run_dir: Path) -> int:
    results = json.loads((run_dir / "results.json").read_text())
    print("| phase | seconds |\n|---|---|")
    for phase, seconds in results["phases"].items():
        print(f"| {phase} | {seconds:.1f} |")
    for arm in ("base", "trained"):
        if arm in results:
            r = results[arm]
            print(
                f"{arm}: {r['total']} test examples, first try {r['first_try_correct']}, "
                f"after reflection {r['after_reflection_correct']}"
            )
    logged = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    if not logged:
        print("no csv logger metrics (logger=csv) in", run_dir)
        return 1
    by_step: dict[int, dict[str, str]] = {}
    for row in csv.DictReader(logged[-1].open()):  # Lightning writes one step's metrics over several rows
        step = by_step.setdefault(int(row["step"]), {})
        step.update({k: v for k, v in row.items() if v not in ("", None)})
    columns = [c for c in STEP_COLUMNS if any(c in row for row in by_step.values())]
    print("| step | " + " | ".join(STEP_COLUMNS[c] for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for step, row in sorted(by_step.items()):
        if "time/step_seconds" in row:
            print(f"| {step} | " + " | ".join(number(row[c]) if c in row else "-" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
