"""The checks of benchmarks/gpu_check.py: each a pure function of what one configuration measured, returning
``(passed, detail)``, so that a CPU test can hand it a broken input and see it fail (tests/test_gpu_check.py).
Only torch: the GPU machine has nothing else this needs."""

from __future__ import annotations

import math

import torch

Check = tuple[bool, str]
# The engine/trainer log-prob gap (|log pi_trainer - log pi_engine| over the sampled reflection tokens, before
# each update) allowed per dtype. float32: the two must agree (the runs' own logprob_diff_max bound). bfloat16:
# they differ by rounding, which grows with width and depth. Measured, largest per step: an H200 at the real
# shapes (HF engine, 2 steps, LoRA and full; docs/measurements/gpu_*-h200-2026-12-01.log) max 0.071 at 1.5B and
# 0.204 at 7B, mean 0.015 and 0.037 (pure bf16 weights, before model.master_weights); this CPU (avx512_bf16) at
# --cpu-shapes (seeds 0-4, 4 steps, LoRA and full, correction none and truncate: 148 steps; float32 master
# weights under bf16 autocast) max 0.0039, mean 0.00086, as with pure bf16. The bounds are 2.5x and 2.7x the H200's
# largest: the max is a tail that grows with the tokens sampled, so it gets the larger margin; the mean is
# steadier and the sharper check: log-probs read one position off give a mean gap of 0.89 at 1.5B's width
# (random weights, measured; 0.17 at the CPU shapes), where a few stray tokens only move the max.
GAP_BOUNDS = {"float32": {"max": 1e-3}, "bfloat16": {"max": 0.5, "mean": 0.1}}


def qwen2_parameter_count(config: dict) -> int:
    """Qwen2's parameters from its config: embeddings V x H; per layer the q, k and v projections with
    biases (k and v at the key-value heads' width), o without, the MLP's gate, up and down (H x I each) and
    two RMSNorms; the final norm; the output layer V x H unless tied to the embeddings."""
    vocab, hidden, layers = config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden
    layer = attention + 3 * hidden * config["intermediate_size"] + 2 * hidden
    return vocab * hidden + layers * layer + hidden + (0 if config["tie_word_embeddings"] else vocab * hidden)


SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "tie_word_embeddings",
)


def check_architecture(model: torch.nn.Module, config: dict) -> Check:
    """The built model has the parameter count ``config`` implies (each tensor once: a tied output layer
    is the embedding) and the config's shape values."""
    count = sum(p.numel() for p in model.parameters())
    expected = qwen2_parameter_count(config)
    differ = {
        k: (getattr(model.config, k, None), config[k])
        for k in SHAPE_KEYS
        if getattr(model.config, k, None) != config[k]
    }
    return count == expected and not differ, (
        f"{count:,} parameters (expected {expected:,} from the config)"
        + (f"; config differs (model, expected): {differ}" if differ else "")
    )


def check_sleep(freed_gib: float, weights_gib: float) -> Check:
    """A sleeping engine gives back (nearly) its whole weights' GPU memory."""
    return freed_gib >= 0.9 * weights_gib > 0, f"{freed_gib:.2f} GiB freed of {weights_gib:.2f} GiB of weights"


def check_signal(signal_steps: int, steps: int) -> Check:
    """Some step had a reflection group whose rewards differ (else nothing trained)."""
    return signal_steps > 0, f"{signal_steps} of {steps} steps had a group with signal"


def check_training(losses: list[float], grad_norms: list[float]) -> Check:
    """Steps ran, every loss and gradient norm is finite, and some gradient is not zero."""
    finite = all(map(math.isfinite, losses + grad_norms))
    passed = bool(losses) and len(grad_norms) == len(losses) and finite and any(n > 0 for n in grad_norms)
    return passed, f"losses {[round(x, 4) for x in losses]}, grad norms {[round(x, 4) for x in grad_norms]}"


def check_gap(mismatches: list[dict[str, float]], dtype: str) -> Check:
    """Every trained step's engine/trainer gap (``correct_for_engine``'s metrics) within ``GAP_BOUNDS``."""
    bounds = GAP_BOUNDS[dtype]
    figures = {kind: [m[f"engine_gap_{kind}"] for m in mismatches] for kind in bounds}
    passed = bool(mismatches) and all(
        math.isfinite(g) and g < bound for kind, bound in bounds.items() for g in figures[kind]
    )
    detail = "; ".join(
        f"{kind} |trainer - engine| per step {[f'{g:.2e}' for g in figures[kind]]} (< {bound:g})"
        for kind, bound in bounds.items()
    )
    return passed, f"{detail}, {dtype}" if mismatches else f"no step trained, so no gap was measured ({dtype})"


def check_weight_push(engine_state: dict[str, torch.Tensor], trainer_state: dict[str, torch.Tensor]) -> Check:
    """Every tensor the engine holds equals the trainer's exported one (``hf_state_dict`` of the merged
    policy) as the engine's dtype stores it (float32 master weights are held in the engine's bfloat16), bit
    for bit, and neither side has a name the other lacks."""
    missing = sorted(trainer_state.keys() - engine_state.keys())
    extra = sorted(engine_state.keys() - trainer_state.keys())
    if missing or extra:
        return False, f"names differ: not in the engine {missing[:3]}, only in the engine {extra[:3]}"
    cast = {}
    for name, tensor in trainer_state.items():
        held = engine_state[name]
        if held.dtype != tensor.dtype:
            cast[(tensor.dtype, held.dtype)] = cast.get((tensor.dtype, held.dtype), 0) + 1
        if held.shape != tensor.shape or not torch.equal(held, tensor.to(device=held.device, dtype=held.dtype)):
            return False, (
                f"{name} differs (held {held.dtype} {tuple(held.shape)}, pushed {tensor.dtype} "
                f"{tuple(tensor.shape)}); {len(trainer_state)} tensors"
            )
    casts = "".join(f"; {n} pushed in {a}, held in {b}" for (a, b), n in cast.items())
    return bool(trainer_state), f"{len(trainer_state)} tensors equal{casts}"


def check_paper_step(outcome: dict[str, float] | torch.OutOfMemoryError, budget: int) -> Check:
    """The paper-scale step ran (no out-of-memory) to a finite loss and a finite, non-zero gradient norm."""
    if isinstance(outcome, torch.OutOfMemoryError):
        return False, f"out of memory: {str(outcome).splitlines()[0][:160]}"
    passed = math.isfinite(outcome["loss"]) and math.isfinite(outcome["grad_norm"]) and outcome["grad_norm"] > 0
    return passed, (
        f"{int(outcome['micro_batches'])} micro-batches of <= {budget} tokens; loss "
        f"{outcome['loss']:.4g}, grad norm {outcome['grad_norm']:.4g}"
    )


def first_failure(results: list[Check], none: str) -> Check:
    """The first failing result of a check run at every step, else the last; ``none`` when it never ran."""
    return next((r for r in results if not r[0]), results[-1] if results else (False, none))
