"""``mode=compare``: the paper's table over a set of runs, with paired tests, plots and a W&B report."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from r3exp.errors import ConfigError
from r3exp.modes.registry import RunContext, RunResult, mode
from r3exp.modes.setup import output_dir


@mode("compare", engine=False)
def compare_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    return RunResult(ctx.run_dir, comparison=run_compare(cfg))


def run_compare(cfg: DictConfig) -> dict[str, Any]:
    """The paper's table over runs (a directory of runs, or a W&B group online), as Markdown, CSV, PNGs
    and a W&B report definition; ``compare.publish`` also publishes the report."""
    from r3exp.results.compare import collect_runs
    from r3exp.results.outputs import write_comparison
    from r3exp.results.report import ReportUnavailable, build_report, publish_report, write_report

    spec = cfg.compare
    if spec.runs:
        try:
            runs = collect_runs(spec.runs)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
    elif spec.wandb_group:
        from r3exp.results.wandb_runs import runs_from_wandb

        runs = runs_from_wandb(spec.entity, spec.project, spec.wandb_group)
    else:
        raise ConfigError("mode=compare needs compare.runs=<multirun dir> or compare.wandb_group=<group>")
    out = output_dir(cfg)
    produced = write_comparison(runs, out)
    table, rows = produced["text"], produced["rows"]
    groups = [spec.wandb_group] if spec.wandb_group else sorted({r.wandb_group for r in runs if r.wandb_group})
    report = build_report(f"R3: {', '.join(sorted({r.task for r in runs}))}", table, spec.entity, spec.project, groups)
    produced["report"] = write_report(report, out / "report.json")
    print(f"{len(runs)} runs, {len(rows)} rows -> {out}\n{table}")
    if spec.publish:
        try:
            print(f"W&B report: {publish_report(report)}")
        except ReportUnavailable as err:
            raise ConfigError(str(err)) from None
    return produced
