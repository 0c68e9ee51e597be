"""Where an R3 step's time goes, against its floor: the same sampled tokens in one plain engine call plus one
forward and backward of the same rows.

    .venv/bin/python benchmarks/r3_step_profile.py                      # experiment=r3_smollm2's settings, 5 steps
    .venv/bin/python benchmarks/r3_step_profile.py engine.block_size=128   # before: vLLM-CPU's own 128-token KV blocks
    .venv/bin/python benchmarks/r3_step_profile.py --job                # and one whole r3_smollm2 job, by phase
    .venv/bin/python benchmarks/r3_step_profile.py --model tiny --steps 2   # the embedded model (seconds; the suite)

The steps: ``experiment=r3_smollm2``'s single job (SmolLM2-135M-Instruct, LoRA r16, task=arithmetic, 8 examples x
G 8, 16/32/16-token turns, its reflection prompt, lr 5e-4), ``rollout.protocol=r3``, seed 0, in this fresh
process. Per step it prints each generation turn (first attempts, reflections, retries: calls, prompts, rows,
prompt tokens, sampled tokens, seconds, tokens/s), then the step's wall time split into: the engine's turns,
reward (validating the retries), rollout bookkeeping (rendering prompts, building the batch), the trainer's
no-grad log-probs (``grpo.loss.behaviour=trainer`` or a correction; absent by default), forward+backward,
optimizer (clipping and the update), the weight push to the engine, and everything else (Lightning, logging,
callbacks).

The floor of a step, measured after training on the same engine and policy: **generation** = the step's
sampled tokens in one plain call at the batch shape of its reflection turn (its reflection prompts, n = G, every
row ``ceil(tokens / rows)`` tokens long: ``min_tokens = max_tokens``); **training** = one forward and backward of
the rows the step trained (no optimizer step). ``step / floor`` is what an R3 step costs beyond the work any
sampler and trainer must do for its tokens: the three dependent calls, their prompts' prefill, the reward, the
push and the bookkeeping. The summary is the median over steps 2..n (step 1 warms up).

``--job`` then runs one whole ``experiment=r3_smollm2`` job (seed 0, ``rollout.protocol=r3``, its sampled-token
budget) with ``python -m r3exp`` in a fresh process and prints its phases (engine start, base evaluation,
training, trained evaluation, forgetting check, export) from its ``results.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

from r3exp.rollout.rollout_stats import has_signal

TURNS = ("attempt", "reflection", "retry")
PARTS = (
    "generation (engine)",
    "reward",
    "rollout bookkeeping",
    "trainer log-probs",
    "forward+backward",
    "optimizer",
    "weight push",
    "everything else",
)
# experiment=r3_smollm2's single job; tiny: the main job's embedded model and task, for the suite
SETTINGS = {"smollm2": ["experiment=r3_smollm2"], "tiny": []}
JOB = ["experiment=r3_smollm2", "hydra.mode=RUN", "seed=0", "rollout.protocol=r3"]


class StepProfile(L.Callback):
    """Each step's wall time and parts, the engine's work per turn, and the rows it trained (for the floor)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.trained: list = []  # each step's StepRows (the floor's forward and backward)
        self.reflection_prompts: list[tuple[list[list[int]], int]] = []  # each step's (prompts, n)
        self.module = None  # kept at the end of training, for the floor
        self._start = 0.0

    def on_train_end(self, trainer, module):
        self.module = module

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        wall = time.perf_counter() - self._start
        record, timing = module.last_step, trainer.datamodule.last_timing
        engine = timing.seconds
        rollout_wall = record.generation_seconds
        parts = {
            "generation (engine)": engine,
            "reward": timing.reward_seconds,
            "rollout bookkeeping": max(rollout_wall - engine - timing.reward_seconds, 0.0),
            "trainer log-probs": record.phase_seconds.get("trainer_logprobs", 0.0)
            + record.phase_seconds.get("reference_logprobs", 0.0),
            "forward+backward": record.phase_seconds.get("forward_backward", 0.0),
            "optimizer": record.phase_seconds.get("optimizer", 0.0),
            "weight push": record.sync_seconds,
        }
        parts["everything else"] = max(wall - sum(parts.values()), 0.0)
        turns = {name: vars(t) | {"tokens_per_second": t.tokens_per_second} for name, t in timing.turns.items()}
        episodes = trainer.datamodule.last_episodes
        self.rows.append(
            {
                "step": trainer.global_step,
                "wall": wall,
                "parts": parts,
                "turns": turns,
                "draws": record.rollout_stats.get("rollout/draws", 1.0),
                "sampled_tokens": timing.generated_tokens,
                "trained_tokens": record.trained_tokens,
                "tokens_without_signal": sum(episode_tokens(ep) for ep in episodes if not has_signal([ep])),
            }
        )
        self.trained.append(module.rows if record.metrics.get("train/skipped") == 0.0 else None)
        groups = [ep for ep in episodes if ep.reflections]
        self.reflection_prompts.append(
            ([ep.reflection_prompt_ids for ep in groups], len(groups[0].reflections) if groups else 0)
        )


