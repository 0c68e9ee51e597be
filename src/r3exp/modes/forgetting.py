"""``mode=forgetting``: general ability (lm-eval) of the base model and a trained policy, side by side;
also the forgetting check of ``mode=main`` with ``forgetting.enabled``."""

from __future__ import annotations

from pathlib import Path

from r3exp import distributed
from r3exp.errors import ConfigError
from r3exp.evaluation import save_results
from r3exp.evaluation.general_ability import forgetting_table
from r3exp.runtime.components import resolve_model
from r3exp.runtime.general_ability_runs import run_forgetting
from r3exp.runtime.publishing import forgetting_record
from r3exp.runtime.run import ModeResult, Run


def forgetting_mode(run: Run) -> ModeResult:
    """General ability of the configured model (``base``) and of ``forgetting.policy`` (``trained``)."""
    policy = run.cfg.forgetting.get("policy")
    if policy and not (Path(policy) / "config.json").exists():  # before the base model is built or converted
        raise ConfigError(f"forgetting.policy={policy!r}: no model there (a run's <run dir>/policy/merged)")
    _, model, path = resolve_model(run.cfg)
    produced = ModeResult(run.run_dir, forgetting=run_forgetting(run.cfg, run.run_dir, path, policy))
    if distributed.is_main():
        produced.results_path = save_results({}, run.run_dir / "results.json", forgetting=forgetting_record(produced))
        print(f"\ngeneral ability (lm-eval) · {model.name}\n{forgetting_table(produced.forgetting)}")
    return produced
