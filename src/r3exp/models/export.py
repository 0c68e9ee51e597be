"""Policy weights in plain Hugging Face names: for the engine's weight sync and for export."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def merged_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under the base model's own parameter names, a LoRA adapter merged in, without
    changing the model: one ``(name, tensor)`` at a time.

    A plain model's tensors are its own (detached). For a peft model, each LoRA layer's base weight comes as a
    new tensor ``W + ΔW`` (peft's ``get_delta_weight``, added in ΔW's float32 and rounded once to W's dtype,
    as peft's ``merge`` does), the rest as themselves; peft's ``base_model.model.`` prefix and
    ``.base_layer`` infix are removed and the adapter's own tensors skipped (as TRL does). Merging in place
    and unmerging after (peft's ``merge_adapter``/``unmerge_adapter``) would round a bf16 base twice: each
    weight push moved the frozen base weights a little (half of a small model's tensors after one push).
    """
    if not is_peft(model):
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()
        return
    adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapter[0]
    modules = dict(model.named_modules())
    for name, tensor in model.state_dict().items():
        if model.prefix in name:  # "lora_": the adapter's own tensors
            continue
        clean = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if name.endswith(".base_layer.weight"):
            with torch.no_grad():
                delta = modules[name.removesuffix(".base_layer.weight")].get_delta_weight(adapter)
                tensor = (tensor.to(delta.dtype) + delta).to(tensor.dtype)
        yield clean, tensor.detach()


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """:func:`merged_weights` as a dict (for export and checks; a push streams them instead)."""
    return dict(merged_weights(model))


def save_policy(model, tokenizer, out_dir: str | Path) -> dict[str, Path]:
    """Save the final policy: ``merged/`` (full HF model, loadable by vLLM) and ``adapter/`` for LoRA."""
    out_dir = Path(out_dir)
    paths = {"merged": out_dir / "merged"}
    if is_peft(model):
        paths["adapter"] = out_dir / "adapter"
        model.save_pretrained(paths["adapter"])
        tokenizer.save_pretrained(paths["adapter"])
        state = hf_state_dict(model)
        base = model.get_base_model()
        base.save_pretrained(paths["merged"], state_dict=state, safe_serialization=True)
    else:
        model.save_pretrained(paths["merged"], safe_serialization=True)
    tokenizer.save_pretrained(paths["merged"])
    return paths


def save_weights(
    model, tokenizer, out_dir: str | Path, merged: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor]
) -> dict[str, Path]:
    """:func:`save_policy` from weights gathered elsewhere (a sharded policy, whose own parameters are
    shards): ``merged`` under the base model's names, ``adapter`` under the peft model's own names."""
    out_dir = Path(out_dir)
    paths = {"merged": out_dir / "merged"}
    if is_peft(model):
        paths["adapter"] = out_dir / "adapter"
        model.save_pretrained(paths["adapter"], state_dict=adapter)
        tokenizer.save_pretrained(paths["adapter"])
        model = model.get_base_model()
    model.save_pretrained(paths["merged"], state_dict=merged, safe_serialization=True)
    tokenizer.save_pretrained(paths["merged"])
    return paths
