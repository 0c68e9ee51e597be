"""Warm start: supervised training of a small model on a task's scripted episodes, so that R3 starts from a
model that solves some problems on the first try and knows the reflect-and-retry conversation.

Two kinds of sequences, built with the model's chat template exactly as the rollout engine renders them:
- direct: task prompt -> the right answer (loss on the answer);
- reflect: task prompt -> a near-miss wrong attempt (no loss) -> reflection prompt -> the scripted
  reflection (loss) -> retry prompt -> the right answer (loss).

The result is a Hugging Face model directory, cached under a key of its inputs (base model, task
settings, warm-start settings), so the main job builds it once and later runs reuse it. The warm starts of
the default main job and of ``experiment=r3_demo`` ship inside the package (``r3exp/warmstarts/<key>``,
2 MB each): a run whose key matches one starts from it at once; ``mode=warmstart`` always rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from r3exp.cache_entries import staged_entry
from r3exp.errors import ConfigError
from r3exp.rollout.episodes import ChatRenderer
from r3exp.tasks.base import Task

BUILD_VERSION = 2  # bump when the procedure changes, to invalidate cached (and shipped) warm starts
SHIPPED = Path(__file__).parent / "warmstarts"  # built by this recipe, keyed like the cache
IGNORE = -100


@dataclass(frozen=True)
class WarmStartSpec:
    """Settings of the warm start (``model.warm_start`` in ``conf/model/tiny.yaml``).

    Args:
        episodes: scripted episodes drawn from the task's training split.
        steps / batch_size / lr / warmup_steps: AdamW with linear warmup and cosine decay.
        direct_fraction: share of sequences that are prompt -> right answer (the rest reflect and retry).
        reflection_ends_with_answer: the scripted reflection ends with the right answer, which the retry
            then only has to copy (for a model too small to apply the change its reflection names).
        reflection_analysis: the scripted reflection first analyses the attempt (Countdown: what it
            evaluates to, which numbers it misuses), then names the repair; false: the repair only (the
            episodes' ``repair``), a short reflection whose every token is part of the decision.
        seed: the scripted attempts and the order of the training sequences.
    """

    episodes: int = 20000
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 30
    direct_fraction: float = 0.5
    reflection_ends_with_answer: bool = False
    reflection_analysis: bool = True
    seed: int = 0


def encode_conversation(render: ChatRenderer, eos_id: int, messages: list[dict], trained: set[int]):
    """Token ids and labels of ``messages``; labels are -100 except on the content (and end-of-turn
    token) of the assistant messages whose index is in ``trained``."""
    ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:i])
        if prompt[: len(ids)] != ids:
            raise RuntimeError("the chat template does not render conversations prefix-stably")
        labels += [IGNORE] * (len(prompt) - len(ids))
        ids = list(prompt)
        content = render.tokenizer.encode(message["content"], add_special_tokens=False) + [eos_id]
        ids += content
        labels += content if i in trained else [IGNORE] * len(content)
    return ids, labels


def build_sequences(task: Task, tokenizer, spec: WarmStartSpec) -> list[tuple[list[int], list[int]]]:
    episodes = task.scripted_episodes(spec.episodes, spec.seed)
    if not episodes:
        raise ConfigError(
            f"task {task.name!r} has no scripted episodes for a warm start; "
            "set model.warm_start=null (or implement Task.scripted_episodes)"
        )
    if not spec.reflection_analysis and any("repair" not in ep for ep in episodes):
        raise ConfigError(
            f"model.warm_start.reflection_analysis=false: task {task.name!r}'s scripted episodes "
            "have no repair-only reflection ('repair'); set it to true"
        )
    render, eos_id = ChatRenderer(tokenizer), tokenizer.eos_token_id
    rng = random.Random(spec.seed)
    sequences = []
    for ep in tqdm(episodes, desc="warm start: encode", unit="ep", dynamic_ncols=True, leave=False):
        example = ep["example"]
        first = task.first_attempt_messages(example)
        if rng.random() < spec.direct_fraction:
            sequences.append(
                encode_conversation(
                    render, eos_id, first + [{"role": "assistant", "content": ep["answer"]}], trained={len(first)}
                )
            )
        else:
            reflection = ep["reflection"] if spec.reflection_analysis else ep["repair"]
            reflection = f"{reflection} {ep['answer']}" if spec.reflection_ends_with_answer else reflection
            messages = task.retry_messages(example, ep["attempt"], reflection)
            messages.append({"role": "assistant", "content": ep["answer"]})
            trained = {i for i, m in enumerate(messages) if m["role"] == "assistant" and i > len(first)}
            sequences.append(encode_conversation(render, eos_id, messages, trained))
    return sequences


def train(model, sequences: list[tuple[list[int], list[int]]], spec: WarmStartSpec, pad_id: int) -> list[float]:
    """AdamW over shuffled, padded batches; returns the loss of every step."""
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(spec.steps - spec.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    with tqdm(range(spec.steps), desc="warm start: train", unit="step", dynamic_ncols=True) as bar:
        for _ in bar:
            if len(order) < spec.batch_size:
                order += rng.sample(range(len(sequences)), len(sequences))
            batch, order = [sequences[i] for i in order[: spec.batch_size]], order[spec.batch_size :]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in batch])
            labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in batch])
            attention = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in batch])[:, None]).long()
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def warm_start_key(base_path: str, task_settings: dict, spec: WarmStartSpec) -> str:
    payload = json.dumps(
        [BUILD_VERSION, Path(base_path).name, task_settings, asdict(spec)], sort_keys=True, default=str
    )
    return f"warm-{Path(base_path).name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def build_warm_start(base_path: str, task: Task, spec: WarmStartSpec, out_dir: str | Path) -> dict:
    """Train from ``base_path`` on ``task``'s scripted episodes; save model, tokenizer and a report."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - seconds to import; warm starts only

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    sequences = build_sequences(task, tokenizer, spec)
    losses = train(model, sequences, spec, tokenizer.pad_token_id)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    report = {
        "base": str(base_path),
        "task": task.name,
        "spec": asdict(spec),
        "sequences": len(sequences),
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "seconds": time.perf_counter() - start,
    }
    (out_dir / "warm_start.json").write_text(json.dumps(report, indent=2))
    return report


def ensure_warm_start(
    base_path: str,
    task: Task,
    task_settings: dict,
    spec: WarmStartSpec,
    cache_root: str | os.PathLike,
    shipped: str | os.PathLike | None = SHIPPED,
) -> Path:
    """The warm start for these inputs: the one shipped with the package under the same key (unless
    ``shipped`` is None), else the cached one, building it on first use (5-15 minutes on 2 CPU cores)."""
    key = warm_start_key(base_path, task_settings, spec)
    if shipped is not None and (Path(shipped) / key / "config.json").exists():
        return Path(shipped) / key
    target = Path(cache_root) / key
    if (target / "config.json").exists():
        return target
    with staged_entry(target) as staging:
        build_warm_start(base_path, task, spec, staging)
    return target
