"""The modes of ``python -m r3exp``: one function each, registered in :data:`MODES`, taking what it needs
and returning a :class:`RunResult`. :func:`run` does what every mode shares (environment, ranks, seed,
run directory, provenance, the engine's lifetime)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp import distributed, keys
from r3exp.config_types import check_config_types
from r3exp.errors import ConfigError
from r3exp.evaluation import EvalResult, evaluate, format_table, save_results
from r3exp.evaluation.accuracy import control_reflections, episodes_result, follow_counts
from r3exp.evaluation.general_ability import check as check_general_ability
from r3exp.evaluation.general_ability import (SHIPPED_TASKS, GeneralAbility, differences, forgetting_table,
                                              score_model)
from r3exp.evaluation.reuse import ResultStore, code_identity, library_versions, path_fingerprint
from r3exp.models import ModelSpec, load_tokenizer
from r3exp.records import episode_record
from r3exp.rollout.episodes import R3Protocol
from r3exp.rollout.failures import collect_failures, write_failures
from r3exp.tasks.base import SPLITS, Task
from r3exp.tasks.hub import write_jsonl
from r3exp.timing import PhaseTimes, install_seconds
from r3exp.tracking.console import quiet_console, quiet_library_environment
from r3exp.tracking.preemption import signal_numbers
from r3exp.tracking.provenance import collect_provenance, write_provenance
from r3exp.tracking.wandb_run import (backfill_history, log_dataset_artifact, log_evaluation, log_forgetting,
                                     log_policy_artifact, log_provenance)

log = logging.getLogger(__name__)
CODE_DIR = Path(__file__).resolve().parents[2]  # the checkout (for the git commit; none when installed)


def setup_environment(verbose: bool = False) -> None:
    """Defaults for machines without network or accounts, and (unless ``verbose``) a quiet console;
    explicit environment variables win."""
    if not verbose:
        quiet_library_environment()
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def output_dir(cfg: DictConfig) -> Path:
    """The run's directory (``paths.output_dir``; the Hydra entry point fills it with the run dir)."""
    if cfg.paths.get("output_dir") is None:
        raise ConfigError("paths.output_dir is not set (python -m r3exp sets it to the Hydra run directory)")
    return Path(cfg.paths.output_dir)


@dataclass
class Components:
    task: Task
    model: ModelSpec
    model_path: str
    tokenizer: Any
    engine: Any


def build_components(cfg: DictConfig, phases: PhaseTimes | None = None) -> Components:
    phases = phases or PhaseTimes()
    task, model, path = resolve_model(cfg, phases)
    with phases("engine start"):
        tokenizer = load_tokenizer(path)  # fails fast, in one line, when the hub is unreachable
        # each engine samples its own stream (its seed); the first engine's equals a single process's
        engine = instantiate(cfg.engine)(model_path=path, seed=cfg.seed + distributed.data_rank())
    return Components(task, model, path, tokenizer, engine)


def resolve_model(cfg: DictConfig, phases: PhaseTimes | None = None) -> tuple[Task, ModelSpec, str]:
    """The task, the model spec and the model's directory (or hub id): the embedded model is built, and
    warm-started, on first use."""
    from r3exp.embedded import tiny_corpus

    phases = phases or PhaseTimes()
    task = instantiate(cfg.task)
    model: ModelSpec = instantiate(cfg.model)
    if not distributed.is_main():
        distributed.barrier()  # several ranks: rank 0 builds what the cache lacks, the others then read it
    with phases("model build"):
        path = model.resolve(cfg.paths.cache_dir, corpus=tiny_corpus)
    if model.is_embedded and model.warm_start is not None:
        with phases("warm start"):
            path = resolve_warm_start(cfg, task, model, path)
    if distributed.is_main():
        distributed.barrier()
    return task, model, path


def warm_start_task_settings(cfg: DictConfig, task: Task) -> dict:
    """The task settings a warm start depends on (part of its key)."""
    settings = OmegaConf.to_container(cfg.task, resolve=True)
    if task.scripted_episodes_ignore_splits:  # one warm start for every seed and split size
        settings.pop("seed", None)
        settings.pop("split_sizes", None)
    return settings


