"""General ability (lm-eval) as the modes run it: the base model and a trained policy with identical settings,
the base model's scores reused across runs with the same inputs."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from r3exp import keys
from r3exp.evaluation.general_ability import SHIPPED_TASKS, GeneralAbility, score_model
from r3exp.evaluation.reuse import ResultStore, code_identity, library_versions, path_fingerprint
from r3exp.runtime.environment import CODE_DIR

log = logging.getLogger(__name__)


def run_forgetting(
    cfg: DictConfig, run_dir: Path, base_path: str, policy_path: str | Path | None
) -> dict[str, dict[str, float]]:
    """lm-eval scores of the base model and (when given) the trained policy, identical settings; lm-eval's
    own output files under ``<run dir>/lm_eval/<label>/``."""
    spec = instantiate(cfg.forgetting)
    scores = {keys.BASE: base_general_ability(cfg, spec, run_dir, base_path)}
    if policy_path:
        scores[keys.TRAINED] = score_model(policy_path, keys.TRAINED, spec, run_dir / "lm_eval", cfg.seed)
    return scores


def base_general_ability(cfg: DictConfig, spec: GeneralAbility, run_dir: Path, base_path: str) -> dict[str, float]:
    """The base model's lm-eval scores: with ``forgetting.reuse_base`` an earlier run's for the same weights,
    lm-eval settings, seed, code and versions (lm-eval's files copied into this run), else scored now."""
    out = run_dir / "lm_eval"
    if not spec.reuse_base:
        return score_model(base_path, keys.BASE, spec, out, cfg.seed)
    settings = {key: value for key, value in asdict(spec).items() if key not in ("enabled", "policy", "reuse_base")}
    include = [spec.include_path] if isinstance(spec.include_path, str) else list(spec.include_path or [])
    task_files = [path_fingerprint(path) for path in [SHIPPED_TASKS, *include]]  # task YAMLs and their data
    inputs = {
        "model": path_fingerprint(base_path),
        "forgetting": settings,
        "task_files": task_files,
        "seed": cfg.seed,
        "code": code_identity(CODE_DIR),
        "versions": library_versions(),
    }
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
