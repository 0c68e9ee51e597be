"""``mode=data``: the task's splits as JSONL files, for DVC and for ``task.source``."""

from __future__ import annotations

import json

from hydra.utils import instantiate

from r3exp.runtime.run import ModeResult, Run
from r3exp.tasks.base import SPLITS
from r3exp.tasks.hub import write_jsonl


def data_mode(run: Run) -> ModeResult:
    """Write the task's splits as JSONL (``<run dir>/<split>.jsonl``); ``task.source=<that dir>`` reads them."""
    task = instantiate(run.cfg.task)
    sizes = {}
    for split in SPLITS:
        rows = list(task.examples(split))
        write_jsonl(rows, run.run_dir / f"{split}.jsonl")
        sizes[split] = len(rows)
    (run.run_dir / "data.json").write_text(
        json.dumps(
            {"task": task.name, "source": run.cfg.task.get("source"), "seed": run.cfg.seed, "sizes": sizes}, indent=2
        )
    )
    print(f"{task.name} splits {sizes} -> {run.run_dir}")
    return ModeResult(run.run_dir, data=run.run_dir)