def episode_tokens(episode) -> int:
    """Every token the engine sampled for an episode: its attempt, reflections and retries."""
    return sum(len(c.token_ids) for c in [episode.attempt, *episode.reflections, *episode.retries])


def floor_of(row: dict, prompts: list[list[int]], n: int, trained, parts, module, sampling) -> dict:
    """The floor of one profiled step: one plain call sampling as many tokens at its reflection turn's shape,
    and one forward and backward of the rows it trained."""
    from r3exp.grpo.step import accumulate_gradients

    rows = len(prompts) * n
    length = math.ceil(row["sampled_tokens"] / rows) if rows else 0
    generation = 0.0
    if rows and length:
        fixed = dataclasses.replace(sampling, max_tokens=length, min_tokens=length)
        start = time.perf_counter()
        out = parts.engine.generate(prompts, n, fixed, stream="floor")
        generation = time.perf_counter() - start
        sampled = sum(len(c.token_ids) for group in out for c in group)
    else:
        sampled = 0
    training = 0.0
    if trained is not None:
        start = time.perf_counter()
        accumulate_gradients(module.trained_model, trained, module.settings)
        training = time.perf_counter() - start
        module.policy.zero_grad(set_to_none=True)
    return {
        "generation": generation,
        "training": training,
        "total": generation + training,
        "rows": rows,
        "row_tokens": length,
        "sampled_tokens": sampled,
    }


def profile(args, overrides: list[str]) -> list[dict]:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from r3exp import CONF_DIR
    from r3exp.runtime.components import build_components
    from r3exp.runtime.environment import setup_environment
    from r3exp.runtime.fitting import fit_policy

    setup_environment()
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *SETTINGS[args.model],
                "rollout.protocol=r3",
                "seed=0",
                f"paths.output_dir={out}",
                "run_name=benchmark",
                "logger=none",
                "forgetting.enabled=false",
                "callbacks.progress.refresh_rate=0",
                "~callbacks.step_timer",
                "~callbacks.checkpoint",
                "~callbacks.reflection_samples",
                "~callbacks.metrics_file",
                f"trainer.max_steps={args.steps}",
                "callbacks.sampled_token_budget.max_sampled_tokens=null",
                *overrides,
            ],
        )
        L.seed_everything(cfg.seed)
        started = time.perf_counter()
        parts = build_components(cfg)
        engine_start = time.perf_counter() - started
        profiler = StepProfile()
        fit_policy(cfg, parts, Path(cfg.paths.output_dir), extra_callbacks=[profiler])
        module = profiler.module
        sampling = instantiate(cfg.rollout.reflection)
        for row, (prompts, n), trained in zip(profiler.rows, profiler.reflection_prompts, profiler.trained):
            row["floor"] = floor_of(row, prompts, n, trained, parts, module, sampling)
            row["ratio"] = row["wall"] / row["floor"]["total"] if row["floor"]["total"] else math.nan
        parts.engine.close()
    print(
        f"\nR3 step profile: {' '.join(SETTINGS[args.model]) or 'the main job'}, {args.steps} steps, engine start "
        f"{engine_start:.1f} s; overrides: {' '.join(overrides) or '(none)'}"
    )
    for row in profiler.rows:
        print_step(row)
    print_summary(profiler.rows)
    return profiler.rows


