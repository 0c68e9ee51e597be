"""``mode=evaluate``: the configured model on the evaluation split (every rank its shard)."""
from __future__ import annotations

from omegaconf import DictConfig

from r3exp.modes.evaluation_runs import run_evaluation
from r3exp.modes.publishing import publish_results
from r3exp.modes.registry import RunContext, RunResult, mode


@mode("evaluate", ranked=True)
def evaluate_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    """Evaluate the configured model (``evaluation.label``, else the model's name)."""
    label = cfg.evaluation.get("label") or ctx.parts.model.name
    result, samples = run_evaluation(cfg, ctx.parts, label)
    return publish_results(cfg, ctx, RunResult(ctx.run_dir, results={label: result}), {label: samples},
                           logger=False)
