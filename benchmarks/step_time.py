"""Per-step time of R3 training on a config: generation, training, weight sync, tokens per second.

    .venv/bin/python benchmarks/step_time.py [hydra overrides ...]     (default: the main job's config)

Prints a table of every step and the median over steps after the first (warm-up).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from r3exp import CONF_DIR


def main(overrides: list[str]) -> None:
    from r3exp.runtime.components import build_components
    from r3exp.runtime.environment import setup_environment
    from r3exp.runtime.fitting import fit_policy
    from r3exp.tracking.step_timer import StepTimer

    setup_environment()
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"paths.output_dir={out}",
                "run_name=benchmark",
                "logger=none",
                "callbacks.progress.refresh_rate=0",
                "~callbacks.step_timer",
                *overrides,
            ],
        )
        import lightning as L

        L.seed_everything(cfg.seed)
        parts = build_components(cfg)
        timer = StepTimer()
        fit_policy(cfg, parts, Path(cfg.paths.output_dir), extra_callbacks=[timer])
    rows = timer.history
    keys = ["time/step_seconds", "time/generation_seconds", "time/train_seconds", "time/sync_seconds"]
    print(
        f"\n{'step':>4} "
        + " ".join(f"{k.split('/')[1].removesuffix('_seconds'):>10}" for k in keys)
        + f" {'gen tok/s':>10} {'train tok/s':>11}"
    )
    for row in rows:
        train_tps = row["trained_tokens"] / row["time/train_seconds"] if row["time/train_seconds"] else 0.0
        print(
            f"{row['step']:>4} "
            + " ".join(f"{row[k]:>10.3f}" for k in keys)
            + f" {row['generated_tokens_per_second']:>10.0f} {train_tps:>11.0f}"
        )
    steady = rows[1:] or rows
    training = statistics.median(
        r["trained_tokens"] / r["time/train_seconds"] for r in steady if r["time/train_seconds"]
    )
    print(
        "\nmedian over steps 2..n: "
        + ", ".join(f"{k.split('/')[1]} {statistics.median(r[k] for r in steady):.3f}" for k in keys)
        + f", generation {statistics.median(r['generated_tokens_per_second'] for r in steady):.0f} tok/s, training "
        f"{training:.0f} tok/s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
