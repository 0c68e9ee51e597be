"""Evaluations as the modes run them: the engine's current weights on a split, sharded over the ranks,
and the base model's evaluation, reused across runs with the same inputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp import distributed, keys
from r3exp.evaluation import EvalResult, evaluate
from r3exp.evaluation.accuracy import control_reflections, result_with_controls
from r3exp.evaluation.reuse import ResultStore, code_identity, library_versions, path_fingerprint
from r3exp.records import episode_record
from r3exp.rollout.episodes import R3Protocol
from r3exp.runtime.environment import CODE_DIR, local_data_paths
from r3exp.runtime.run import Run
from r3exp.tasks.hub import write_jsonl

log = logging.getLogger(__name__)


def run_evaluation(run: Run, label: str, split: str | None = None) -> tuple[EvalResult, list[dict]]:
    """Evaluate the engine's current weights on ``split`` (default ``evaluation.split``) as ``label``; its
    episodes to ``<run dir>/eval_<label>_episodes.jsonl``."""
    ev, parts = run.cfg.evaluation, run.parts
    split = split or ev.split
    protocol = R3Protocol(
        parts.task,
        parts.engine,
        parts.tokenizer,
        instantiate(ev.attempt),
        instantiate(ev.reflection),
        instantiate(ev.retry),
        stream="evaluation",
    )
    examples = list(parts.task.examples(split))[: ev.limit]
    # several ranks: each evaluates every world_size-th example, and all get every episode back in order
    _, mine = evaluate(
        protocol,
        parts.ranks.shard(examples),
        split,
        ev.batch_size,
        description=f"evaluate {label}",
        progress=distributed.is_main(),
    )
    episodes = parts.ranks.gather_shards(mine)
    controls = {control: control_reflections(episodes, control) for control in ev.get("controls") or []}
    # every control's retries in one engine call (one greedy retry per pair, whatever else is in the call)
    pairs = [pair for control_pairs in controls.values() for pair in control_pairs]
    retries = iter(parts.ranks.gather_shards(protocol.retries_with(parts.ranks.shard(pairs))) if pairs else [])
    outcomes = {
        control: [(ep, parts.task.validate(ep.example, next(retries).text)) for ep, _ in control_pairs]
        for control, control_pairs in controls.items()
    }
    result = result_with_controls(parts.task, episodes, split, outcomes)
    rows = [episode_record(parts.task.user_prompt(ep.example), ep) for ep in episodes]
    if distributed.is_main():
        write_jsonl(rows, run.run_dir / f"eval_{label}_episodes.jsonl")
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
    return {
        "model": path_fingerprint(model_path),
        "model_config": OmegaConf.to_container(cfg.model, resolve=True),
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "data": [path_fingerprint(path) for path in local_data_paths(cfg)],
        "evaluation": ev,
        "engine": OmegaConf.to_container(cfg.engine, resolve=True),
        "ranks": distributed.world_size(),
        "seed": cfg.seed if sampled else None,
        "code": code_identity(CODE_DIR),
        "versions": library_versions(),
    }


def run_base_evaluation(run: Run) -> tuple[EvalResult, list[dict], bool]:
    """The base model's evaluation, and whether it was reused: with ``evaluation.reuse_base`` an earlier
    run's, stored under ``paths.results_cache`` for the same inputs (:func:`evaluation_inputs`), else
    evaluated now (and stored for the next run)."""
    cfg = run.cfg
    if not cfg.evaluation.get("reuse_base"):
        return (*run_evaluation(run, keys.BASE), False)
    store = ResultStore(cfg.paths.results_cache, "evaluations")
    inputs = evaluation_inputs(cfg, run.parts.model_path)
    entry = store.load(inputs)
    if distributed.any_rank(entry is None):  # every rank evaluates, or none does
        result, rows = run_evaluation(run, keys.BASE)
        if distributed.is_main():

            def fill(directory: Path) -> None:
                (directory / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
                write_jsonl(rows, directory / "episodes.jsonl")

            log.info("base evaluation stored for reuse: %s", store.save(inputs, fill))
        return result, rows, False
    result = EvalResult.from_dict(json.loads((entry / "result.json").read_text()))
    rows = [json.loads(line) for line in (entry / "episodes.jsonl").read_text().splitlines() if line]
    if distributed.is_main():
        write_jsonl(rows, run.run_dir / f"eval_{keys.BASE}_episodes.jsonl")
        print(
            f"base evaluation reused from {entry} (same weights, task, evaluation and engine settings; "
            "evaluation.reuse_base=false evaluates again)",
            flush=True,
        )
    return result, rows, True
