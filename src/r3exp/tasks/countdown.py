"""Countdown equations: use each given number exactly once to write an expression equal to the target."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import Sequence

from r3exp.errors import ConfigError
from r3exp.tasks.base import Example, Task
from r3exp.tasks.countdown_reflections import answer_text, apply_repair, near_miss, scripted_reflection
from r3exp.tasks.countdown_solver import generate_instances, solve
from r3exp.tasks.hub import load_hub_rows
from r3exp.tasks.safe_arithmetic import UnsafeExpression, evaluate

ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
MAX_ANSWER_SCAN_CHARS = 20_000
TOLERANCE = 1e-5
SCRIPT_POOL_SIZE = 2000  # training instances the warm start's scripted episodes are drawn from


def extract_answer(response: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` block (TinyZero's format), or None."""
    matches = ANSWER_PATTERN.findall(response[-MAX_ANSWER_SCAN_CHARS:])
    return matches[-1].strip() if matches else None


def is_correct(expression: str, nums: Sequence[int], target: int) -> bool:
    """True when ``expression`` uses exactly the multiset ``nums`` and evaluates to ``target`` (±1e-5)."""
    try:
        value, used = evaluate(expression)
    except UnsafeExpression:
        return False
    return sorted(used) == sorted(nums) and abs(value - Fraction(target)) <= TOLERANCE


class CountdownTask(Task):
    """Countdown: reach the target with each given number exactly once, using + - * /.

    Args:
        source: ``generated`` (seeded procedural instances, the default, no network) or a dataset in
            the public format (``target``, ``nums``): a hub id such as ``Jiayi-Pan/Countdown-Tasks-3to4``
            or a local JSON/JSONL/Parquet file.
        split_sizes: number of examples per split (``train``, ``validation``, ``test``).
        seed: fixes the generated instances and the split of a loaded dataset.
        prompt: the first user turn; ``{nums}`` and ``{target}`` are filled in.
        generator: settings of generated instances: ``sizes`` (how many numbers), ``num_range``,
            ``target_range`` (see ``countdown_solver.generate_instances``).
    """

    name = "countdown"

    def __init__(
        self,
        prompt: str,
        reflection_prompt: str,
        retry_prompt: str,
        system_prompt: str | None = None,
        source: str = "generated",
        split_sizes: dict[str, int] | None = None,
        seed: int = 0,
        name: str = "countdown",
        generator: dict | None = None,
    ):
        super().__init__(reflection_prompt, retry_prompt, system_prompt, name)
        self.prompt = prompt
        self.source = source
        self.split_sizes = dict(split_sizes or {"train": 2000, "validation": 200, "test": 200})
        self.seed = seed
        gen = dict(generator or {})
        unknown = set(gen) - {"sizes", "num_range", "target_range"}
        if unknown:
            raise ConfigError(
                f"task.generator: unknown key(s) {sorted(unknown)}; expected sizes, num_range, target_range"
            )
        self.generator = {key: tuple(value) for key, value in gen.items()}

    def examples(self, split: str) -> list[Example]:
        return self._cached_split(split, self._load)

    def _load(self, split: str) -> list[Example]:
        count = int(self.split_sizes[split])
        if self.source == "generated":
            return generate_instances(count, split, self.seed, **self.generator)
        rows = load_hub_rows(self.source, split, self.split_sizes, self.seed, required=("target", "nums"))
        return [{"nums": [int(n) for n in row["nums"]], "target": int(row["target"])} for row in rows]

    def user_prompt(self, example: Example) -> str:
        return self.prompt.format(**example)

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        texts = super().corpus(n, seed)
        texts += [f"<answer> {ex['solution']} </answer>" for ex in self.examples("train")[:n] if ex.get("solution")]
        return texts

    def scripted_episodes(self, count: int, seed: int, pool_size: int = SCRIPT_POOL_SIZE) -> list[dict]:
        """Near-miss attempts with scripted reflections (see ``countdown_reflections``). Generated
        sources draw ``pool_size`` training-split instances from ``seed`` (never a validation or test
        instance, whatever the task seed: the split of an instance is a hash of it), or as many as the
        training split has when it is smaller (a generator with few instances); loaded sources use the
        training split, solved by the exhaustive solver. Each pass over the pool draws new wrong attempts."""
        rng = random.Random(f"countdown-script/{seed}")
        if self.source == "generated":
            pool = generate_instances(min(pool_size, self.split_sizes["train"]), "train", seed, **self.generator)
        else:
            pool = [{**ex, "solution": solve(ex["nums"], ex["target"])} for ex in self.examples("train")]
        episodes = []
        for i in range(count):
            example = pool[i % len(pool)]
            if not example.get("solution"):
                continue
            nums, target = example["nums"], example["target"]
            miss = near_miss(example["solution"], nums, target, rng)
            if miss is None:
                continue
            episodes.append(
                {
                    "example": {"nums": nums, "target": target},
                    "attempt": answer_text(miss.expression),
                    "reflection": scripted_reflection(nums, target, miss),
                    "repair": miss.repair.sentence(miss.expression),
                    "answer": answer_text(example["solution"]),
                }
            )
        return episodes

    @property
    def scripted_episodes_ignore_splits(self) -> bool:
        return self.source == "generated" and self.split_sizes["train"] >= SCRIPT_POOL_SIZE

    def reflection_followed(self, example: Example, attempt: str, reflection: str, retry: str) -> bool | None:
        """The reflection proposes an equation: the one it states (``<answer> ... </answer>``, as the warm
        start with ``reflection_ends_with_answer`` writes) or else the attempt's with the one change it
        names ("I should use 7 instead of the second 8."). Followed when the retry's equation differs from
        the attempt's and is the proposed one."""
        attempted = extract_answer(attempt)
        if attempted is None:
            return None
        proposed = extract_answer(reflection) or apply_repair(attempted, reflection)
        if proposed is None:
            return None
        retried = extract_answer(retry)
        return retried is not None and retried.split() != attempted.split() and retried.split() == proposed.split()

    def validate(self, example: Example, answer: str) -> bool:
        try:
            expression = extract_answer(answer)
            return expression is not None and is_correct(expression, example["nums"], example["target"])
        except Exception:  # noqa: BLE001 - a validator returns a bool for any input, by contract
            return False
