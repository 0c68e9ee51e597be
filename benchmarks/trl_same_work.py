"""The same GRPO work through r3exp and through TRL's GRPOTrainer: seconds per optimizer step, split into
generation and training, and tokens per second of each.

    scripts/install.sh trl                        # TRL (trl==1.16.0) for this benchmark only: the `trl` extra
    .venv/bin/python benchmarks/trl_same_work.py                   # SmolLM2-135M-Instruct, full fine-tuning
    .venv/bin/python benchmarks/trl_same_work.py --lora            # LoRA r16 on every projection
    .venv/bin/python benchmarks/trl_same_work.py --bf16            # both trainers under bf16 autocast
    .venv/bin/python benchmarks/trl_same_work.py --trl-keeps-freed-memory   # TRL with r3exp's malloc setting
    .venv/bin/python benchmarks/trl_same_work.py --trl-gradient-checkpointing   # TRL's default (True); off otherwise
    .venv/bin/python benchmarks/trl_same_work.py --model tiny --steps 4   # the embedded model (seconds)
    .venv/bin/python benchmarks/trl_same_work.py engine.enforce_eager=false  # r3exp overrides (its side only)

The work, identical on both sides: plain GRPO (r3exp's ``rollout.protocol=grpo``), 8 two-number Countdown
prompts (``task=countdown_pairs``'s training split, its prompt) x 8 samples of at most 48 tokens at temperature
1, top-p 1; a reward any model earns about half the time, so that every group has signal and every row is
trained on both sides (the md5 parity of the completion's text; the same function on both sides); one
optimizer step per generation batch (TRL: one 64-row batch, no gradient accumulation; r3exp: its micro-batches),
beta = 0 (no reference model), DAPO loss, clip 0.2 / 0.28, AdamW lr 1e-5 (betas 0.9, 0.99, no decay,
constant), gradient clipping at 1.0, fp32 weights, seed 0, no gradient checkpointing (TRL's GRPOConfig defaults
it to True: set False explicitly; ``--trl-gradient-checkpointing`` measures TRL's default). Generation: r3exp
samples with vLLM (CPU build); TRL 1.16 samples with transformers' ``generate`` on CPU (its vLLM path needs
vllm<=0.31 and a CUDA device for the colocated weight sync). Each side runs in its own fresh process, one after the
other, never side by side.

Per step it prints: seconds (whole step), generation (TRL: ``_generate_and_score_completions``, which samples and
scores; r3exp: the rollout), training (the rest: forward, backward, optimizer; r3exp: also the weight push to the
engine), rows trained (rows whose advantage is not zero; r3exp skips the others, TRL trains them all), sampled
tokens and their tokens/s, trained tokens/s, and the process's minor page faults in thousands (fresh pages the
kernel zero-filled: r3exp keeps freed memory for reuse, r3exp.host_memory; glibc's default returns it to the
system, ``--trl-keeps-freed-memory`` gives TRL's process r3exp's setting). The summary is the median over steps
2..n (step 1 warms up) and the ratio r3exp / TRL of each. Prompts are drawn by each side's own sampler from the
same split, so the rows differ but not their distribution: the mean prompt and completion lengths are printed to
show it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from r3exp.tasks.countdown import CountdownTask

EXAMPLES_PER_STEP, GROUP_SIZE, MAX_COMPLETION_TOKENS = 8, 8, 48
LR, CLIP_LOW, CLIP_HIGH, MAX_GRAD_NORM, SEED = 1e-5, 0.2, 0.28, 1.0, 0
LORA = {
    "r": 16,
    "alpha": 32,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def page_faults() -> int:
    """This process's minor page faults so far, in thousands (each a fresh page the kernel zero-filled)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt // 1000


def parity_reward(text: str) -> bool:
    """True for about half of all texts, whatever the model: the md5 parity of ``text``."""
    return hashlib.md5(text.encode()).digest()[0] % 2 == 0


class ParityCountdown(CountdownTask):
    """``task=countdown_pairs``'s prompts, rewarded by :func:`parity_reward` (a user task, as in
    docs/how-to/own-task.md's
    "Your own task": the config's ``_target_`` points here)."""

    def validate(self, example, answer):
        return parity_reward(answer)


