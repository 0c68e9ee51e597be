"""Memory and time of one whole R3 training step at a real model's width and vocabulary, no hub needed.

    .venv/bin/python benchmarks/step_memory.py --rows 8 --context 600 --reflection 128 --lora
    .venv/bin/python benchmarks/step_memory.py --rows 64 --context 600 --reflection 128 --lora --micro-batch-tokens 4096
    .venv/bin/python benchmarks/step_memory.py ... --logprobs full-logits   # the simple computation, for comparison

Builds a random-init Qwen2 of the given shape (default: Qwen2-1.5B's width and vocabulary, 2 layers, tied
embeddings), LoRA r16 on every projection (``--lora``, the default) or full fine-tuning (``--full``), and
runs one optimizer step on ``rows`` rows of ``context`` + ``reflection`` tokens through r3exp's own step
(:func:`r3exp.grpo.step.accumulate_gradients`: every micro-batch's forward and backward; then gradient
clipping and the AdamW step, as the LightningModule does). Every row carries an advantage, so all go
through the forward. Run it in a fresh process: memory is the process's resident set (RSS), ``static``
after building the model and optimizer, ``peak`` the high-water mark during the step (reset after the
build through /proc/self/clear_refs). The optimizer's moments are created before ``static`` is read
(AdamW makes them lazily), so ``peak - static`` is what the step itself needs. The last line has a fixed format,
to compare across versions:

    static_gib=<RSS after build> peak_rss_gib=<peak RSS during the step> step_seconds=<s> tokens_per_second=<t>

On a CUDA machine (``--device cuda``) it also prints ``peak_gpu_gib`` (torch's peak allocated memory).

Several ranks (``--ranks 2``, gloo processes on this machine, each stepping on its own ``--rows`` rows):
replicated as under ``trainer=ddp`` (gradients summed over ranks), or sharded as under ``trainer=fsdp``
(``--sharded``: FSDP2, :mod:`r3exp.grpo.sharding`). The figures are the largest rank's. The ranks share
the machine's cores, so only the memory figures carry over to one rank per GPU:

    .venv/bin/python benchmarks/step_memory.py --rows 4 --context 600 --reflection 128 --full --ranks 2 [--sharded]
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from r3exp import CONF_DIR

GIB = 1024**3


def rss_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def build_policy(args):
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from r3exp.models.loading import LoraSpec, prepare_policy, torch_dtype

    torch.manual_seed(0)
    if args.config_from:  # a real model's architecture and every one of its layers, random weights
        config = AutoConfig.from_pretrained(args.config_from)
        model = AutoModelForCausalLM.from_config(config).to(dtype=torch_dtype(args.dtype), device=args.device)
        return prepare_policy(
            model, LoraSpec() if not args.full else None, args.gradient_checkpointing, args.master_weights
        )
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        tie_word_embeddings=not args.untied,
        max_position_embeddings=max(args.context + args.reflection, 2048),
    )
    model = Qwen2ForCausalLM(config).to(dtype=torch_dtype(args.dtype), device=args.device)
    return prepare_policy(
        model, LoraSpec() if not args.full else None, args.gradient_checkpointing, args.master_weights
    )


def synthetic_rollout(args) -> dict:
    """``rows`` rows of context ‖ reflection, groups of up to 8 with alternating rewards (all rows move)."""
    from r3exp.rollout.batching import reflection_mask

    generator = torch.Generator().manual_seed(0)
    n, total = args.rows, args.context + args.reflection
    group = min(8, n)
    mask = reflection_mask(torch.full((n,), args.context), torch.full((n,), args.reflection), total)
    return {
        "input_ids": torch.randint(0, args.vocab, (n, total), generator=generator),
        "attention_mask": torch.ones(n, total, dtype=torch.long),
        "reflection_mask": mask,
        "behaviour_logprobs": torch.where(mask, torch.full((n, total), -math.log(args.vocab)), 0.0),
        "rewards": (torch.arange(n) % 2).float(),
        "group_ids": torch.arange(n) // group,
        "row_kinds": torch.zeros(n, dtype=torch.long),
        "policy_version": torch.zeros(n, dtype=torch.long),
        "off_policy": torch.zeros(n, dtype=torch.bool),
    }


def materialise_optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """AdamW creates its moments at the first step: create them now with a step that changes nothing."""
    lr = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group in optimizer.param_groups:
        group["lr"] = lr


def full_logits_step(policy, rows, settings) -> None:
    """The simple computation (r3exp before token budgets): every row in one forward, full logits."""
    from r3exp.grpo import functions as F

    batch = {k: v.to(policy.device) if torch.is_tensor(v) else v for k, v in rows.batch.items()}
    logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logprobs = F.token_logprobs(logits, batch["input_ids"][:, 1:], settings.temperature)
    loss, _ = F.grpo_loss(
        logprobs,
        batch["behaviour_logprobs"][:, 1:],
        batch["advantages"],
        batch["reflection_mask"][:, 1:],
        epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high,
        loss_type=settings.loss_type,
        max_tokens=settings.max_reflection_tokens,
        step=rows.size,
    )
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--context", type=int, required=True)
    parser.add_argument("--reflection", type=int, required=True)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--intermediate", type=int, default=8960)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--untied", action="store_true", help="untied output layer (Qwen2-7B, Llama)")
    parser.add_argument(
        "--config-from",
        metavar="MODEL_DIR",
        help="a model directory whose config.json gives the architecture and shape (every layer; "
        "random weights), e.g. model=smollm2_135m's converted directory; overrides the shape flags",
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--lora", action="store_true", help="LoRA r16 on every projection (default)")
    kind.add_argument("--full", action="store_true", help="full fine-tuning")
    defaults = OmegaConf.load(CONF_DIR / "grpo" / "default.yaml")
    parser.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=defaults.max_tokens_per_micro_batch,
        help="grpo.max_tokens_per_micro_batch (default: the packaged grpo/default.yaml's)",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=defaults.logprob_chunk_size,
        help="grpo.logprob_chunk_size (default: the packaged grpo/default.yaml's)",
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--logprobs", choices=["reflection", "full-logits"], default="reflection")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="the weights' dtype as loaded (model.dtype); bfloat16 "
        "also computes in bf16 under autocast, as trainer.precision=bf16-mixed",
    )
    parser.add_argument(
        "--master-weights",
        choices=["float32", "kahan"],
        default="float32",
        help="model.master_weights: float32 trainable weights, or --dtype ones with Kahan AdamW",
    )
    parser.add_argument(
        "--plain-adamw",
        action="store_true",
        help="torch.optim.AdamW whatever the weights' dtype: "
        "with --dtype bfloat16 --master-weights kahan, pure bf16 (the updates are rounded away)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ranks", type=int, default=1, help="gloo processes, each stepping on its own --rows rows")
    parser.add_argument("--sharded", action="store_true", help="with --ranks: shard the policy (FSDP2, trainer=fsdp)")
    args = parser.parse_args()
    if args.config_from:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.config_from)
        args.vocab, args.hidden, args.intermediate = config.vocab_size, config.hidden_size, config.intermediate_size
        args.layers, args.untied = config.num_hidden_layers, not config.tie_word_embeddings
    if args.sharded and args.logprobs != "reflection":
        parser.error("--sharded computes reflection-only log-probs")
    if args.ranks == 1:
        run_rank(0, args, 0)
        return
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(run_rank, args=(args, port), nprocs=args.ranks, start_method="spawn")


def run_rank(rank: int, args, port: int) -> None:
    from r3exp import distributed
    from r3exp.grpo.optimizers import adamw
    from r3exp.grpo.step import LossSettings, accumulate_gradients, micro_batch_count, step_rows

    if args.ranks > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.ranks)
        torch.set_num_threads(max(1, torch.get_num_threads() // args.ranks))
    policy = model = build_policy(args)
    if args.sharded:
        from torch.distributed.device_mesh import init_device_mesh

        from r3exp.grpo.sharding import shard_policy

        model = shard_policy(policy, init_device_mesh(torch.device(args.device).type, (args.ranks,)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5) if args.plain_adamw else adamw(trainable, lr=1e-5)
    materialise_optimizer_state(optimizer, trainable)  # part of the static memory, not of the step's
    settings = LossSettings(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        loss_type="dapo",
        temperature=1.0,
        max_reflection_tokens=args.reflection,
        max_tokens_per_micro_batch=args.micro_batch_tokens,
        logprob_chunk_size=args.chunk,
    )
    rows = step_rows([synthetic_rollout(args)], "group", beta=0.0)
    pad_to = max(distributed.gather_objects(micro_batch_count(rows.batch, settings))) if args.sharded else None
    static = rss_bytes("VmRSS")
    exact_peak = reset_peak_rss()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    distributed.barrier()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    with autocast:  # bf16 compute over weights of any dtype, as trainer.precision=bf16-mixed
        if args.logprobs == "reflection":
            metrics = accumulate_gradients(model, rows, settings, device=args.device, pad_to=pad_to)
        else:
            full_logits_step(policy, rows, settings)
            metrics = {"micro_batches": 1.0}
    if not args.sharded:
        distributed.sum_gradients(trainable)  # as trainer=ddp does, once per step
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = rss_bytes("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else 0
    # the largest rank's figures (one rank: its own)
    static, peak, seconds, gpu_peak = (
        max(values) for values in zip(*distributed.gather_objects((static, peak, seconds, gpu_peak)))
    )
    if rank != 0:
        return
    trainable_dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in trainable})
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    ranks = "" if args.ranks == 1 else f"; {args.ranks} ranks, {'sharded (FSDP2)' if args.sharded else 'replicated'}"
    print(
        f"shape: {args.config_from or 'Qwen2'}: vocab {args.vocab}, hidden {args.hidden}, "
        f"intermediate {args.intermediate}, {args.layers} layers, "
        f"{'untied' if args.untied else 'tied'}; {'full' if args.full else 'LoRA r16'} "
        f"({trainable / 1e6:.1f}M trainable, {'/'.join(trainable_dtypes)}), "
        f"{args.dtype}, master weights {args.master_weights}, {type(optimizer).__module__}.{type(optimizer).__name__}, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
        f"torch threads {torch.get_num_threads()}{ranks}"
    )
    print(
        f"step: {args.rows} rows x ({args.context} + {args.reflection}) tokens, log-probs {args.logprobs}, "
        f"{int(metrics['micro_batches'])} micro-batches under {args.micro_batch_tokens} tokens, chunk {args.chunk}; "
        f"peak minus static {(peak - static) / GIB:.2f} GiB"
        + ("" if exact_peak else " (peak since process start: /proc/self/clear_refs unavailable)")
    )
    if args.device.startswith("cuda"):
        print(f"peak_gpu_gib={gpu_peak / GIB:.2f}")
    tokens = args.rows * (args.context + args.reflection)
    print(
        f"static_gib={static / GIB:.2f} peak_rss_gib={peak / GIB:.2f} step_seconds={seconds:.2f} "
        f"tokens_per_second={tokens / seconds:.0f}"
    )


if __name__ == "__main__":
    main()
