"""``mode=main`` (the default): the base model evaluated, trained with R3, the trained policy evaluated."""

from __future__ import annotations

import time

from hydra.utils import instantiate
from omegaconf import DictConfig

from r3exp import distributed, keys
from r3exp.errors import ConfigError
from r3exp.evaluation.general_ability import check as check_general_ability
from r3exp.runtime.fitting import train_and_record
from r3exp.runtime.general_ability_runs import run_forgetting
from r3exp.runtime.policy_evaluation import run_base_evaluation, run_evaluation
from r3exp.runtime.publishing import publish_results
from r3exp.runtime.run import ModeResult, Run


def check(cfg: DictConfig) -> None:
    """``forgetting.enabled``: lm-eval's tasks load here, in one process (before the engine starts)."""
    if cfg.forgetting.enabled:
        if distributed.world_size() > 1:
            raise ConfigError(
                "forgetting.enabled with several ranks: lm-eval runs in one process; run "
                "mode=forgetting forgetting.policy=<run dir>/policy/merged after the job"
            )
        check_general_ability(instantiate(cfg.forgetting))


def main_mode(run: Run) -> ModeResult:
    """Evaluate the base model, train, evaluate the trained policy: the paper's table (and, with
    ``forgetting.enabled``, the general ability of both through lm-eval)."""
    started = time.perf_counter()
    base, base_samples, reused = run_base_evaluation(run)
    run.phases.add("base evaluation (reused)" if reused else "base evaluation", time.perf_counter() - started)
    policy = train_and_record(run)
    with run.phases("trained evaluation"):
        trained, trained_samples = run_evaluation(run, keys.TRAINED)
    produced = ModeResult(run.run_dir, results={keys.BASE: base, keys.TRAINED: trained}, policy=policy)
    if run.cfg.forgetting.enabled and distributed.is_main():
        run.parts.engine.close()  # its memory goes to lm-eval's own model
        with run.phases("forgetting check"):
            produced.forgetting = run_forgetting(run.cfg, run.run_dir, run.parts.model_path, policy["merged"])
    return publish_results(run, produced, {keys.BASE: base_samples, keys.TRAINED: trained_samples})