def compose(model: str, lora: bool, steps: int, out: str, bf16: bool = False, extra: list[str] = ()):
    """r3exp's config for the shared work (module docstring) on ``model``, writing under ``out``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from r3exp import CONF_DIR

    overrides = [
        f"model={model}",
        "task=countdown_pairs",
        "task._target_=trl_same_work.ParityCountdown",
        "rollout.protocol=grpo",
        f"rollout.examples_per_step={EXAMPLES_PER_STEP}",
        f"rollout.group_size={GROUP_SIZE}",
        f"rollout.attempt.max_tokens={MAX_COMPLETION_TOKENS}",
        "rollout.reflection.top_p=1.0",
        "grpo.loss.temperature=1.0",
        "grpo.loss.beta=0.0",
        "grpo.loss.loss_type=dapo",
        f"grpo.loss.epsilon={CLIP_LOW}",
        f"grpo.loss.epsilon_high={CLIP_HIGH}",
        f"grpo.max_grad_norm={MAX_GRAD_NORM}",
        f"optimizer.optimizer.lr={LR}",
        "optimizer.optimizer.betas=[0.9,0.99]",
        "optimizer.optimizer.weight_decay=0.0",
        f"trainer.max_steps={steps}",
        f"seed={SEED}",
        f"paths.output_dir={out}",
        "run_name=trl_same_work",
        "logger=none",
        "callbacks.progress.refresh_rate=0",
        "~callbacks.step_timer",
        "~callbacks.checkpoint",
        "~callbacks.reflection_samples",
        "~callbacks.metrics_file",
        "callbacks.sampled_token_budget.max_sampled_tokens=null",
    ]
    lora_config = (
        f"{{r:{LORA['r']},alpha:{LORA['alpha']},dropout:0.0,target_modules:[{','.join(LORA['target_modules'])}]}}"
    )
    overrides.append(f"model.lora={lora_config}" if lora else "model.lora=null")
    overrides += ["trainer.precision=bf16-mixed"] if bf16 else []
    overrides += list(extra)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def model_directory(model: str) -> str:
    """The model's Hugging Face directory, built (the embedded model) or converted (SmolLM2's GGUF) by r3exp."""
    from hydra.utils import instantiate

    from r3exp.embedded import tiny_corpus

    with tempfile.TemporaryDirectory() as out:
        cfg = compose(model, False, 1, out)
        return instantiate(cfg.model).resolve(cfg.paths.cache_dir, corpus=tiny_corpus)


def training_prompts(model: str) -> list[list[dict]]:
    """The chat messages of the training split's first attempts, in the split's order."""
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as out:
        task = instantiate(compose(model, False, 1, out).task)
    return [task.first_attempt_messages(example) for example in task.examples("train")]


def run_r3exp(model: str, lora: bool, steps: int, bf16: bool, extra: list[str]) -> list[dict]:
    import lightning as L

    from r3exp import keys
    from r3exp.runtime.components import build_components
    from r3exp.runtime.environment import setup_environment
    from r3exp.runtime.fitting import fit_policy
    from r3exp.tracking.step_timer import StepTimer

    class Rows(L.Callback):
        def __init__(self):
            self.history = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            rollouts, advantages = module.last_step.rollouts, module.last_step.advantages
            prompts = [ep.reflection_prompt_ids for r in rollouts for ep in r.episodes]
            self.history.append(
                {
                    "rows": sum(len(a) for a in advantages),
                    "trained_rows": sum(int(a.ne(0).sum()) for a in advantages),
                    "sampled_tokens": sum(
                        len(c.token_ids) for r in rollouts for ep in r.episodes for c in ep.reflections
                    ),
                    "prompt_tokens": statistics.mean(len(p) for p in prompts),
                    "page_faults": page_faults(),
                }
            )
            print(f"[r3exp] step {trainer.global_step} done", flush=True)

    setup_environment()
    with tempfile.TemporaryDirectory() as out:
        cfg = compose(model, lora, steps, out, bf16, extra)
        L.seed_everything(cfg.seed)
        parts = build_components(cfg)
        timer, rows = StepTimer(), Rows()
        fit_policy(cfg, parts, Path(cfg.paths.output_dir), extra_callbacks=[timer, rows])
        parts.engine.close()
    return [
        {
            "step": t["step"],
            "seconds": t["time/step_seconds"],
            "generation_seconds": t["time/generation_seconds"],
            "train_seconds": t["time/step_seconds"] - t["time/generation_seconds"],
            "push_seconds": t[keys.SYNC_SECONDS],
            "trained_tokens": t["trained_tokens"],
            **r,
        }
        for t, r in zip(timer.history, rows.history)
    ]


def run_trl(
    model: str,
    lora: bool,
    steps: int,
    bf16: bool,
    extra: list[str],
    keep_freed_memory: bool = False,
    gradient_checkpointing: bool = False,
) -> list[dict]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if keep_freed_memory:
        from r3exp.host_memory import reuse_freed_memory

        reuse_freed_memory()
    path = model_directory(model)
    history: list[dict] = []

    class TimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer, timing its generation (sampling and scoring) apart from the rest of the step."""

        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            output = super()._generate_and_score_completions(inputs)
            history.append(
                {
                    "generation_seconds": time.perf_counter() - start,
                    "rows": int(output["completion_ids"].shape[0]),
                    "trained_rows": int(output["advantages"].ne(0).sum()),
                    "sampled_tokens": int(output["completion_mask"].sum()),
                    "prompt_tokens": float(output["prompt_mask"].sum(1).float().mean()),
                    "trained_tokens": int(output["prompt_mask"].sum() + output["completion_mask"].sum()),
                }
            )
            return output

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            row = history[-1]
            row["step"] = state.global_step
            row["seconds"] = time.perf_counter() - self.start
            row["page_faults"] = page_faults()
            row["train_seconds"] = row["seconds"] - row["generation_seconds"]
            print(f"[trl] step {state.global_step}: {row['seconds']:.1f} s", flush=True)

    def reward(completions, **_):
        return [float(parity_reward(c[0]["content"] if isinstance(c, list) else c)) for c in completions]

    prompts = training_prompts(model)
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])
    rows = EXAMPLES_PER_STEP * GROUP_SIZE
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        use_cpu=True,
        bf16=bf16,
        fp16=False,
        seed=SEED,
        max_steps=steps,
        per_device_train_batch_size=rows,
        gradient_accumulation_steps=1,
        num_generations=GROUP_SIZE,
        max_completion_length=MAX_COMPLETION_TOKENS,
        temperature=1.0,
        top_p=1.0,
        beta=0.0,
        loss_type="dapo",
        epsilon=CLIP_LOW,
        epsilon_high=CLIP_HIGH,
        scale_rewards="group",
        learning_rate=LR,
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=MAX_GRAD_NORM,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_vllm=False,
        # GRPOConfig's default is True (TRL's base config); r3exp does not checkpoint, so the same work is False
        gradient_checkpointing=gradient_checkpointing,
    )
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=0.0,
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        )
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer = TimedGRPOTrainer(
        model=policy,
        processing_class=tokenizer,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=[StepClock()],
    )
    trainer.train()
    return history


