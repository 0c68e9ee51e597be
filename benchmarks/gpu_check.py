"""The GPU check: one command for a machine with an accelerator, PyTorch, transformers, peft and Lightning, and nothing
else (no vLLM, no Hydra, no network).

    PYTHONPATH=src python benchmarks/gpu_check.py                  # Qwen2-1.5B and Qwen2-7B, bf16, on CUDA
    PYTHONPATH=src python benchmarks/gpu_check.py --models qwen2_1.5b --modes lora --steps 2
    .venv/bin/python benchmarks/gpu_check.py --cpu-shapes          # the same code at small shapes (the suite runs it)

For each model (random weights at the real architecture's config, written out below: no hub) and each of
LoRA r16 and full fine-tuning, it runs what a GPU user's run does, through r3exp's own code:

1. builds the model in bf16 on the device and saves it with a tokenizer of its whole vocabulary;
2. starts the Hugging Face engine (``r3exp.rollout.engines.hf_engine``) on it and the policy beside it
   (gradient checkpointing on, as the paper configs; bf16 autocast, as trainer.precision=bf16-mixed; each model
   config's ``model.master_weights``: Qwen2-1.5B float32 master weights, Qwen2-7B bf16 weights with
   torch-optimi's Kahan AdamW, taken from ``.cache/gpu-wheels`` (``benchmarks/gpu_main_job.sh fetch``) when the
   environment lacks it; LoRA adapters float32 either way);
3. runs ``--steps`` R3 steps: first attempts, G reflections per failure, one retry each, on a task whose
   validator any model passes about half the time (the answer text's hash is even), so that reflection
   groups carry a reward; the engine sleeps while the trainer steps (its weights to CPU memory) and
   wakes for the weight push; the trainer's pass over the sampled rows measures the engine/trainer
   log-prob gap (``r3exp.grpo.step.correct_for_engine``) before each update; micro-batch and chunk sizes
   are the paper config's (``conf/experiment/paper_countdown.yaml``);
4. one training step at the paper's rollout size (``--paper-rows`` rows of 600 context + 256 reflection
   tokens, every row trained), for the peak memory of a paper-scale step.

It prints a table per configuration (seconds, tokens/s and peak memory of each phase) and one line per
check, ``PASS`` or ``FAIL`` (each check a pure function in ``benchmarks/gpu_checks.py``: the architecture's
parameter count from its config, every pushed tensor equal in the engine, the log-prob gap under its dtype's
bound, ...); the exit code is 1 when any check failed. Peak memory is torch's peak
allocated GPU memory on CUDA and the process's peak resident set on CPU (VmHWM, reset per phase).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the checkout's r3exp, installed or not

from gpu_checks import (  # noqa: E402
    GAP_BOUNDS,
    check_architecture,
    check_gap,
    check_paper_step,
    check_signal,
    check_sleep,
    check_training,
    check_weight_push,
    first_failure,
)

from r3exp.grpo.optimizers import adamw  # noqa: E402
from r3exp.grpo.step import LossSettings, accumulate_gradients, correct_for_engine, step_rows  # noqa: E402
from r3exp.models.export import hf_state_dict  # noqa: E402
from r3exp.models.loading import LoraSpec, prepare_policy  # noqa: E402
from r3exp.rollout.batching import build_batch, reflection_mask  # noqa: E402
from r3exp.rollout.engines.hf_engine import HFEngine  # noqa: E402
from r3exp.rollout.engines.interface import SamplingConfig  # noqa: E402
from r3exp.rollout.episodes import R3Protocol  # noqa: E402
from r3exp.tasks.base import Task  # noqa: E402
from r3exp.tracking.step_timer import peak_memory_gib, reset_peak_memory  # noqa: E402

GIB = 1024**3
PAPER_CONFIG = ROOT / "src" / "r3exp" / "conf" / "experiment" / "paper_countdown.yaml"
# The real architectures (their config.json on the hub, written out); qwen2_parameter_count gives their
# sizes, 1,543,714,304 and 7,615,616,512 (tests/test_gpu_check.py holds it to them).
REAL = {
    "qwen2_1.5b": dict(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
    "qwen2_7b": dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ),
}
SMALL = dict(
    vocab_size=2048,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=4096,
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class HalfTheTimeTask(Task):
    """A task any model passes about half the time: an answer is right when its text's MD5 is even. Random
    weights sample varied text, so failures, reflections and rewarded retries all occur."""

    name = "half_the_time"

    def __init__(self, count: int):
        super().__init__(reflection_prompt="That was wrong. Reflect on what went wrong.", retry_prompt="Try again.")
        self.rows = [{"id": i, "question": f"question {i}"} for i in range(count)]

    def examples(self, split):
        return self.rows

    def user_prompt(self, example):
        return f"Answer {example['question']}."

    def first_attempt_messages(self, example):
        return [{"role": "user", "content": self.user_prompt(example)}]

    def validate(self, example, answer):
        return hashlib.md5(answer.encode()).digest()[0] % 2 == 0


def whole_vocabulary_tokenizer(vocab_size: int):
    """A word-level tokenizer with one entry per model id (every sampled id decodes to text), ChatML."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIAL + ["[UNK]"] + [f"w{i}" for i in range(vocab_size - len(SPECIAL) - 1)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[1:2]})
    fast.chat_template = CHATML
    return fast


