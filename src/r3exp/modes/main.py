"""``mode=main`` (the default): the base model evaluated, trained with R3, the trained policy evaluated."""
from __future__ import annotations

import time

from hydra.utils import instantiate
from omegaconf import DictConfig

from r3exp import distributed, keys
from r3exp.errors import ConfigError
from r3exp.evaluation.general_ability import check as check_general_ability
from r3exp.modes.evaluation_runs import run_base_evaluation, run_evaluation
from r3exp.modes.forgetting import run_forgetting
from r3exp.modes.publishing import build_logger, publish_results
from r3exp.modes.registry import RunContext, RunResult, mode
from r3exp.modes.training import train_and_record


@mode("main", ranked=True)
def main_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    """Evaluate the base model, train, evaluate the trained policy: the paper's table (and, with
    ``forgetting.enabled``, the general ability of both through lm-eval)."""
    if cfg.forgetting.enabled:
        if distributed.world_size() > 1:
            raise ConfigError("forgetting.enabled with several ranks: lm-eval runs in one process; run "
                              "mode=forgetting forgetting.policy=<run dir>/policy/merged after the job")
        check_general_ability(instantiate(cfg.forgetting))  # before training, not after
    logger = build_logger(cfg, ctx.provenance) if distributed.is_main() else False
    started = time.perf_counter()
    base, base_samples, reused = run_base_evaluation(cfg, ctx.parts)
    ctx.phases.add("base evaluation (reused)" if reused else "base evaluation", time.perf_counter() - started)
    policy = train_and_record(cfg, ctx, logger)
    with ctx.phases("trained evaluation"):
        trained, trained_samples = run_evaluation(cfg, ctx.parts, keys.TRAINED)
    produced = RunResult(ctx.run_dir, results={keys.BASE: base, keys.TRAINED: trained}, policy=policy)
    if cfg.forgetting.enabled and distributed.is_main():
        ctx.parts.engine.close()  # its memory goes to lm-eval's own model
        with ctx.phases("forgetting check"):
            produced.forgetting = run_forgetting(cfg, ctx.run_dir, ctx.parts.model_path, policy["merged"])
    return publish_results(cfg, ctx, produced, {keys.BASE: base_samples, keys.TRAINED: trained_samples}, logger)
