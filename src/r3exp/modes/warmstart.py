"""``mode=warmstart``: the embedded model's warm start, built (or found), copied out and evaluated."""

from __future__ import annotations

import json
import shutil

from r3exp import keys
from r3exp.runtime.policy_evaluation import run_evaluation
from r3exp.runtime.publishing import publish_results
from r3exp.runtime.run import ModeResult, Run


def warmstart_mode(run: Run) -> ModeResult:
    """Copy the warm-started model to ``<run dir>/model`` and evaluate it on the validation split.
    Without a warm start (a hub model, or ``model.warm_start=null``) there is nothing to build: it says
    so and the later stages use the model as configured."""
    parts = run.parts
    if not parts.model.is_embedded or parts.model.warm_start is None:
        print(
            f"mode=warmstart: model {parts.model.name!r} has no warm start (model.warm_start applies to the "
            "embedded model); nothing to build"
        )
        (run.run_dir / "warm_start.json").write_text(json.dumps({"skipped": parts.model.name}))
        return ModeResult(run.run_dir)
    target = run.run_dir / "model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(parts.model_path, target)
    result, samples = run_evaluation(run, keys.WARM_START, split="validation")
    return publish_results(
        run, ModeResult(run.run_dir, model=target, results={keys.WARM_START: result}), {keys.WARM_START: samples}
    )