@dataclass
class Phase:
    seconds: float
    tokens: int = 0
    peak_gib: float = 0.0


@dataclass
class Report:
    name: str
    phases: dict[str, Phase] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, what: str, passed: bool, detail: str = "") -> None:
        self.checks.append((what, bool(passed), detail))

    def table(self) -> str:
        lines = [f"\n{self.name}", "| phase | seconds | tokens/s | peak memory GiB |", "|---|---|---|---|"]
        for name, p in self.phases.items():
            rate = f"{p.tokens / p.seconds:.0f}" if p.tokens and p.seconds else "-"
            lines.append(f"| {name} | {p.seconds:.2f} | {rate} | {p.peak_gib:.2f} |")
        return "\n".join(lines)


class Memory:
    """Peak memory per phase: torch's peak allocated memory on CUDA, the process's peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        reset_peak_memory(self.device)

    def peak_gib(self) -> float:
        return peak_memory_gib(self.device)

    def allocated_gib(self) -> float:
        return torch.cuda.memory_allocated() / GIB if self.device.type == "cuda" else float("nan")


@contextmanager
def phase(report: Report, memory: Memory, name: str, tokens: list[int] | None = None):
    """Time a phase and record its peak memory; ``tokens`` (a one-element list) is filled by the body."""
    memory.reset()
    start = time.perf_counter()
    yield
    if memory.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    previous = report.phases.get(name)
    count = (tokens or [0])[0]
    if previous:  # a phase run at every step adds up; its peak is the largest
        report.phases[name] = Phase(
            previous.seconds + seconds, previous.tokens + count, max(previous.peak_gib, memory.peak_gib())
        )
    else:
        report.phases[name] = Phase(seconds, count, memory.peak_gib())


def weight_gib(model: torch.nn.Module) -> float:
    """The model's weights in GiB, each storage once (a tied output layer shares the embedding's)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in model.state_dict().values()}
    return sum(storages.values()) / GIB


def bf16_mixed(device: torch.device, dtype: str):
    """The trainer's forward and backward as ``trainer.precision=bf16-mixed`` (trainer=gpu) runs them: bf16
    compute over the policy's float32 master weights (``prepare_policy``'s default) and LoRA adapters."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def master_weights_of(name: str) -> str:
    """``model.master_weights`` of the model's own config (``conf/model/<name>.yaml``): float32 or kahan."""
    return yaml.safe_load((ROOT / "src" / "r3exp" / "conf" / "model" / f"{name}.yaml").read_text())["master_weights"]


def find_optimi() -> None:
    """torch-optimi (``model.master_weights=kahan``) from the wheel ``benchmarks/gpu_main_job.sh fetch`` builds,
    when the environment lacks it (the GPU image does): a pure-Python wheel imports from its zip."""
    import importlib.util

    wheels = sorted((ROOT / ".cache" / "gpu-wheels").glob("torch_optimi-*.whl"))
    if importlib.util.find_spec("optimi") is None and wheels:
        sys.path.append(str(wheels[-1]))


def paper_settings() -> tuple[dict, dict]:
    """The paper config's rollout and GRPO settings (micro-batch and chunk sizes, lengths)."""
    paper = yaml.safe_load(PAPER_CONFIG.read_text())
    return paper["rollout"], paper["grpo"]


