"""The paper's table across runs: collect the results of a set of runs (a multirun directory, any tree of
run directories) and compare base and trained models, first try and after reflection.

Each run directory holds ``results.json`` (``mode=main``: ``base`` and ``trained``), ``.hydra/config.yaml``
and, when it trained, ``train_metrics.csv``. Runs that differ only in their seed are one row (mean and
standard deviation over the seeds); every other difference in overrides is its own row.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from r3exp import keys
from r3exp.results.paired import PairedTest, pair, paired_test, solved_after_reflection
from r3exp.tracking.metrics_file import FILENAME as METRICS_FILENAME
from r3exp.tracking.metrics_file import read_metrics
from r3exp.tracking.offline_run import read_offline_run

COLUMNS = ("base_first_try", "base_after_reflection", "trained_first_try", "trained_after_reflection")
FORGETTING = "forgetting:"  # columns of lm-eval differences (trained - base), one per benchmark metric
IGNORED_OVERRIDES = ("seed", "mode", "ckpt_path", "hydra.", "paths.", "logger", "callbacks")


@dataclass
class RunResult:
    """One run: where it is, what it was (task, model, overrides), what it scored, how it trained."""

    directory: Path
    task: str
    model: str
    seed: int
    overrides: list[str]
    accuracy: dict[str, float]  # COLUMNS -> accuracy (absent when the run lacks that evaluation)
    total: int
    curves: list[dict] = field(default_factory=list)
    wandb_group: str | None = None
    forgetting: dict[str, float] = field(default_factory=dict)  # lm-eval "<task>/<metric>" -> trained - base
    episodes: dict[str, Path] = field(default_factory=dict)  # label -> eval_<label>_episodes.jsonl

    def setting(self, shared: set[str] = frozenset()) -> str:
        """The overrides that define the row: not task or model (their own columns), not the seed
        (averaged over), not output paths, and not those ``shared`` by every compared run."""
        kept = [
            o
            for o in self.overrides
            if not o.startswith(IGNORED_OVERRIDES) and o.split("=")[0] not in ("task", "model") and o not in shared
        ]
        return " ".join(sorted(kept))


def read_run(directory: str | Path) -> RunResult:
    """A run directory's results, config and training curves."""
    directory = Path(directory)
    results = json.loads((directory / "results.json").read_text())
    config_file, overrides_file = directory / ".hydra" / "config.yaml", directory / ".hydra" / "overrides.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    accuracy, total = {}, 0
    for label in keys.COMPARED:
        if label in results:
            accuracy[f"{label}_first_try"] = results[label]["first_try_accuracy"]
            accuracy[f"{label}_after_reflection"] = results[label]["after_reflection_accuracy"]
            total = results[label]["total"]
    metrics = directory / METRICS_FILENAME
    wandb_runs = sorted((directory / "wandb").glob("*run-*")) if (directory / "wandb").is_dir() else []
    return RunResult(
        directory=directory,
        task=(config.get("task") or {}).get("name", "?"),
        model=(config.get("model") or {}).get("name", "?"),
        seed=int(config.get("seed", 0)),
        overrides=list(overrides or []),
        accuracy=accuracy,
        total=total,
        curves=read_metrics(metrics) if metrics.exists() else [],
        wandb_group=read_offline_run(wandb_runs[-1]).group if wandb_runs else None,
        forgetting=dict((results.get("forgetting") or {}).get("difference") or {}),
        episodes={
            label: directory / f"eval_{label}_episodes.jsonl"
            for label in keys.COMPARED
            if (directory / f"eval_{label}_episodes.jsonl").exists()
        },
    )


