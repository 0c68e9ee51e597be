"""What a run leaves behind: ``results.json``, the printed tables, and W&B (the logger, its run id,
the results and samples, its end)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp import distributed, keys
from r3exp.evaluation import format_table, save_results
from r3exp.evaluation.general_ability import differences, forgetting_table
from r3exp.runtime.environment import job_overrides
from r3exp.runtime.run import ModeResult, Run
from r3exp.timing import install_seconds
from r3exp.tracking.wandb_run import log_evaluation, log_forgetting, log_provenance


def build_logger(cfg: DictConfig, run_dir: Path, provenance: dict):
    """The configured logger (``logger``; W&B by default), its run id kept in the run directory, the config and
    provenance logged; ``False`` when ``logger`` is null."""
    if not cfg.get("logger"):
        return False
    extra = {"save_dir": str(run_dir)}
    if cfg.logger.get("_target_", "").endswith("WandbLogger"):
        extra.update(id=wandb_run_id(run_dir), resume="allow")  # a resumed run continues its W&B run
    if cfg.get("experiment_name") and "tags" in cfg.logger:
        extra["tags"] = [*cfg.logger.tags, cfg.experiment_name]
    logger = instantiate(cfg.logger, **extra)
    if getattr(logger, "_wandb_init", {}).get("anonymous", False) is None:
        # Lightning 2.6 always passes anonymous=None, which wandb >= 0.22 answers with a deprecation warning
        del logger._wandb_init["anonymous"]
    logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "overrides": job_overrides()})
    log_provenance(logger, provenance)
    return logger


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory: made on the first start, read back by every resume."""
    path = run_dir / "wandb_run_id"
    if not path.exists():
        path.write_text(secrets.token_hex(4))  # W&B ids: lowercase letters and digits
    return path.read_text().strip()


def publish_results(run: Run, produced: ModeResult, samples: dict[str, list[dict]]) -> ModeResult:
    """Rank 0: write ``results.json``, print the table, log the results and samples to the run's logger (when
    it has one). Every rank holds the results (and returns them)."""
    if not distributed.is_main():
        return produced
    produced.results_path = save_results(
        produced.results,
        run.run_dir / "results.json",
        forgetting=forgetting_record(produced),
        phases=run.phases.to_dict(),
    )
    split = next(iter(produced.results.values())).split
    print(f"\n{run.parts.task.name} · {run.parts.model.name} · {split} split\n{format_table(produced.results)}")
    if produced.forgetting:
        print(f"\ngeneral ability (lm-eval)\n{forgetting_table(produced.forgetting)}")
    print(f"\nwhere the time went\n{run.phases.table(install_seconds())}")
    logger = run.logger
    if logger:
        logger.log_metrics(
            {
                keys.eval_key(name, key): value
                for name, r in produced.results.items()
                for key, value in r.to_dict().items()
                if isinstance(value, (int, float))
            }
        )
        logger.log_metrics(
            {
                keys.eval_key(name, f"{group}/{key}"): value
                for name, r in produced.results.items()
                for group, g in (r.groups or {}).items()
                for key, value in g.to_dict().items()
                if isinstance(value, (int, float))
            }
        )
        log_evaluation(logger, {name: r.to_dict() for name, r in produced.results.items()}, samples)
        log_forgetting(logger, produced.forgetting)
    return produced


def forgetting_record(produced: ModeResult) -> dict:
    """``results.json``'s ``forgetting``: the scores by label, and trained minus base."""
    return {**produced.forgetting, "difference": differences(produced.forgetting)} if produced.forgetting else {}


def finish_wandb() -> None:
    """Close the W&B run of this process, if one was started (W&B flushes and, online, syncs it)."""
    if "wandb" in sys.modules:
        import wandb  # noqa: PLC0415 - optional (r3exp[wandb]); a run that logged has imported it already

        if wandb.run is not None:
            wandb.finish()