def build_model(config: dict, device: torch.device, dtype: torch.dtype, out_dir: Path, seed: int = 0):
    """Random weights at ``config`` (initialised on the device in ``dtype``), saved with a tokenizer."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = whole_vocabulary_tokenizer(config["vocab_size"])
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    qwen = Qwen2Config(**config, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Qwen2ForCausalLM(qwen)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def run_configuration(name: str, config: dict, lora: bool, args, device: torch.device) -> Report:
    report = Report(f"{name} · {'LoRA r16' if lora else 'full fine-tuning'} · {args.dtype} · {device.type}")
    memory = Memory(device)
    dtype = getattr(torch, args.dtype)
    rollout_cfg, grpo_cfg = paper_settings()
    settings = LossSettings(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        loss_type="dapo",
        temperature=1.0,
        max_reflection_tokens=args.reflection_tokens,
        max_tokens_per_micro_batch=grpo_cfg["max_tokens_per_micro_batch"],
        logprob_chunk_size=grpo_cfg["logprob_chunk_size"],
    )
    correction = SimpleNamespace(correction=args.correction, correction_cap=2.0, correction_low=0.5, behaviour="engine")
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "model"
        with phase(report, memory, "build and save"):
            model, tokenizer = build_model(config, device, dtype, path, args.seed)
        report.check("architecture", *check_architecture(model, config))
        with phase(report, memory, "engine start"):
            engine = HFEngine(str(path), dtype=args.dtype, seed=args.seed, device=str(device), batch_size=args.examples)
        master_weights = args.master_weights or master_weights_of(name)
        policy = prepare_policy(
            model, LoraSpec() if lora else None, gradient_checkpointing=True, master_weights=master_weights
        )
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = adamw(trainable, lr=1e-5)  # r3exp's optimizer=adamw: Kahan-compensated over bf16 weights
        print(
            f"  {report.name}: master weights {master_weights}, trainable "
            f"{'/'.join(sorted({str(p.dtype).removeprefix('torch.') for p in trainable}))}, "
            f"{type(optimizer).__module__}.{type(optimizer).__name__}",
            flush=True,
        )
        task = HalfTheTimeTask(args.examples)
        sampling = dict(temperature=1.0, top_p=1.0)
        protocol = R3Protocol(
            task,
            engine,
            tokenizer,
            SamplingConfig(max_tokens=args.attempt_tokens, **sampling),
            SamplingConfig(max_tokens=args.reflection_tokens, **sampling),
            SamplingConfig(max_tokens=args.attempt_tokens, **sampling),
        )
        signal_steps, mismatches, losses, norms, sleeps, pushes = 0, [], [], [], [], []
        for step in range(args.steps):
            generated = [0]
            with phase(report, memory, "generation (R3 rollout)", generated):
                before = protocol.timing.generated_tokens
                episodes = protocol.run(task.examples("train"), group_size=args.group_size)
                generated[0] = protocol.timing.generated_tokens - before
            failures = [ep for ep in episodes if ep.reflections]
            if not failures:
                continue
            batch = build_batch(failures, tokenizer.pad_token_id)
            rows = step_rows([batch], "group", beta=0.0)
            signal_steps += rows.has_signal
            if not rows.has_signal:
                continue
            asleep_before = memory.allocated_gib()
            engine.sleep()
            freed = asleep_before - memory.allocated_gib()
            if device.type == "cuda":  # on CPU the engine's sleep keeps its weights where they are
                sleeps.append(check_sleep(freed, weight_gib(engine.model)))
            trained = [0]
            with phase(report, memory, "training step", trained):
                with bf16_mixed(device, args.dtype):
                    mismatch = correct_for_engine(policy, rows.batch, settings, correction, device=device)
                    optimizer.zero_grad(set_to_none=True)
                    metrics = accumulate_gradients(policy, rows, settings, device=device)
                norms.append(float(torch.nn.utils.clip_grad_norm_(trainable, 1.0)))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                trained[0] = int(metrics["trained_tokens"])
            mismatches.append(mismatch)
            print(
                f"  step {step + 1}: engine/trainer gap mean {mismatch['engine_gap_mean']:.2e} max "
                f"{mismatch['engine_gap_max']:.2e}; ratio pi_trainer/pi_engine {mismatch['engine_ratio_min']:.3f}-"
                f"{mismatch['engine_ratio_max']:.3f}; share of tokens truncated at {correction.correction_cap:g}: "
                f"{mismatch['correction_share']:.2%}",
                flush=True,
            )
            losses.append(metrics["loss"])
            with phase(report, memory, "weight push"):
                state = hf_state_dict(policy)  # the merged policy, the policy itself unchanged
                engine.update_weights(state)
                pushes.append(check_weight_push(engine.model.state_dict(), state))
        if device.type == "cuda":
            report.check("engine sleep frees its weights", *first_failure(sleeps, "the engine never slept"))
        report.check("reflection groups carry a reward", *check_signal(signal_steps, args.steps))
        report.check("training steps are finite", *check_training(losses, norms))
        report.check("engine/trainer log-prob gap", *check_gap(mismatches, args.dtype))
        report.check("weight push reaches the engine", *first_failure(pushes, "no step pushed weights"))
        del engine, protocol  # the paper-scale step's peak is the trainer's alone
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.paper_rows:
            paper_step(report, memory, policy, trainable, optimizer, settings, config["vocab_size"], args, device)
    return report


def paper_step(
    report: Report, memory: Memory, policy, trainable, optimizer, settings: LossSettings, vocab: int, args, device
) -> None:
    """One training step on ``--paper-rows`` rows of 600 + 256 tokens, every row trained."""
    n, context, reflection = args.paper_rows, args.paper_context, args.paper_reflection
    total = context + reflection
    mask = reflection_mask(torch.full((n,), context), torch.full((n,), reflection), total)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(0, vocab, (n, total), generator=generator),
        "attention_mask": torch.ones(n, total, dtype=torch.long),
        "reflection_mask": mask,
        "behaviour_logprobs": torch.where(mask, torch.full((n, total), -math.log(vocab)), 0.0),
        "rewards": (torch.arange(n) % 2).float(),
        "group_ids": torch.arange(n) // 8,
        "row_kinds": torch.zeros(n, dtype=torch.long),
        "policy_version": torch.zeros(n, dtype=torch.long),
        "off_policy": torch.zeros(n, dtype=torch.bool),
    }
    rows = step_rows([batch], "group", beta=0.0)
    trained = [0]
    try:
        with phase(report, memory, f"paper-scale step ({n} x {context}+{reflection})", trained):
            with bf16_mixed(device, args.dtype):
                outcome = accumulate_gradients(policy, rows, settings, device=device)
            outcome["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, 1.0))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            trained[0] = int(outcome["trained_tokens"])
    except torch.OutOfMemoryError as err:
        outcome = err
    report.check("paper-scale step fits", *check_paper_step(outcome, settings.max_tokens_per_micro_batch))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(REAL), choices=list(REAL))
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=2, help="R3 steps per configuration")
    parser.add_argument("--examples", type=int, default=8, help="examples per R3 step")
    parser.add_argument("--group-size", type=int, default=8, help="reflections per failure (G)")
    parser.add_argument("--attempt-tokens", type=int, default=64, help="first attempt and retry length")
    parser.add_argument("--reflection-tokens", type=int, default=128)
    parser.add_argument(
        "--paper-rows",
        type=int,
        default=64,
        help="rows of the paper-scale step (0: skip it); the paper config's step trains up to 256",
    )
    parser.add_argument("--paper-context", type=int, default=600)
    parser.add_argument("--paper-reflection", type=int, default=256)
    parser.add_argument(
        "--correction",
        default="truncate",
        choices=["none", "truncate"],
        help="grpo.loss.correction of the training steps (the gap is measured before it applies)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the random weights' and the engine's seed")
    parser.add_argument(
        "--master-weights",
        choices=["float32", "kahan"],
        default=None,
        help="model.master_weights for every model (default: each model config's own: 1.5B float32, 7B kahan)",
    )
    parser.add_argument(
        "--dtype", default=None, choices=list(GAP_BOUNDS), help="default: bfloat16 on CUDA, float32 on CPU"
    )
    parser.add_argument(
        "--cpu-shapes",
        action="store_true",
        help="small shapes of the same architecture, on CPU (what the test suite runs)",
    )
    args = parser.parse_args()
    find_optimi()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_shapes else "cpu")
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if device.type == "cuda":
        print(
            f"device: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / GIB:.0f} "
            f"GiB), torch {torch.__version__}"
        )
    else:
        print(
            f"device: CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"
            + ("" if args.cpu_shapes else "; no CUDA device: the real shapes on CPU will be slow")
        )
    reports = []
    for name in args.models:
        config = dict(SMALL, tie_word_embeddings=REAL[name]["tie_word_embeddings"]) if args.cpu_shapes else REAL[name]
        for mode in args.modes:
            try:
                report = run_configuration(name, config, mode == "lora", args, device)
            except Exception as err:  # one configuration's failure must not hide the others' figures
                traceback.print_exc()
                report = Report(f"{name} · {mode} · {args.dtype} · {device.type}")
                report.check("configuration ran to the end", False, f"{type(err).__name__}: {err}"[:300])
            print(report.table(), flush=True)
            for what, passed, detail in report.checks:
                print(f"{'PASS' if passed else 'FAIL'} {report.name}: {what}: {detail}", flush=True)
            reports.append(report)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    failed = sum(not passed for r in reports for _, passed, _ in r.checks)
    total = sum(len(r.checks) for r in reports)
    print(f"\ngpu_check: {total - failed} of {total} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
