"""Load a policy and its tokenizer: hub models and the embedded tiny model take the same path."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch

from r3exp.errors import ConfigError, ModelUnavailable
from r3exp.models.dtypes import torch_dtype
from r3exp.models.gguf import ensure_gguf_model
from r3exp.models.random_init import ensure_random_model
from r3exp.models.tiny import ensure_tiny_model

log = logging.getLogger(__name__)
# How trainable weights are kept (r3exp.grpo.optimizers explains why it matters in bf16):
# float32: float32 whatever model.dtype is (full fine-tuning loads the model in float32; LoRA adapters are
#   float32 over a model.dtype base); kahan: in model.dtype, stepped by a Kahan-compensated AdamW.
MASTER_WEIGHTS = ("float32", "kahan")
INITS = ("pretrained", "random")  # model.init


@dataclass
class LoraSpec:
    """peft LoRA settings (Hu et al. 2021). ``r`` trades adapter capacity for memory and speed."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP probe of the hub endpoint (the hub client would otherwise retry for minutes)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_kwargs(path: str | Path) -> dict:
    """``local_files_only`` when ``path`` is not a directory and the hub cannot be reached: a cached
    copy still loads, a missing one fails at once instead of after the hub client's retries."""
    if Path(str(path)).is_dir():
        return {}
    return {} if hub_reachable() else {"local_files_only": True}


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer  # noqa: PLC0415 - seconds to import; importing r3exp.models skips it

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **hub_kwargs(path))
    except Exception as err:  # noqa: BLE001 - the hub client raises many types for the same problem
        raise ModelUnavailable(_explain(path, err)) from None
    if tokenizer.chat_template is None:
        raise ModelUnavailable(f"tokenizer at {path} has no chat template; R3 needs multi-turn chat prompts")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    path: str | Path,
    dtype: str = "float32",
    lora: LoraSpec | dict | None = None,
    gradient_checkpointing: bool = False,
    master_weights: str = "float32",
) -> Any:
    """The causal LM at ``path`` (hub id or directory), optionally wrapped with a fresh LoRA adapter.

    ``dtype`` is the weights' dtype as loaded; ``master_weights`` (:data:`MASTER_WEIGHTS`) the dtype the
    trainable ones are kept in: under ``float32``, full fine-tuning loads every weight in float32 (the
    frozen base of a LoRA adapter stays in ``dtype``)."""
    check_master_weights(master_weights)
    model = load_model(path, "float32" if master_weights == "float32" and not lora else dtype)
    return prepare_policy(model, lora, gradient_checkpointing, master_weights)