def resolve_warm_start(cfg: DictConfig, task: Task, model: ModelSpec, base_path: str) -> str:
    """The warm-started embedded model: from ``warm_start_path`` (``mode=warmstart``'s output, e.g. the
    DVC stage) when set, else the one shipped with the package for these inputs, else built once and cached
    under ``paths.cache_dir/warmstart``."""
    from r3exp.warmstart import SHIPPED, ensure_warm_start

    if cfg.get("warm_start_path"):
        built = Path(cfg.warm_start_path) / "model"
        if not (built / "config.json").exists():
            raise ConfigError(f"warm_start_path={cfg.warm_start_path!r}: no model there (build it with mode=warmstart)")
        return str(built)
    if not task.scripted_episodes(1, 0):
        log.warning("task %r has no scripted episodes (Task.scripted_episodes): no warm start, the embedded "
                    "model starts untrained", task.name)
        return base_path
    settings = warm_start_task_settings(cfg, task)
    shipped = None if cfg.get("mode") == "warmstart" else SHIPPED  # mode=warmstart rebuilds (into the cache)
    return str(ensure_warm_start(base_path, task, settings, model.warm_start, Path(cfg.paths.cache_dir) / "warmstart",
                                 shipped))


def run_evaluation(cfg: DictConfig, parts: Components, label: str, split: str | None = None,
                   ) -> tuple[EvalResult, list[dict]]:
    """Evaluate the engine's current weights on ``split`` (default ``evaluation.split``) as ``label``."""
    ev = cfg.evaluation
    split = split or ev.split
    protocol = R3Protocol(parts.task, parts.engine, parts.tokenizer, instantiate(ev.attempt),
                          instantiate(ev.reflection), instantiate(ev.retry), stream="evaluation")
    examples = list(parts.task.examples(split))[: ev.limit]
    # several ranks: each evaluates every world_size-th example, and all get every episode back in order
    _, mine = evaluate(protocol, distributed.shard(examples), split, ev.batch_size,
                       description=f"evaluate {label}", progress=distributed.is_main())
    episodes = distributed.gather_shards(mine)
    result = episodes_result(episodes, split)
    result.followed, result.follow_defined = follow_counts(parts.task, episodes)
    for control in ev.get("controls") or []:
        pairs = control_reflections(episodes, control)
        retries = distributed.gather_shards(protocol.retries_with(distributed.shard(pairs)))
        fixed = sum(parts.task.validate(ep.example, retry.text) for (ep, _), retry in zip(pairs, retries))
        setattr(result, f"{control}_reflection_fixed", fixed)
    rows = [episode_record(parts.task.user_prompt(ep.example), ep) for ep in episodes]
    if distributed.is_main():
        write_jsonl(rows, output_dir(cfg) / f"eval_{label}_episodes.jsonl")
    return result, rows


def evaluation_inputs(cfg: DictConfig, model_path: str) -> dict:
    """Everything an evaluation's episodes depend on (the key under which ``evaluation.reuse_base`` keeps
    them): the weights, the task, its split and local data files, the evaluation and engine settings, the
    ranks, the code and library versions; the seed only when something is sampled at a temperature above 0
    (greedy decoding ignores it)."""
    ev = OmegaConf.to_container(cfg.evaluation, resolve=True)
    ev.pop("label", None)
    ev.pop("reuse_base", None)
    sampled = any(float(ev[turn].get("temperature") or 0.0) > 0.0 for turn in ("attempt", "reflection", "retry"))
    return {"model": path_fingerprint(model_path), "model_config": OmegaConf.to_container(cfg.model, resolve=True),
            "task": OmegaConf.to_container(cfg.task, resolve=True),
            "data": [path_fingerprint(path) for path in local_data_paths(cfg)],
            "evaluation": ev, "engine": OmegaConf.to_container(cfg.engine, resolve=True),
            "ranks": distributed.world_size(), "seed": cfg.seed if sampled else None,
            "code": code_identity(CODE_DIR), "versions": library_versions()}


