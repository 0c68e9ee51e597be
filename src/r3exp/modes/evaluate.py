"""``mode=evaluate``: the configured model on the evaluation split (every rank its shard)."""

from __future__ import annotations

from r3exp.runtime.policy_evaluation import run_evaluation
from r3exp.runtime.publishing import publish_results
from r3exp.runtime.run import ModeResult, Run


def evaluate_mode(run: Run) -> ModeResult:
    """Evaluate the configured model (``evaluation.label``, else the model's name)."""
    label = run.cfg.evaluation.get("label") or run.parts.model.name
    result, samples = run_evaluation(run, label)
    return publish_results(run, ModeResult(run.run_dir, results={label: result}), {label: samples})
