"""``mode=compare``: the paper's table over a set of runs, with paired tests, plots and a W&B report."""

from __future__ import annotations

from r3exp.errors import ConfigError
from r3exp.results.across_runs import collect_runs
from r3exp.results.outputs import write_comparison
from r3exp.results.report import ReportUnavailable, build_report, publish_report, write_report
from r3exp.results.wandb_runs import runs_from_wandb
from r3exp.runtime.run import ModeResult, Run


def compare_mode(run: Run) -> ModeResult:
    """The paper's table over runs (a directory of runs, or a W&B group online), as Markdown, CSV, PNGs
    and a W&B report definition; ``compare.publish`` also publishes the report."""
    spec = run.cfg.compare
    if spec.runs:
        try:
            runs = collect_runs(spec.runs)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
    elif spec.wandb_group:
        runs = runs_from_wandb(spec.entity, spec.project, spec.wandb_group)
    else:
        raise ConfigError("mode=compare needs compare.runs=<multirun dir> or compare.wandb_group=<group>")
    produced = write_comparison(runs, run.run_dir)
    table, rows = produced["text"], produced["rows"]
    groups = [spec.wandb_group] if spec.wandb_group else sorted({r.wandb_group for r in runs if r.wandb_group})
    report = build_report(f"R3: {', '.join(sorted({r.task for r in runs}))}", table, spec.entity, spec.project, groups)
    produced["report"] = write_report(report, run.run_dir / "report.json")
    print(f"{len(runs)} runs, {len(rows)} rows -> {run.run_dir}\n{table}")
    if spec.publish:
        try:
            print(f"W&B report: {publish_report(report)}")
        except ReportUnavailable as err:
            raise ConfigError(str(err)) from None
    return ModeResult(run.run_dir, comparison=produced)