def print_step(row: dict) -> None:
    print(
        f"\nstep {row['step']}: {row['wall']:.2f} s, {row['draws']:.0f} draw(s), {row['sampled_tokens']} sampled "
        f"tokens ({row['tokens_without_signal']} in episodes without a reward signal), {row['trained_tokens']} "
        "trained tokens"
    )
    print(
        f"  {'turn':<11}{'calls':>6}{'prompts':>8}{'rows':>6}{'prompt tok':>11}{'sampled':>8}{'seconds':>9}{'tok/s':>7}"
    )
    for name, t in row["turns"].items():
        print(
            f"  {name:<11}{t['calls']:>6}{t['prompts']:>8}{t['rows']:>6}{t['prompt_tokens']:>11}"
            f"{t['sampled_tokens']:>8}{t['seconds']:>9.2f}{t['tokens_per_second']:>7.0f}"
        )
    print("  " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in row["parts"].items()))
    floor = row["floor"]
    print(
        f"  floor: generation {floor['generation']:.2f} s ({floor['rows']} rows x {floor['row_tokens']} tokens, "
        f"one call) + forward+backward {floor['training']:.2f} s = {floor['total']:.2f} s; step / floor "
        f"{row['ratio']:.2f}"
    )


def print_summary(rows: list[dict]) -> None:
    steady = rows[1:] or rows
    med = lambda values: statistics.median(list(values)) if values else math.nan  # noqa: E731
    print(f"\nmedians over steps {steady[0]['step']}..{steady[-1]['step']}:")
    print(f"  {'part':<22}{'seconds':>9}{'share':>7}")
    wall = med(r["wall"] for r in steady)
    for part in PARTS:
        seconds = med(r["parts"][part] for r in steady)
        print(f"  {part:<22}{seconds:>9.2f}{100 * seconds / wall:>6.0f}%")
    print(f"  {'step (wall)':<22}{wall:>9.2f}")
    for name in TURNS:
        present = [r["turns"][name] for r in steady if name in r["turns"]]
        if present:
            print(
                f"  {name + ' turn':<22}{med(t['seconds'] for t in present):>9.2f}   "
                f"{med(t['tokens_per_second'] for t in present):.0f} tok/s, "
                f"{med(t['prompt_tokens'] for t in present):.0f} prompt tokens, "
                f"{med(t['sampled_tokens'] for t in present):.0f} sampled"
            )
    engine_tps = med(
        r["sampled_tokens"] / r["parts"]["generation (engine)"] for r in steady if r["parts"]["generation (engine)"]
    )
    floor_tps = med(r["floor"]["sampled_tokens"] / r["floor"]["generation"] for r in steady if r["floor"]["generation"])
    floor = {key: med(r["floor"][key] for r in steady) for key in ("generation", "training", "total")}
    print(
        f"  floor: generation {floor['generation']:.2f} s, forward+backward {floor['training']:.2f} s, "
        f"total {floor['total']:.2f} s"
    )
    print(f"  sampling: {engine_tps:.0f} tok/s in the step's turns, {floor_tps:.0f} tok/s in the floor's one call")
    print(f"  step / floor: {med(r['ratio'] for r in steady):.2f} (median of the steps' ratios)")
    sampled = sum(r["sampled_tokens"] for r in rows)
    print(
        f"  all steps: {sampled} tokens sampled, {sum(r['tokens_without_signal'] for r in rows) / sampled:.0%} of "
        f"them in episodes without a reward signal (a first try that succeeded, or a group whose rewards are equal); "
        f"{sum(r['draws'] for r in rows):.0f} draws for {len(rows)} steps"
    )


def whole_job(overrides: list[str]) -> dict:
    """One whole r3_smollm2 job (seed 0, R3) in a fresh process; its phases from results.json."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "r3exp", *JOB, f"hydra.run.dir={out}", "logger=csv", *overrides]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        results = json.loads((Path(out) / "results.json").read_text())
        with open(Path(out) / "train_metrics.csv", newline="") as f:
            steps = list(csv.DictReader(f))
    sampled = sum(float(step.get("rollout/sampled_tokens") or 0) for step in steps)
    phases = results.get("phases", {})
    print(
        f"\none r3_smollm2 job (seed 0, rollout.protocol=r3), {seconds:.0f} s in all, {len(steps)} steps, "
        f"{sampled:.0f} tokens sampled in training:"
    )
    print(f"  {'phase':<30}{'seconds':>9}")
    for name, value in phases.items():
        print(f"  {name:<30}{value:>9.1f}")
    print(f"  {'not in a phase (imports, ...)':<30}{seconds - sum(phases.values()):>9.1f}")
    return {"seconds": seconds, "phases": phases, "steps": len(steps), "sampled_tokens": sampled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--job", action="store_true", help="also run one whole r3_smollm2 job")
    parser.add_argument("--out", help="write the figures as JSON here")
    args, overrides = parser.parse_known_args()
    report = {"steps": profile(args, overrides)}
    if args.job:
        report["job"] = whole_job(overrides)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
