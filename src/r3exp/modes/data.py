"""``mode=data``: the task's splits as JSONL files, for DVC and for ``task.source``."""
from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from r3exp.modes.registry import RunContext, RunResult, mode
from r3exp.modes.setup import output_dir
from r3exp.tasks.base import SPLITS
from r3exp.tasks.hub import write_jsonl


@mode("data", engine=False)
def data_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    return RunResult(ctx.run_dir, data=run_data(cfg))


def run_data(cfg: DictConfig) -> Path:
    """Write the task's splits as JSONL (``<output_dir>/<split>.jsonl``); ``task.source=<that dir>`` reads them."""
    task = instantiate(cfg.task)
    sizes = {}
    for split in SPLITS:
        rows = list(task.examples(split))
        write_jsonl(rows, output_dir(cfg) / f"{split}.jsonl")
        sizes[split] = len(rows)
    (output_dir(cfg) / "data.json").write_text(json.dumps(
        {"task": task.name, "source": cfg.task.get("source"), "seed": cfg.seed, "sizes": sizes}, indent=2))
    print(f"{task.name} splits {sizes} -> {output_dir(cfg)}")
    return output_dir(cfg)