def load_model(path: str | Path, dtype: str = "float32") -> Any:
    """The causal LM at ``path`` (hub id or directory) with its weights in ``dtype``, as stored: a copy that
    only samples (the HF engine's), with no master weights."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - seconds to import; importing r3exp.models skips it

    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype), **hub_kwargs(path))
    except ModelUnavailable:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelUnavailable(_explain(path, err)) from None


def check_master_weights(master_weights: str) -> None:
    if master_weights not in MASTER_WEIGHTS:
        raise ConfigError(f"model.master_weights={master_weights!r} is not one of {list(MASTER_WEIGHTS)}")


def prepare_policy(
    model, lora: LoraSpec | dict | None = None, gradient_checkpointing: bool = False, master_weights: str = "float32"
) -> Any:
    """A loaded causal LM made ready to train: gradient checkpointing (non-reentrant, so it also holds
    under a LoRA adapter whose frozen inputs need no gradient), then a fresh LoRA adapter (its weights in
    float32 over a base of any dtype, as peft's ``autocast_adapter_dtype`` does), train mode. Under
    ``master_weights="float32"`` every trainable weight ends in float32."""
    check_master_weights(master_weights)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora:
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - seconds to import; only LoRA needs it

        spec = lora if isinstance(lora, LoraSpec) else LoraSpec(**lora)
        model = get_peft_model(
            model,
            LoraConfig(
                r=spec.r,
                lora_alpha=spec.alpha,
                lora_dropout=spec.dropout,
                target_modules=list(spec.target_modules),
                task_type="CAUSAL_LM",
            ),
            autocast_adapter_dtype=True,
        )
    if master_weights == "float32":
        for param in model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    model.train()
    return model


def looks_local(path: str | Path) -> bool:
    """A filesystem path rather than a hub id ("org/name"): absolute, relative with ./ or ~, or deeper."""
    text = str(path)
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def _explain(path: str | Path, err: Exception) -> str:
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    if Path(str(path)).exists():
        return f"cannot load model files from {path}: {first_line}"
    if looks_local(path):
        return f"model.name_or_path={str(path)!r}: no such directory (a local model needs its files there)"
    return (
        f"cannot reach the weights of {str(path)!r} on the Hugging Face hub ({type(err).__name__}: "
        f"{first_line}). Check the network and HF_TOKEN (gated models), or run with model=tiny_warm "
        "(the embedded default)."
    )


@dataclass
class ModelSpec:
    """A policy to train: a hub id or directory (``name_or_path``), a GGUF file shipped in a PyPI package
    (``gguf``), or the embedded tiny model.

    Args:
        name: short name used in run names and tables.
        name_or_path: hub id (e.g. ``Qwen/Qwen2-1.5B-Instruct``) or local directory; None with ``embedded``
            or ``gguf``.
        embedded: a ``TinySpec`` to build the embedded model instead.
        gguf: a ``GGUFSpec`` (``r3exp.models.gguf``): the package and file of a GGUF model, converted once
            to a Hugging Face directory under ``paths.cache_dir/models/gguf``.
        dtype: weights dtype as loaded (``float32`` on CPU, ``bfloat16`` on GPU).
        master_weights: how trainable weights are kept (:data:`MASTER_WEIGHTS`): ``float32`` (full
            fine-tuning holds float32 weights, bf16 compute comes from ``trainer.precision=bf16-mixed``;
            16 bytes per parameter with AdamW) or ``kahan`` (weights in ``dtype``, AdamW with Kahan
            summation from torch-optimi: 10 bytes per parameter). LoRA adapters are float32 either way.
        lora: LoRA settings (``LoraSpec`` fields) or None for full fine-tuning.
        gradient_checkpointing: trade compute for activation memory.
        warm_start: a ``WarmStartSpec`` (see ``r3exp.scripted_sft``) for the embedded model: supervised
            training on the task's scripted episodes before R3. Ignored unless the model is embedded.
        init: ``pretrained`` (the weights at ``name_or_path``) or ``random``: ``architecture`` with random
            weights and the embedded tokenizer grown to its vocabulary (``r3exp.models.random_init``), for
            measuring a paper model's memory and speed on a machine without the hub.
        architecture: the model's ``config.json`` fields (``model_type``, ``vocab_size``, ``hidden_size``,
            ...), written out in the paper models' configs; used by ``init=random``.
    """

    name: str
    name_or_path: str | None = None
    embedded: Any = None
    gguf: Any = None
    dtype: str = "float32"
    lora: Any = None
    gradient_checkpointing: bool = False
    warm_start: Any = None
    master_weights: Literal["float32", "kahan"] = "float32"  # MASTER_WEIGHTS: checked with the config's types
    init: Literal["pretrained", "random"] = "pretrained"  # INITS
    architecture: Any = None

    @property
    def is_embedded(self) -> bool:
        """The embedded tiny model (built here, and warm-started when ``warm_start`` is set)."""
        return (
            self.init == "pretrained" and self.name_or_path is None and self.gguf is None and self.embedded is not None
        )

    def resolve(self, cache_dir: str | Path, corpus=None) -> str:
        """The path or hub id to load; builds the embedded model, or a random-weight one under
        ``init=random`` (tokenizer from ``corpus()``), if needed."""
        if self.init not in INITS:
            raise ConfigError(f"model.init={self.init!r} is not one of {list(INITS)}")
        if self.init == "random":
            if not self.architecture:
                raise ConfigError(
                    f"model.init=random: model {self.name!r} has no model.architecture (the fields of "
                    "its config.json; the paper models' configs write them out)"
                )
            return str(
                ensure_random_model(
                    dict(self.architecture), self.dtype, 0, corpus() if corpus else [], Path(cache_dir) / "models"
                )
            )
        if self.name_or_path:
            return str(self.name_or_path)
        if self.gguf is not None:
            return str(ensure_gguf_model(self.gguf, Path(cache_dir) / "models"))
        if self.embedded is None:
            raise ModelUnavailable(f"model {self.name!r}: set model.name_or_path (hub id or directory)")
        return str(ensure_tiny_model(self.embedded, corpus() if corpus else [], Path(cache_dir) / "models"))

    def load(self, path: str):
        lora = dict(self.lora) if self.lora else None
        return load_policy(path, self.dtype, lora, self.gradient_checkpointing, self.master_weights)