def run_base_evaluation(cfg: DictConfig, parts: Components) -> tuple[EvalResult, list[dict], bool]:
    """The base model's evaluation, and whether it was reused: with ``evaluation.reuse_base`` an earlier
    run's, stored under ``paths.results_cache`` for the same inputs (:func:`evaluation_inputs`), else
    evaluated now (and stored for the next run)."""
    if not cfg.evaluation.get("reuse_base"):
        return (*run_evaluation(cfg, parts, keys.BASE), False)
    store = ResultStore(cfg.paths.results_cache, "evaluations")
    inputs = evaluation_inputs(cfg, parts.model_path)
    entry = store.load(inputs)
    if distributed.any_rank(entry is None):  # every rank evaluates, or none does
        result, rows = run_evaluation(cfg, parts, keys.BASE)
        if distributed.is_main():
            def fill(directory: Path) -> None:
                (directory / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
                write_jsonl(rows, directory / "episodes.jsonl")

            log.info("base evaluation stored for reuse: %s", store.save(inputs, fill))
        return result, rows, False
    result = EvalResult.from_dict(json.loads((entry / "result.json").read_text()))
    rows = [json.loads(line) for line in (entry / "episodes.jsonl").read_text().splitlines() if line]
    if distributed.is_main():
        write_jsonl(rows, output_dir(cfg) / f"eval_{keys.BASE}_episodes.jsonl")
        print(f"base evaluation reused from {entry} (same weights, task, evaluation and engine settings; "
              "evaluation.reuse_base=false evaluates again)", flush=True)
    return result, rows, True


def build_logger(cfg: DictConfig, provenance: dict):
    if not cfg.get("logger"):
        return False
    extra = {"save_dir": str(output_dir(cfg))}
    if cfg.logger.get("_target_", "").endswith("WandbLogger"):
        extra.update(id=wandb_run_id(output_dir(cfg)), resume="allow")  # a resumed run continues its W&B run
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
        import secrets

        path.write_text(secrets.token_hex(4))  # W&B ids: lowercase letters and digits
    return path.read_text().strip()


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (what distinguishes it within a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def local_data_paths(cfg: DictConfig) -> list[str]:
    """The local files a run reads: the task's data (a file or split directory) and a first-failure dataset."""
    paths = [cfg.task.get("source"), cfg.rollout.get("failures_path") if cfg.rollout.get("source") == "failures" else None]
    return [p for p in paths if p and Path(str(p)).exists()]


def run_data(cfg: DictConfig) -> Path:
    """Write the task's splits as JSONL (``<output_dir>/<split>.jsonl``); ``task.source=<that dir>`` reads them."""
    task = instantiate(cfg.task)
    sizes = {}
    for split in SPLITS:
        rows = list(task.examples(split))
        write_jsonl(rows, output_dir(cfg) / f"{split}.jsonl")
        sizes[split] = len(rows)
    (output_dir(cfg) / "data.json").write_text(json.dumps(
        {"task": task.name, "source": cfg.task.get("source"), "seed": cfg.seed, "sizes": sizes}, indent=2))
    print(f"{task.name} splits {sizes} -> {output_dir(cfg)}")
    return output_dir(cfg)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: None (start), a path, ``last`` (the run directory's last.ckpt, which must exist) or
    ``auto`` (it when it exists, else start: a requeued job resumes, a new one starts)."""
    if cfg.ckpt_path is None:
        return None
    last = output_dir(cfg) / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path == "auto":
        return str(last) if last.exists() else None
    path = last if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.exists():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no checkpoint at {path}")
    return str(path)


def checkpoint_step(path: str) -> int:
    """The global step a Lightning checkpoint was written at (a file, or a sharded checkpoint's directory),
    read without loading its tensors, with torch's safe loader (a checkpoint never runs code). A file that
    is not a readable checkpoint is a :class:`ConfigError` naming it."""
    import torch

    meta = Path(path) / "meta.pt" if Path(path).is_dir() else Path(path)
    if meta.is_file() and not zipfile.is_zipfile(meta):
        raise ConfigError(f"ckpt_path: {meta} is not a Lightning checkpoint (not a torch zip archive: truncated, "
                          "corrupt or another format)")
    try:
        return int(torch.load(meta, map_location="cpu", weights_only=True, mmap=not Path(path).is_dir())["global_step"])
    except Exception as err:  # noqa: BLE001: torch's message advises weights_only=False, which r3exp never does
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt_path: {meta} is not a readable Lightning checkpoint ({type(err).__name__}: "
                          f"{reason})") from None


TRAINER_KEYS_OF_OURS = {  # Lightning's own versions of these do not apply to the module's manual optimization
    "accumulate_grad_batches": "grpo.rollouts_per_step (rollouts per optimizer step) and grpo.max_tokens_per_micro_batch (memory)",
    "gradient_clip_val": "grpo.max_grad_norm",
}


def check_trainer_config(cfg: DictConfig) -> None:
    """Settings that would otherwise fail late (after the engine and the base evaluation) or never."""
    from r3exp.grpo.schedule import check_decay

    if not isinstance(cfg.trainer.get("max_steps"), int) or cfg.trainer.max_steps < 1:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.get('max_steps')}: R3 trains a set number of optimizer "
                          "steps (>= 1; the learning-rate schedule needs the total)")
    if cfg.optimizer.get("scheduler"):
        check_decay(cfg.optimizer.scheduler.get("decay", "constant"))
    strategy = cfg.trainer.get("strategy") or ""
    if isinstance(strategy, str) and "fsdp" in strategy:
        raise ConfigError(f"trainer.strategy={strategy}: r3exp shards with FSDP2 through Lightning's "
                          "ModelParallelStrategy; use trainer=fsdp (trainer=cpu_fsdp on CPUs)")
    if not isinstance(strategy, str) and str(strategy.get("tensor_parallel_size", "auto")) not in ("auto", "1"):
        raise ConfigError(f"trainer.strategy.tensor_parallel_size={strategy.tensor_parallel_size}: r3exp shards the "
                          "policy over every rank (FSDP2) and does not split its layers; leave it at auto")
    for key, ours in TRAINER_KEYS_OF_OURS.items():
        if cfg.trainer.get(key) not in (None, 1 if key == "accumulate_grad_batches" else None):
            raise ConfigError(f"trainer.{key}={cfg.trainer.get(key)}: r3exp steps the optimizer itself over "
                              f"token-budget micro-batches; use {ours}")
    preemption = (cfg.get("callbacks") or {}).get("preemption") or {}
    signal_numbers(preemption.get("signals") or [])
    if str(cfg.trainer.get("precision", "")).startswith("bf16") and cfg.trainer.get("accelerator") == "cpu" \
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("trainer.precision=%s on a CPU without bf16 kernels (torch: %s): autocast emulates bf16 and is "
                    "slower than 32-true here (docs/results/speed.md, \"Speed on CPU\")", cfg.trainer.precision,
                    torch.backends.cpu.get_cpu_capability())


def run_training(cfg: DictConfig, parts: Components, logger, extra_callbacks: list | None = None,
                 phases: PhaseTimes | None = None) -> dict[str, Path]:
    check_trainer_config(cfg)
    policy = parts.model.load(parts.model_path)
    optimizer = instantiate(cfg.optimizer.optimizer)
    scheduler = instantiate(cfg.optimizer.scheduler) if cfg.optimizer.get("scheduler") else None
    module = instantiate(cfg.grpo)(policy=policy, engine=parts.engine, optimizer=optimizer, scheduler=scheduler)
    datamodule = instantiate(cfg.rollout)(task=parts.task, engine=parts.engine, tokenizer=parts.tokenizer)
    callbacks = [instantiate_callback(c, output_dir(cfg)) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += list(extra_callbacks or [])
    # Lightning warns that checkpoints of manual optimization hold the weights after the step: they should,
    # with global_step counting that step, so a resumed run continues from the next one.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks,
                                     default_root_dir=str(output_dir(cfg)))
    ckpt_path = resolve_ckpt_path(cfg)
    resumed_step = checkpoint_step(ckpt_path) if ckpt_path else None
    if ckpt_path:
        log.info("resuming from %s (after step %d)", ckpt_path, resumed_step)
    if ckpt_path and logger:
        backfilled = backfill_history(logger, output_dir(cfg), resumed_step)
        if backfilled:
            log.info("W&B history: steps %s restored from %s", backfilled, "train_metrics.csv")
    phases = phases or PhaseTimes()
    with phases("training"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    with phases("export"):
        return module.export_policy(parts.tokenizer, output_dir(cfg) / "policy")


def instantiate_callback(cfg: DictConfig, run_dir: Path):
    """A callback from its config; a checkpoint callback with ``dirpath: null`` saves to <run dir>/checkpoints."""
    if "dirpath" in cfg and cfg.dirpath is None:
        return instantiate(cfg, dirpath=str(run_dir / "checkpoints"))
    return instantiate(cfg)


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


def run_failures(cfg: DictConfig, parts: Components) -> Path:
    sampling = instantiate(cfg.rollout.attempt, temperature=cfg.failures.temperature)
    rows, stats = collect_failures(parts.task, parts.engine, parts.tokenizer, list(parts.task.examples("train")),
                                   sampling, cfg.failures.attempts, cfg.failures.rule)
    path = write_failures(rows, cfg.failures.output or output_dir(cfg) / "failures.jsonl")
    Path(path).with_suffix(".stats.json").write_text(json.dumps(stats, indent=2))
    print(f"first-failure dataset: kept {stats['kept']} of {stats['examples']} examples -> {path}")
    return path


@dataclass
class RunResult:
    """What a mode produced. ``results``: evaluation tables by label (``base``, ``trained``, a model's
    name, ``warm_start``); the other fields are the paths a mode wrote, where it wrote them."""

    output_dir: Path
    results: dict[str, EvalResult] = field(default_factory=dict)
    results_path: Path | None = None
    policy: dict[str, Path] = field(default_factory=dict)  # mode=train/main: merged/ (and adapter/)
    model: Path | None = None  # mode=warmstart: the warm-started model
    data: Path | None = None  # mode=data: the splits' directory
    failures: Path | None = None  # mode=failures: the first-failure dataset
    comparison: dict[str, Any] = field(default_factory=dict)  # mode=compare: rows and the files written
    forgetting: dict[str, dict[str, float]] = field(default_factory=dict)  # lm-eval scores by label

    @property
    def objective(self) -> float | None:
        """What Hydra's sweepers maximise: the after-reflection accuracy of the trained model (of the
        only model evaluated, outside ``mode=main``); None when nothing was evaluated."""
        final = self.results.get(keys.TRAINED) or next(iter(self.results.values()), None)
        return final.after_reflection_accuracy if final else None


@dataclass
class RunContext:
    """What :func:`run` prepared for a mode."""

    run_dir: Path
    provenance: dict
    parts: Components | None = None  # task, model, tokenizer, engine (modes with ``engine=True``)
    phases: PhaseTimes = field(default_factory=PhaseTimes)  # seconds per phase (results.json, the table)


@dataclass(frozen=True)
class Mode:
    run: Callable[[DictConfig, RunContext], RunResult]
    ranked: bool = False  # runs on trainer.devices x trainer.num_nodes ranks (every rank runs it)
    engine: bool = True  # needs the task, model and engine


MODES: dict[str, Mode] = {}


def mode(name: str, ranked: bool = False, engine: bool = True):
    """Register a mode function as ``mode=<name>``."""
    def register(function: Callable[[DictConfig, RunContext], RunResult]):
        MODES[name] = Mode(function, ranked, engine)
        return function
    return register


def run(cfg: DictConfig) -> RunResult:
    """Run ``cfg.mode``."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; expected one of {tuple(MODES)}")
    selected = MODES[cfg.mode]
    check_config_types(cfg)
    setup_environment(verbose=cfg.get("verbose", False))
    if selected.ranked:
        check_trainer_config(cfg)
        if ckpt_path := resolve_ckpt_path(cfg):
            checkpoint_step(ckpt_path)  # readable, before the engine starts
        distributed.launch_ranks(cfg.trainer)  # several devices or nodes: every rank runs from here on
        distributed.set_engine_ranks(int(cfg.engine.get("tensor_parallel_size") or 1))
    elif distributed.launched_rank() > 0:  # SLURM or torchrun started several tasks: one does this mode's work
        print(f"mode={cfg.mode} runs on one rank; rank {distributed.launched_rank()} has nothing to do")
        return RunResult(output_dir(cfg))
    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.get("verbose", False):
        quiet_console(run_dir, distributed.rank())
    L.seed_everything(cfg.seed, workers=True)
    provenance = collect_provenance(CODE_DIR, cfg.seed, local_data_paths(cfg))
    if distributed.is_main():
        write_provenance(provenance, run_dir)
    if not selected.engine:
        return selected.run(cfg, RunContext(run_dir, provenance))
    phases = PhaseTimes()
    parts = build_components(cfg, phases)
    provenance["model_path"] = parts.model_path  # the weights the run started from (hub id, cache, shipped)
    if distributed.is_main():
        write_provenance(provenance, run_dir)
    try:
        return selected.run(cfg, RunContext(run_dir, provenance, parts, phases))
    finally:
        parts.engine.close()
        finish_wandb()


@mode("data", engine=False)
def data_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    return RunResult(ctx.run_dir, data=run_data(cfg))


@mode("compare", engine=False)
def compare_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    return RunResult(ctx.run_dir, comparison=run_compare(cfg))


@mode("failures")
def failures_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    return RunResult(ctx.run_dir, failures=run_failures(cfg, ctx.parts))


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


@mode("evaluate", ranked=True)
def evaluate_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    """Evaluate the configured model (``evaluation.label``, else the model's name)."""
    label = cfg.evaluation.get("label") or ctx.parts.model.name
    result, samples = run_evaluation(cfg, ctx.parts, label)
    return publish_results(cfg, ctx, RunResult(ctx.run_dir, results={label: result}), {label: samples},
                           logger=False)


@mode("train", ranked=True)
def train_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    logger = build_logger(cfg, ctx.provenance) if distributed.is_main() else False
    return RunResult(ctx.run_dir, policy=train_and_record(cfg, ctx, logger))


@mode("main", ranked=True)
def main_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    """Evaluate the base model, train, evaluate the trained policy: the paper's table (and, with
    ``forgetting.enabled``, the general ability of both through lm-eval)."""
    if cfg.forgetting.enabled:
        if distributed.world_size() > 1:
            raise ConfigError("forgetting.enabled with several ranks: lm-eval runs in one process; run "
                              "mode=forgetting forgetting.policy=<run dir>/policy/merged after the job")
        check_general_ability(instantiate(cfg.forgetting))  # before training, not after
    logger = build_logger(cfg, ctx.provenance) if distributed.is_main() else False
    started = time.perf_counter()
    base, base_samples, reused = run_base_evaluation(cfg, ctx.parts)
    ctx.phases.add("base evaluation (reused)" if reused else "base evaluation", time.perf_counter() - started)
    policy = train_and_record(cfg, ctx, logger)
    with ctx.phases("trained evaluation"):
        trained, trained_samples = run_evaluation(cfg, ctx.parts, keys.TRAINED)
    produced = RunResult(ctx.run_dir, results={keys.BASE: base, keys.TRAINED: trained}, policy=policy)
    if cfg.forgetting.enabled and distributed.is_main():
        ctx.parts.engine.close()  # its memory goes to lm-eval's own model
        with ctx.phases("forgetting check"):
            produced.forgetting = run_forgetting(cfg, ctx.run_dir, ctx.parts.model_path, policy["merged"])
    return publish_results(cfg, ctx, produced, {keys.BASE: base_samples, keys.TRAINED: trained_samples}, logger)


@mode("forgetting", engine=False)
def forgetting_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    """General ability of the configured model (``base``) and of ``forgetting.policy`` (``trained``)."""
    policy = cfg.forgetting.get("policy")
    if policy and not (Path(policy) / "config.json").exists():  # before the base model is built or converted
        raise ConfigError(f"forgetting.policy={policy!r}: no model there (a run's <run dir>/policy/merged)")
    _, model, path = resolve_model(cfg)
    produced = RunResult(ctx.run_dir, forgetting=run_forgetting(cfg, ctx.run_dir, path, policy))
    if distributed.is_main():
        produced.results_path = save_results({}, ctx.run_dir / "results.json", forgetting=forgetting_record(produced))
        print(f"\ngeneral ability (lm-eval) · {model.name}\n{forgetting_table(produced.forgetting)}")
    return produced


def run_forgetting(cfg: DictConfig, run_dir: Path, base_path: str, policy_path: str | Path | None,
                   ) -> dict[str, dict[str, float]]:
    """lm-eval scores of the base model and (when given) the trained policy, identical settings; lm-eval's
    own output files under ``<run dir>/lm_eval/<label>/``."""
    spec = instantiate(cfg.forgetting)
    scores = {keys.BASE: base_general_ability(cfg, spec, run_dir, base_path)}
    if policy_path:
        scores[keys.TRAINED] = score_model(policy_path, keys.TRAINED, spec, run_dir / "lm_eval", cfg.seed)
    return scores


def base_general_ability(cfg: DictConfig, spec: GeneralAbility, run_dir: Path, base_path: str,
                         ) -> dict[str, float]:
    """The base model's lm-eval scores: with ``forgetting.reuse_base`` an earlier run's for the same weights,
    lm-eval settings, seed, code and versions (lm-eval's files copied into this run), else scored now."""
    out = run_dir / "lm_eval"
    if not spec.reuse_base:
        return score_model(base_path, keys.BASE, spec, out, cfg.seed)
    settings = {key: value for key, value in asdict(spec).items()
                if key not in ("enabled", "policy", "reuse_base")}
    include = [spec.include_path] if isinstance(spec.include_path, str) else list(spec.include_path or [])
    task_files = [path_fingerprint(path) for path in [SHIPPED_TASKS, *include]]  # task YAMLs and their data
    inputs = {"model": path_fingerprint(base_path), "forgetting": settings, "task_files": task_files,
              "seed": cfg.seed, "code": code_identity(CODE_DIR), "versions": library_versions()}
    store = ResultStore(cfg.paths.results_cache, "general_ability")
    entry = store.load(inputs)
    if entry is None:
        scores = score_model(base_path, keys.BASE, spec, out, cfg.seed)

        def fill(directory: Path) -> None:
            (directory / "scores.json").write_text(json.dumps(scores, indent=2))
            shutil.copytree(out / keys.BASE, directory / "lm_eval")

        log.info("base lm-eval scores stored for reuse: %s", store.save(inputs, fill))
        return scores
    shutil.copytree(entry / "lm_eval", out / keys.BASE, dirs_exist_ok=True)
    print(f"base lm-eval scores reused from {entry} (forgetting.reuse_base=false scores it again)", flush=True)
    return json.loads((entry / "scores.json").read_text())


def forgetting_record(produced: RunResult) -> dict:
    """``results.json``'s ``forgetting``: the scores by label, and trained minus base."""
    return {**produced.forgetting, "difference": differences(produced.forgetting)} if produced.forgetting else {}


def train_and_record(cfg: DictConfig, ctx: RunContext, logger) -> dict[str, Path]:
    """Train, with the dataset and the exported policy recorded as W&B artifacts."""
    parts = ctx.parts
    log_dataset_artifact(logger, parts.task.name, str(cfg.task.get("source")),
                         OmegaConf.to_container(cfg.task, resolve=True))
    policy = run_training(cfg, parts, logger, phases=ctx.phases)
    log_policy_artifact(logger, f"{cfg.run_name}-policy", ctx.run_dir / "policy",
                        {"model": parts.model.name, "task": parts.task.name, "seed": cfg.seed})
    return policy


def publish_results(cfg: DictConfig, ctx: RunContext, produced: RunResult, samples: dict[str, list[dict]],
                    logger) -> RunResult:
    """Rank 0: write ``results.json``, print the table, log the results and samples to W&B. Every rank
    holds the results (and returns them)."""
    if not distributed.is_main():
        return produced
    produced.results_path = save_results(produced.results, ctx.run_dir / "results.json",
                                         forgetting=forgetting_record(produced), phases=ctx.phases.to_dict())
    split = next(iter(produced.results.values())).split
    print(f"\n{ctx.parts.task.name} · {ctx.parts.model.name} · {split} split\n{format_table(produced.results)}")
    if produced.forgetting:
        print(f"\ngeneral ability (lm-eval)\n{forgetting_table(produced.forgetting)}")
    print(f"\nwhere the time went\n{ctx.phases.table(install_seconds())}")
    if logger:
        logger.log_metrics({keys.eval_key(name, key): value for name, r in produced.results.items()
                            for key, value in r.to_dict().items() if isinstance(value, (int, float))})
        log_evaluation(logger, {name: r.to_dict() for name, r in produced.results.items()}, samples)
        log_forgetting(logger, produced.forgetting)
    return produced


def finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
