"""Several training steps of shared-prompt GRPO rows, one after the other: seconds, page faults and resident
memory per step, with glibc's ``malloc`` keeping freed memory (r3exp's default, :mod:`r3exp.host_memory`) or
not (``--system-malloc``).

    .venv/bin/python benchmarks/steady_steps.py                   # SmolLM2-135M-Instruct, 64 rows, 12 steps
    .venv/bin/python benchmarks/steady_steps.py --system-malloc   # glibc's defaults (reuse_freed_memory=false)

Each step: 8 groups of 8 rows (a random prompt of 88-96 tokens shared by the group, random continuations of
20-48 tokens, all scored), through r3exp's forward and backward (:func:`r3exp.grpo.step.accumulate_gradients`:
micro-batches under the default token budget, each group's prompt run once), then AdamW (lr 1e-7, so the
model barely moves). New rows every step, as in training. Printed per step: seconds, minor page faults (in
thousands: fresh pages the kernel zero-filled), resident memory after the step and its peak so far; then the
median seconds over steps 2..n. Run it alone: it measures time.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from r3exp.grpo.functions import StepSize
from r3exp.grpo.step import LossSettings, StepRows, accumulate_gradients
from r3exp.host_memory import reuse_freed_memory


def rows(generator: torch.Generator, vocab: int, groups: int = 8, group_size: int = 8) -> dict:
    """Right-padded rows: each group's prompt, then each row's own continuation (scored)."""
    prompts = [
        torch.randint(0, vocab, (int(torch.randint(88, 97, (1,), generator=generator)),), generator=generator)
        for _ in range(groups)
    ]
    tokens, starts = [], []
    for prompt in prompts:
        for _ in range(group_size):
            continuation = torch.randint(
                0, vocab, (int(torch.randint(20, 49, (1,), generator=generator)),), generator=generator
            )
            tokens.append(torch.cat([prompt, continuation]))
            starts.append(len(prompt))
    width = max(len(t) for t in tokens)
    input_ids = torch.zeros(len(tokens), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    reflection_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, (row, start) in enumerate(zip(tokens, starts)):
        input_ids[i, : len(row)], attention_mask[i, : len(row)], reflection_mask[i, start : len(row)] = row, 1, True
    advantages = torch.randn(len(tokens), generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "reflection_mask": reflection_mask,
        "behaviour_logprobs": torch.where(reflection_mask, -2.0, 0.0),
        "advantages": advantages,
    }


def resident_gib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="an r3exp model config (model=...)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--system-malloc", action="store_true", help="glibc's defaults: freed memory goes back")
    args = parser.parse_args()
    if not args.system_malloc:
        assert reuse_freed_memory(), "glibc's mallopt is not available here"
    from transformers import AutoModelForCausalLM
    from trl_same_work import model_directory  # benchmarks/ is the script's directory

    policy = AutoModelForCausalLM.from_pretrained(model_directory(args.model), dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-7)
    settings = LossSettings(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        loss_type="dapo",
        temperature=1.0,
        max_reflection_tokens=48,
        share_prompts=True,
    )
    generator = torch.Generator().manual_seed(0)
    seconds, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for step in range(1, args.steps + 1):
        batch = rows(generator, policy.config.vocab_size)
        start = time.perf_counter()
        accumulate_gradients(
            policy, StepRows(batch, StepSize.of(batch["reflection_mask"][:, 1:]), batch["advantages"]), settings
        )
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - start)
        now = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"step {step:>2}: {seconds[-1]:6.2f} s, page faults {(now.ru_minflt - faults) // 1000:>5}k, "
            f"resident {resident_gib():.2f} GiB, peak {now.ru_maxrss / 2**20:.2f} GiB",
            flush=True,
        )
        faults = now.ru_minflt
    print(
        f"median over steps 2..{args.steps}: {statistics.median(seconds[1:] or seconds):.2f} s "
        f"({'glibc defaults' if args.system_malloc else 'freed memory kept'})"
    )


if __name__ == "__main__":
    main()
