"""What needs which optional extra (``pip install 'r3exp[<extra>]'``; pyproject.toml): one table, checked once
before a run starts, so that a config needing a missing package stops with one line instead of a traceback
after the model has loaded. Packages are looked up with ``find_spec``: nothing here imports them."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from r3exp.errors import MissingExtra

# The modes that log through cfg.logger (r3exp.runtime.publishing.build_logger).
LOGGER_MODES = ("main", "train")
PACKAGES = {
    "lm_eval": "lm-eval",
    "wandb_workspaces": "wandb-workspaces",
    "optimi": "torch-optimi",
    "bfcl_eval": "bfcl-eval",
}  # what pip calls a module's package


@dataclass(frozen=True)
class Need:
    """A setting of the config that needs packages outside the core."""

    setting: str  # as the user writes it: logger=wandb
    modules: tuple[str, ...]  # what it imports
    install: str  # what provides them: 'r3exp[wandb]'
    instead: str = ""  # the setting that needs none of them

    def missing(self) -> list[str]:
        return [name for name in self.modules if importlib.util.find_spec(name) is None]

    def message(self) -> str:
        missing = [PACKAGES.get(name, name) for name in self.missing()]
        names = " and ".join(filter(None, [", ".join(missing[:-1]), missing[-1]]))
        packages = f"the {names} package{'s' if len(missing) > 1 else ''}"
        instead = f" (or {self.instead})" if self.instead else ""
        return f"{self.setting} needs {packages}: pip install {self.install}{instead}"


def needs(cfg: DictConfig, engine: bool) -> list[Need]:
    """The table: what ``cfg`` needs beyond the core. ``engine``: the mode builds the task, model and engine.
    (The sweeps extra, hydra-optuna-sweeper and hydra-submitit-launcher, is not here: without it Hydra stops
    while composing ``hydra/sweeper=optuna`` or ``hydra/launcher=submitit_*``, before r3exp runs.)"""
    mode, found = cfg.mode, []
    logger = str((cfg.get("logger") or {}).get("_target_", ""))
    if mode in LOGGER_MODES and logger.endswith("WandbLogger"):
        found.append(Need("logger=wandb", ("wandb",), "'r3exp[wandb]'", "logger=csv"))
    if engine and str(cfg.engine.get("_target_", "")).endswith("VLLMEngine"):
        found.append(Need("engine=vllm", ("vllm",), "'r3exp[cpu]' (CPU) or 'r3exp[gpu]' (CUDA)", "engine=hf"))
    model = cfg.get("model") or {}
    if (
        mode in LOGGER_MODES
        and model.get("master_weights") == "kahan"
        and not model.get("lora")
        and model.get("dtype") in ("bfloat16", "float16")
    ):  # full fine-tuning of low-precision weights
        found.append(Need("model.master_weights=kahan", ("optimi",), "'r3exp[kahan]'", "model.master_weights=float32"))
    if mode == "forgetting" or (mode == "main" and cfg.forgetting.get("enabled")):
        setting = "mode=forgetting" if mode == "forgetting" else "forgetting.enabled=true"
        found.append(Need(setting, ("lm_eval",), "'r3exp[forgetting]'"))
    source = (cfg.get("task") or {}).get("source")
    if (engine or mode == "data") and is_dataset_source(source):
        found.append(Need(f"task.source={source}", ("datasets",), "'r3exp[data]'", "task.source=generated"))
    if (engine or mode == "data") and str((cfg.get("task") or {}).get("_target_", "")).endswith("BfclTask"):
        # --no-deps: bfcl-eval pins old versions of numpy and more; r3exp reads only its data files
        found.append(Need("task=bfcl", ("bfcl_eval",), "--no-deps bfcl-eval==2026.3.23"))
    if mode == "compare":  # plots (matplotlib) and the W&B report (wandb-workspaces, which imports wandb)
        found.append(Need("mode=compare", ("matplotlib", "wandb_workspaces", "wandb"), "'r3exp[reports]'"))
    return found


def is_dataset_source(source) -> bool:
    """A task source read through ``datasets`` (a hub id or a file), not generated rows or a split directory
    (``r3exp.tasks.hub.load_hub_rows``)."""
    return isinstance(source, str) and source != "generated" and not Path(source).expanduser().is_dir()


def check_extras(cfg: DictConfig, engine: bool) -> None:
    """Raise :class:`~r3exp.errors.MissingExtra` naming every missing extra of ``cfg``, on one line."""
    missing = [need.message() for need in needs(cfg, engine) if need.missing()]
    if missing:
        raise MissingExtra("; ".join(missing))