def collect_runs(root: str | Path) -> list[RunResult]:
    """Every run under ``root`` (any depth) that has a ``results.json``, in path order."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"compare.runs={str(root)!r} does not exist")
    runs = [read_run(path.parent) for path in sorted(root.rglob("results.json"))]
    if not runs:
        raise FileNotFoundError(f"no results.json under {root} (run `python -m r3exp -m ...` first)")
    return runs


@dataclass
class ComparisonRow:
    task: str
    model: str
    setting: str
    runs: list[RunResult]

    def values(self, column: str) -> list[float]:
        """The column's value in every run that has it: an accuracy (:data:`COLUMNS`) or a forgetting
        difference (``forgetting:<task>/<metric>``)."""
        if column.startswith(FORGETTING):
            key = column.removeprefix(FORGETTING)
            return [r.forgetting[key] for r in self.runs if key in r.forgetting]
        return [r.accuracy[column] for r in self.runs if column in r.accuracy]

    def mean(self, column: str) -> float | None:
        values = self.values(column)
        return statistics.fmean(values) if values else None

    def std(self, column: str) -> float | None:
        values = self.values(column)
        return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)

    def delta(self, a: str, b: str) -> float | None:
        """Mean over runs of (a - b), for runs that have both."""
        pairs = [r.accuracy[a] - r.accuracy[b] for r in self.runs if a in r.accuracy and b in r.accuracy]
        return statistics.fmean(pairs) if pairs else None


def comparison_rows(runs: list[RunResult]) -> list[ComparisonRow]:
    """Runs grouped by (task, model, setting), in first-seen order; overrides common to all runs (the
    sweep's fixed settings) are left out of the settings."""
    shared = set.intersection(*(set(run.overrides) for run in runs)) if len(runs) > 1 else set()
    rows: dict[tuple, ComparisonRow] = {}
    for run in runs:
        key = (run.task, run.model, run.setting(shared))
        rows.setdefault(key, ComparisonRow(*key, runs=[])).runs.append(run)
    return list(rows.values())


DELTAS = {  # name: (minuend, subtrahend)
    "delta_reflection_base": ("base_after_reflection", "base_first_try"),
    "delta_training_first_try": ("trained_first_try", "base_first_try"),
    "delta_training_after_reflection": ("trained_after_reflection", "base_after_reflection"),
}


def _pct(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.1f}"
    return f"{text} ± {100 * spread:.1f}" if spread else text


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def forgetting_columns(rows: list[ComparisonRow]) -> list[str]:
    """One column per lm-eval benchmark metric that some run measured (none: no extra columns)."""
    return [FORGETTING + key for key in sorted({k for row in rows for r in row.runs for k in r.forgetting})]


def _points(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" + (f" ± {100 * spread:.1f}" if spread else "")


def to_markdown(rows: list[ComparisonRow]) -> str:
    """The paper's layout: accuracies in %, mean ± std over seeds; deltas in points. Runs with the
    forgetting check add one column per benchmark: trained minus base, in points, mean ± std."""
    extra = forgetting_columns(rows)
    header = (
        "| task | model | setting | seeds | n | base first try | base after reflection | trained first try "
        "| trained after reflection | Δ reflection (base) | Δ training (first try) | Δ training (after reflection) |"
        + "".join(f" Δ {c.removeprefix(FORGETTING)} (lm-eval) |" for c in extra)
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        cells = [row.task, row.model, row.setting or "default", str(len(row.runs)), str(row.runs[0].total)]
        cells += [_pct(row.mean(c), row.std(c)) for c in COLUMNS]
        cells += [_signed(row.delta(*pair)) for pair in DELTAS.values()]
        cells += [_points(row.mean(c), row.std(c)) for c in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[ComparisonRow], path: str | Path) -> Path:
    """One line per row: means, standard deviations and deltas as fractions (not %)."""
    path = Path(path)
    columns = [*COLUMNS, *forgetting_columns(rows)]
    fields = ["task", "model", "setting", "seeds", "n", *columns, *(f"{c}_std" for c in columns), *DELTAS, "runs"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            record = {
                "task": row.task,
                "model": row.model,
                "setting": row.setting,
                "seeds": len(row.runs),
                "n": row.runs[0].total,
                "runs": " ".join(str(r.directory) for r in row.runs),
            }
            record.update({c: row.mean(c) for c in columns})
            record.update({f"{c}_std": row.std(c) for c in columns})
            record.update({name: row.delta(*pair) for name, pair in DELTAS.items()})
            writer.writerow(record)
    return path


PROTOCOL_KEY = "rollout.protocol="
# the arms compared with each other, each with the ones after it ("a" is the earlier)
ARMS = ("r3_grpo_distill", "r3_grpo", "r3", "grpo")
MEASURES = {"after reflection": False, "first try": True}  # measure: first_try_only


@dataclass(frozen=True)
class PairedComparison:
    """``a`` vs ``b`` on the same test examples, paired per seed (``a`` and ``b`` are "<row> <label>")."""

    a: str
    b: str
    measure: str
    test: PairedTest


def paired_evaluations(
    a_runs: list[RunResult], a_label: str, b_runs: list[RunResult], b_label: str, measure: str
) -> PairedTest | None:
    """The paired test of ``a_label`` in ``a_runs`` vs ``b_label`` in ``b_runs``, matched by seed; None when
    no seed has both evaluations' episodes."""
    b_by_seed = {run.seed: run for run in b_runs}
    pairs = []
    for run in sorted(a_runs, key=lambda r: r.seed):
        other = b_by_seed.get(run.seed)
        if other is None or a_label not in run.episodes or b_label not in other.episodes:
            continue
        first_only = MEASURES[measure]
        pairs.append(
            pair(
                solved_after_reflection(run.episodes[a_label], first_only),
                solved_after_reflection(other.episodes[b_label], first_only),
                where=f" ({run.directory} {a_label} vs {other.directory} {b_label})",
            )
        )
    return paired_test(pairs) if pairs else None


def arm_of(setting: str) -> tuple[str, str]:
    """``(protocol, the other overrides)`` of a row's setting; no ``rollout.protocol`` override is ``r3``."""
    options = setting.split()
    protocol = next((o[len(PROTOCOL_KEY) :] for o in options if o.startswith(PROTOCOL_KEY)), "r3")
    return protocol, " ".join(o for o in options if not o.startswith(PROTOCOL_KEY))


def paired_comparisons(rows: list[ComparisonRow]) -> list[PairedComparison]:
    """Per row: trained vs base. And for every two rows whose settings differ only in ``rollout.protocol``
    (R3, GRPO, R3+GRPO: ``ARMS``): the earlier arm's trained model vs the other's, seed by seed."""
    found = []
    names = {id(row): row.setting or "default" for row in rows}
    for row in rows:
        for measure in MEASURES:
            test = paired_evaluations(row.runs, keys.TRAINED, row.runs, keys.BASE, measure)
            if test:
                found.append(PairedComparison(f"{names[id(row)]} trained", f"{names[id(row)]} base", measure, test))
    arms = [(row, *arm_of(row.setting)) for row in rows]
    for a, a_protocol, a_rest in arms:
        for b, b_protocol, b_rest in arms:
            if (
                a_protocol not in ARMS
                or b_protocol not in ARMS
                or ARMS.index(a_protocol) >= ARMS.index(b_protocol)
                or (a.task, a.model, a_rest) != (b.task, b.model, b_rest)
            ):
                continue
            for measure in MEASURES:
                test = paired_evaluations(a.runs, keys.TRAINED, b.runs, keys.TRAINED, measure)
                if test:
                    found.append(PairedComparison(f"{names[id(a)]} trained", f"{names[id(b)]} trained", measure, test))
    return found


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 else "< 1e-4"


def paired_markdown(comparisons: list[PairedComparison]) -> str:
    """The paired tests: per-seed gains (points), mean ± std, the discordant pairs, pooled p-values."""
    header = (
        "| a | b | measure | gain per seed (points) | mean ± std | a only / b only | examples "
        "| McNemar p | bootstrap p | 95% interval (points) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for c in comparisons:
        t = c.test
        lines.append(
            f"| {c.a} | {c.b} | {c.measure} | {', '.join(f'{100 * g:+.1f}' for g in t.gains)} "
            f"| {_points(t.mean_gain, t.std_gain)} | {t.a_only} / {t.b_only} | {t.examples} "
            f"| {_p(t.mcnemar_p)} | {_p(t.bootstrap_p)} "
            f"| {100 * t.interval[0]:+.1f} to {100 * t.interval[1]:+.1f} |"
        )
    return "\n".join(lines)