def median(rows: list[dict], key: str) -> float:
    steady = rows[1:] or rows
    return statistics.median(r[key] for r in steady)


def report(name: str, rows: list[dict]) -> dict:
    print(f"\n{name}")
    print(
        f"{'step':>4} {'seconds':>8} {'generation':>10} {'training':>9} {'rows':>5} {'trained':>7} "
        f"{'sampled':>7} {'gen tok/s':>9} {'train tok/s':>11} {'prompt len':>10} {'faults k':>8}"
    )
    for i, r in enumerate(rows):
        faults = r["page_faults"] - (rows[i - 1]["page_faults"] if i else 0)  # the first step's: since start
        print(
            f"{r['step']:>4} {r['seconds']:>8.2f} {r['generation_seconds']:>10.2f} {r['train_seconds']:>9.2f} "
            f"{r['rows']:>5} {r['trained_rows']:>7} {r['sampled_tokens']:>7} "
            f"{r['sampled_tokens'] / r['generation_seconds']:>9.0f} {r['trained_tokens'] / r['train_seconds']:>11.0f} "
            f"{r['prompt_tokens']:>10.1f} {faults:>8}"
        )
    summary = {k: median(rows, k) for k in ("seconds", "generation_seconds", "train_seconds")}
    summary["generation_tokens_per_second"] = median(
        [{"v": r["sampled_tokens"] / r["generation_seconds"]} for r in rows], "v"
    )
    summary["train_tokens_per_second"] = median([{"v": r["trained_tokens"] / r["train_seconds"]} for r in rows], "v")
    summary["trained_row_share"] = sum(r["trained_rows"] for r in rows) / sum(r["rows"] for r in rows)
    summary["completion_tokens_per_row"] = sum(r["sampled_tokens"] for r in rows) / sum(r["rows"] for r in rows)
    print("median over steps 2..n: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="an r3exp model config (model=...)")
    parser.add_argument("--lora", action="store_true", help="LoRA r16 on every projection (default: full fine-tuning)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="both trainers under bf16 autocast (r3exp: trainer.precision=bf16-mixed; TRL: bf16=True)",
    )
    parser.add_argument(
        "--trl-keeps-freed-memory",
        action="store_true",
        help="TRL's process keeps freed memory as r3exp's does (r3exp.host_memory): only the trainers "
        "differ, not glibc's settings",
    )
    parser.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="TRL recomputes activations in the backward (GRPOConfig's default); off by default, "
        "since r3exp does not checkpoint (model.gradient_checkpointing=false)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the r3exp side")
    parser.add_argument("--side", choices=["trl", "r3exp"], help=argparse.SUPPRESS)  # the child processes
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "trl":
        rows = run_trl(
            args.model,
            args.lora,
            args.steps,
            args.bf16,
            args.overrides,
            args.trl_keeps_freed_memory,
            args.trl_gradient_checkpointing,
        )
    elif args.side == "r3exp":
        rows = run_r3exp(args.model, args.lora, args.steps, args.bf16, args.overrides)
    if args.side:
        Path(args.out).write_text(json.dumps(rows))
        return
    try:
        import trl  # noqa: F401  (fail before the r3exp side runs)
    except ImportError:
        sys.exit("error: TRL is not installed: scripts/install.sh trl (the `trl` extra, trl==1.16.0)")
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("r3exp", "trl"):
            out = Path(tmp) / f"{side}.json"
            command = (
                [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--model",
                    args.model,
                    "--steps",
                    str(args.steps),
                    "--out",
                    str(out),
                ]
                + (["--lora"] if args.lora else [])
                + (["--bf16"] if args.bf16 else [])
                + (["--trl-keeps-freed-memory"] if args.trl_keeps_freed_memory else [])
                + (["--trl-gradient-checkpointing"] if args.trl_gradient_checkpointing else [])
                + args.overrides
            )
            print(f"[{side}] {' '.join(command)}", flush=True)
            started = time.perf_counter()
            path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
            subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": path})
            print(f"[{side}] {time.perf_counter() - started:.0f} s in all", flush=True)
            setting = (
                f"{args.model}, {'LoRA r16' if args.lora else 'full fine-tuning'}, "
                f"{'bf16 autocast' if args.bf16 else 'fp32'}"
            )
            if side == "trl":
                setting += f", gradient checkpointing {'on' if args.trl_gradient_checkpointing else 'off'}"
            if side == "trl" and args.trl_keeps_freed_memory:
                setting += ", freed memory kept"
            summaries[side] = report(
                f"{side} ({setting}{', ' + ' '.join(args.overrides) if side == 'r3exp' and args.overrides else ''})",
                json.loads(out.read_text()),
            )
    r3, ref = summaries["r3exp"], summaries["trl"]
    print(
        f"\nr3exp / TRL, median seconds per step: whole step {r3['seconds'] / ref['seconds']:.2f}x "
        f"({r3['seconds']:.1f} s vs {ref['seconds']:.1f} s), generation "
        f"{r3['generation_seconds'] / ref['generation_seconds']:.2f}x, training "
        f"{r3['train_seconds'] / ref['train_seconds']:.2f}x; rows trained {r3['trained_row_share']:.0%} vs "
        f"{ref['trained_row_share']:.0%}; completion tokens per row {r3['completion_tokens_per_row']:.1f} vs "
        f"{ref['completion_tokens_per_row']:.1f}"
    )


if __name__ == "__main__":
    main()
