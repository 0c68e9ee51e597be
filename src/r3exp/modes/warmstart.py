"""``mode=warmstart``: the embedded model's warm start, built (or found), copied out and evaluated."""
from __future__ import annotations

import json

from omegaconf import DictConfig

from r3exp import keys
from r3exp.modes.evaluation_runs import run_evaluation
from r3exp.modes.publishing import publish_results
from r3exp.modes.registry import RunContext, RunResult, mode


@mode("warmstart")
def warmstart_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    """Copy the warm-started model to ``<output_dir>/model`` and evaluate it on the validation split.
    Without a warm start (a hub model, or ``model.warm_start=null``) there is nothing to build: it says
    so and the later stages use the model as configured."""
    import shutil

    parts = ctx.parts
    if not parts.model.is_embedded or parts.model.warm_start is None:
        print(f"mode=warmstart: model {parts.model.name!r} has no warm start (model.warm_start applies to the "
              "embedded model); nothing to build")
        (ctx.run_dir / "warm_start.json").write_text(json.dumps({"skipped": parts.model.name}))
        return RunResult(ctx.run_dir)
    target = ctx.run_dir / "model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(parts.model_path, target)
    result, samples = run_evaluation(cfg, parts, keys.WARM_START, split="validation")
    return publish_results(cfg, ctx, RunResult(ctx.run_dir, model=target, results={keys.WARM_START: result}),
                           {keys.WARM_START: samples}, logger=False)
