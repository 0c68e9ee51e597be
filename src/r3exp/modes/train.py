"""``mode=train``: R3 training alone, the policy exported."""
from __future__ import annotations

from omegaconf import DictConfig

from r3exp import distributed
from r3exp.modes.publishing import build_logger
from r3exp.modes.registry import RunContext, RunResult, mode
from r3exp.modes.training import train_and_record


@mode("train", ranked=True)
def train_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    logger = build_logger(cfg, ctx.provenance) if distributed.is_main() else False
    return RunResult(ctx.run_dir, policy=train_and_record(cfg, ctx, logger))
