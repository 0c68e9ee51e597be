"""Sharded full fine-tuning: FSDP2 (``torch.distributed.fsdp.fully_shard``, through Lightning's
``ModelParallelStrategy``) over the data-parallel ranks, with the engine still receiving whole weights.

The units are the policy's decoder layers (the classes its Hugging Face config lists as
``_no_split_modules``, as accelerate and TRL wrap them) and one root, a :class:`ReflectionLogprobs` around
the policy that holds the embedding, the final norm and the output layer. Every forward and backward runs
collectives, so all ranks run the same number of micro-batches (``accumulate_gradients(pad_to=...)``).
Gradients are reduce-scattered as sums (divide factor 1): each rank's loss is already its share of the
whole step's loss, exactly as under DDP.

The engine's weights are gathered one unit at a time (:func:`gathered_hf_weights`): a decoder layer is
all-gathered, its (LoRA-merged) weights are handed over under Hugging Face names, and it is freed before
the next. No rank ever holds the whole model unsharded.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from r3exp.grpo.logprobs import ReflectionLogprobs
from r3exp.models.export import is_peft


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def decoder_layers(policy: torch.nn.Module) -> list[torch.nn.Module]:
    """The policy's repeated blocks: modules whose class its config names in ``_no_split_modules``."""
    base = policy.get_base_model() if is_peft(policy) else policy
    names = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise TypeError(
            f"{type(base).__name__} names no decoder layer class (_no_split_modules): r3exp cannot "
            "shard it; use trainer=ddp"
        )
    return layers


def shard_policy(policy: torch.nn.Module, mesh, param_dtype: torch.dtype | None = None) -> ReflectionLogprobs:
    """Shard ``policy`` in place over ``mesh`` (1-D, data-parallel): one FSDP unit per decoder layer and a
    root around it; returns the root, which computes the log-probs. ``param_dtype``: the dtype in which
    parameters are gathered and computed (the sharded copy, which the optimizer steps, keeps its own);
    gradients are reduced in float32."""
    precision = (
        MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if param_dtype
        else MixedPrecisionPolicy()
    )
    for layer in decoder_layers(policy):
        fully_shard(layer, mesh=mesh, mp_policy=precision)
    root = fully_shard(ReflectionLogprobs(policy), mesh=mesh, mp_policy=precision)
    for unit in root.modules():
        if isinstance(unit, FSDPModule):
            unit.set_gradient_divide_factor(1.0)  # sum: each rank's loss is its share of the step's loss
            unit.set_force_sum_reduction_for_comms(True)  # a plain sum (gloo has no pre-multiplied sum)
    return root


def _units(root: torch.nn.Module) -> list[torch.nn.Module]:
    """The FSDP units under ``root``, the root last."""
    return [m for m in root.modules() if isinstance(m, FSDPModule) and m is not root] + [root]


def _own_modules(unit: torch.nn.Module, units: list[torch.nn.Module]):
    """``(qualified name, module)`` of the modules whose parameters belong to ``unit`` (not to a unit inside it)."""
    inner = [u for u in units if u is not unit]
    skip = {id(m) for u in inner for m in u.modules()} if unit is units[-1] else set()
    for name, module in unit.named_modules():
        if id(module) not in skip:
            yield name, module


@torch.no_grad()
def gathered_hf_weights(root: torch.nn.Module, adapter: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's whole weights, under the base model's Hugging Face names, one unit gathered at a time
    (a collective: every rank iterates to the end). LoRA layers yield their merged weight and the adapter's
    own tensors are skipped; with ``adapter=True`` only the adapter's tensors are yielded, under the peft
    model's own state-dict names (what ``PeftModel.save_pretrained(state_dict=...)`` takes). Each tensor
    is a copy: the unit is freed when the iteration moves on."""
    units = _units(root)
    policy = root.policy
    peft = is_peft(policy)
    prefix = "policy." if not peft else "policy.base_model.model."
    seen: set[int] = set()  # tied weights are yielded once, under their first name
    for unit in units:
        unit.unshard()
        try:
            base = "" if unit is root else _qualified_name(root, unit) + "."
            for module_name, module in _own_modules(unit, units):
                for param_name, param in module.named_parameters(recurse=False):
                    name = (base + (module_name + "." if module_name else "") + param_name).removeprefix(prefix)
                    if id(param) in seen:
                        continue
                    seen.add(id(param))
                    is_adapter = peft and policy.prefix in name
                    if adapter != is_adapter:
                        continue
                    if adapter:
                        yield "base_model.model." + name, param.detach().clone()
                        continue
                    tensor = param.detach().clone()
                    if peft and name.endswith(".base_layer.weight"):
                        owner = root.get_submodule(_qualified_name(root, module).rpartition(".")[0])
                        delta = _lora_delta(owner, policy)  # added in its float32, rounded once (as peft's merge)
                        tensor = (tensor.to(delta.dtype) + delta).to(tensor.dtype)
                    yield name.replace(".base_layer", ""), tensor
        finally:
            unit.reshard()


def _qualified_name(root: torch.nn.Module, target: torch.nn.Module) -> str:
    return next(name for name, module in root.named_modules() if module is target)


def _adapter_name(policy) -> str:
    return policy.active_adapter if isinstance(policy.active_adapter, str) else policy.active_adapter[0]


def _lora_delta(layer, policy) -> torch.Tensor:
    """The active adapter's weight delta of a LoRA layer (peft's own ``get_delta_weight``)."""
    return layer.get_delta_weight(_adapter_name(policy))
