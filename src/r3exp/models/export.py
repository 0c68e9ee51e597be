"""Policy weights in plain Hugging Face names: for the engine's weight sync and for export."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


@contextmanager
def merged_lora(model) -> Iterator[None]:
    """Temporarily merge the LoRA adapter into the base weights (no-op for a plain model)."""
    if not is_peft(model):
        yield
        return
    with torch.no_grad():
        model.merge_adapter()
    try:
        yield
    finally:
        with torch.no_grad():
            model.unmerge_adapter()


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The (merged) weights under the base model's own parameter names, detached.

    For a peft model this is called inside :func:`merged_lora`; peft's ``base_model.model.`` prefix and
    ``.base_layer`` infix are removed and the adapter's own tensors are skipped (as TRL does).
    """
    if not is_peft(model):
        return {name: t.detach() for name, t in model.state_dict().items()}
    state = {}
    prefix = model.prefix  # "lora_"
    for name, tensor in model.state_dict().items():
        if prefix in name:
            continue
        clean = name.removeprefix("base_model.model.").replace(".base_layer", "")
        state[clean] = tensor.detach()
    return state


def save_policy(model, tokenizer, out_dir: str | Path) -> dict[str, Path]:
    """Save the final policy: ``merged/`` (full HF model, loadable by vLLM) and ``adapter/`` for LoRA."""
    out_dir = Path(out_dir)
    paths = {"merged": out_dir / "merged"}
    if is_peft(model):
        paths["adapter"] = out_dir / "adapter"
        model.save_pretrained(paths["adapter"])
        tokenizer.save_pretrained(paths["adapter"])
        with merged_lora(model):  # copies: the unmerge on leaving changes the weights back in place
            state = {name: tensor.clone() for name, tensor in hf_state_dict(model).items()}
        base = model.get_base_model()
        base.save_pretrained(paths["merged"], state_dict=state, safe_serialization=True)
    else:
        model.save_pretrained(paths["merged"], safe_serialization=True)
    tokenizer.save_pretrained(paths["merged"])
    return paths



def save_weights(model, tokenizer, out_dir: str | Path, merged: dict[str, torch.Tensor],
                 adapter: dict[str, torch.Tensor]) -> dict[str, Path]:
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
