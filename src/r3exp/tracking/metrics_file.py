"""The training curves as a plain CSV in the run directory (``train_metrics.csv``), one row per optimizer
step, for readers without W&B: DVC plots, ``mode=compare`` and the analysis notebook.

A resumed run appends to the file; it restarts at its checkpoint's step, so a step may appear twice
(the crashed attempt's row, then the resumed one): readers keep the last row per step
(:func:`read_metrics`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L

from r3exp import keys

COLUMNS = {  # CSV column: logged metric
    "reward": keys.REWARD_MEAN,
    "retry_success": keys.RETRY_SUCCESS,
    "first_try_success": keys.FIRST_TRY_SUCCESS,
    "reflection_length": keys.REFLECTION_LENGTH,
    "reflections_truncated": keys.REFLECTIONS_TRUNCATED,
    "frac_reward_zero_std": keys.FRAC_REWARD_ZERO_STD,
    "follow_rate": keys.FOLLOW_RATE,
    "sampled_tokens": keys.SAMPLED_TOKENS,
    "loss": keys.LOSS,
    "kl": keys.KL,
    "clip_ratio": keys.CLIP_RATIO_REGION,
    "skipped": keys.SKIPPED,
    # the largest |trainer - engine| log-prob of a sampled reflection token: ~0 when the engine holds the
    # trainer's weights (a weight-sync check)
    "logprob_diff_max": keys.LOGPROB_DIFF_MAX,
}
FILENAME = "train_metrics.csv"


class MetricsFile(L.Callback):
    """Appends ``step`` and :data:`COLUMNS` to ``<run dir>/train_metrics.csv`` once per rollout (per
    optimizer step when ``mu`` = 1); empty cells for metrics a step did not log (the loss of a skipped
    step). ``step`` is the policy version that generated the rollout."""

    def __init__(self, filename: str = FILENAME):
        self.filename = filename

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        record = module.last_step  # r3exp.records.StepRecord
        if not trainer.is_global_zero or not record.finished_rollout:
            return
        metrics = record.metrics
        row = {"step": record.rollout_step}
        for column, key in COLUMNS.items():
            value = metrics.get(key)
            row[column] = "" if value is None else float(value)
        path = Path(trainer.default_root_dir) / self.filename
        new = not path.exists()
        # a run resumed by a newer r3exp appends under the file's own header
        fields = ["step", *COLUMNS] if new else path.open().readline().strip().split(",")
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """The rows of a ``train_metrics.csv``, one per step (the last row wins), as floats (None if empty)."""
    by_step: dict[int, dict] = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            by_step[int(row["step"])] = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
    return [by_step[step] for step in sorted(by_step)]
