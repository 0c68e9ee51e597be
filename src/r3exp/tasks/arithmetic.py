"""Arithmetic questions in words ("What is 7 times 8?"): a task a small pretrained model can start from.

SmolLM2-135M-Instruct scores 0% on Countdown and APIGen as prompted for them, but answers one-digit
products and small sums part of the time: a per-sample success between the extremes, which is what a
group-relative reward needs to carry any signal. The answer format is what an instruction model writes
unprompted (a number, or a sentence ending with it); the validator is strict about the number itself.
"""

from __future__ import annotations

import hashlib
import re
from itertools import product

from r3exp.errors import ConfigError
from r3exp.tasks.base import Example, Task, hash_split
from r3exp.tasks.countdown import ANSWER_PATTERN as ANSWER_TAG

OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
# an integer, with optional thousands separators ("1,024") or a zero fraction ("56.0"), that is not part of a
# longer number ("2.5", "7,8"); a sentence's full stop after it is fine ("56.")
INTEGER = re.compile(r"(?<![\d.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?(?!\d|[.,]\d)")
MAX_SCAN_CHARS = 20_000


def integers(text: str) -> list[int]:
    """The integers written in ``text``, in order ("1,024" and "56.0" count; "5.5" and "3/4" do not)."""
    values = []
    for match in INTEGER.finditer(text[-MAX_SCAN_CHARS:]):
        token = match.group().replace(",", "").split(".")[0]
        values.append(int(token))
    return values


def final_answer(text: str) -> int | None:
    """The answer a reply gives: the integer inside its last ``<answer> </answer>`` block when it has one,
    else the last integer it writes ("7 times 8 is 56." -> 56); None when there is none."""
    tagged = ANSWER_TAG.findall(text[-MAX_SCAN_CHARS:])
    found = integers(tagged[-1]) if tagged else integers(text)
    if tagged and len(found) != 1:
        return None  # a tagged answer holds exactly one number
    return found[-1] if found else None


class ArithmeticTask(Task):
    """Two-operand arithmetic questions answered with an integer.

    Args:
        prompt: the first user turn; ``{a}``, ``{op}`` (the operation's word) and ``{b}`` are filled in.
        operations: ``{operation: [[a_min, a_max], [b_min, b_max]]}`` with operations among ``plus``,
            ``minus``, ``times``; every pair in the ranges is an instance.
        split_sizes: examples per split. The instances are split 80/10/10 by a hash of each (so the
            splits are disjoint whatever the seed) and ordered by a seeded hash within a split.
        seed: orders the instances within each split.
    """

    name = "arithmetic"

    def __init__(
        self,
        prompt: str,
        reflection_prompt: str,
        retry_prompt: str,
        operations: dict,
        split_sizes: dict[str, int] | None = None,
        seed: int = 0,
        system_prompt: str | None = None,
        name: str = "arithmetic",
    ):
        super().__init__(reflection_prompt, retry_prompt, system_prompt, name)
        unknown = set(operations) - set(OPERATIONS)
        if unknown or not operations:
            raise ConfigError(
                f"task.operations: {sorted(unknown) or 'none given'}; expected some of {sorted(OPERATIONS)}"
            )
        self.operations = {
            op: [tuple(int(x) for x in bounds) for bounds in ranges] for op, ranges in operations.items()
        }
        for op, ranges in self.operations.items():
            if len(ranges) != 2 or any(len(r) != 2 or r[0] > r[1] for r in ranges):
                raise ConfigError(f"task.operations.{op}={operations[op]}: expected [[a_min, a_max], [b_min, b_max]]")
        self.prompt = prompt
        self.split_sizes = dict(split_sizes or {"train": 1000, "validation": 100, "test": 200})
        self.seed = seed

    def examples(self, split: str) -> list[Example]:
        return self._cached_split(split, self._load)

    def _load(self, split: str) -> list[Example]:
        pool = [example for example in self._instances() if hash_split(self._key(example)) == split]
        pool.sort(key=lambda ex: hashlib.sha256(f"{self.seed}/{self._key(ex)}".encode()).digest())
        wanted = int(self.split_sizes[split])
        if wanted > len(pool):
            raise ConfigError(
                f"task.split_sizes.{split}={wanted}: task.operations give only {len(pool)} {split} instances"
            )
        return pool[:wanted]

    def _instances(self) -> list[Example]:
        rows = []
        for op, (a_range, b_range) in self.operations.items():
            for a, b in product(range(a_range[0], a_range[1] + 1), range(b_range[0], b_range[1] + 1)):
                rows.append({"a": a, "op": op, "b": b, "answer": OPERATIONS[op](a, b)})
        return rows

    @staticmethod
    def _key(example: Example) -> str:
        return f"{example['a']} {example['op']} {example['b']}"

    def user_prompt(self, example: Example) -> str:
        return self.prompt.format(**example)

    def validate(self, example: Example, answer: str) -> bool:
        try:
            return final_answer(answer) == int(example["answer"])
        except Exception:  # noqa: BLE001 - a validator returns a bool for any input, by contract
            return False

    def reflection_followed(self, example: Example, attempt: str, reflection: str, retry: str) -> bool | None:
        """The reflection proposes the last number it writes that is neither an operand nor the attempt's
        answer ("I said 54, but 7 times 8 is 56." proposes 56). Followed when the retry's answer is that
        number; None when the attempt gave no number or the reflection proposes none."""
        attempted = final_answer(attempt)
        if attempted is None:
            return None
        proposals = [n for n in integers(reflection) if n not in (example["a"], example["b"], attempted)]
        if not proposals:
            return None
        return final_answer(retry) == proposals[-1]

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        return super().corpus(n, seed) + [str(ex["answer"]) for ex in self.examples("train")[:n]]
