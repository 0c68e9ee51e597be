"""The task protocol: what a verifiable task must provide to be trained with R3.

A task knows nothing of models, engines or Lightning. It hands out examples (plain dicts), turns them
into chat messages for the three turns of an R3 episode, and validates an answer with a binary check.

Implement a new task by subclassing :class:`Task` and pointing a Hydra config at it via ``_target_``
(see ``conf/task/countdown.yaml`` and docs/how-to/own-task.md's "Your own task").
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Sequence

Message = dict[str, str]
Example = dict[str, Any]

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def hash_split(key: str, fractions: dict[str, float] = SPLIT_FRACTIONS) -> str:
    """The split an instance belongs to, from a stable hash of its ``key``: splits are disjoint by
    construction, and membership does not depend on how many examples a run asks for."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for split, fraction in fractions.items():
        cumulative += fraction
        if u < cumulative:
            return split
    return list(fractions)[-1]


class Task(ABC):
    """A verifiable task. Subclasses implement ``examples``, ``first_attempt_messages`` and ``validate``.

    The reflection and retry turns are plain user messages whose text comes from the task config, so a
    user can change the prompts without code. ``{placeholders}`` in them are filled from the example.
    """

    name: str = "task"

    def __init__(
        self, reflection_prompt: str, retry_prompt: str, system_prompt: str | None = None, name: str | None = None
    ):
        self.name = name or type(self).name  # names runs, W&B groups and result tables
        self.reflection_prompt = reflection_prompt
        self.retry_prompt = retry_prompt
        self.system_prompt = system_prompt

    @abstractmethod
    def examples(self, split: str) -> Sequence[Example]:
        """All examples of ``split`` (one of ``SPLITS``), in a fixed order."""

    @abstractmethod
    def user_prompt(self, example: Example) -> str:
        """The text of the first user turn for ``example``."""

    @abstractmethod
    def validate(self, example: Example, answer: str) -> bool:
        """True when ``answer`` solves ``example``. Must return a bool for any string and never raise."""

    def group(self, example: Example) -> str | None:
        """The group evaluation reports ``example``'s accuracy under (BFCL: its category); None for none."""
        return None

    def tools(self, example: Example) -> list[dict] | None:
        """Tool schemas offered to the model for ``example`` (function-calling tasks); None for most tasks."""
        return None

    def tools_system_message(self, example: Example) -> str | None:
        """The tools as a system prompt, for chat templates without native tool support."""
        return None

    def _cached_split(self, split: str, load) -> list[Example]:
        """``load(split)`` once per split; tasks whose examples are costly to build share this cache."""
        cache = self.__dict__.setdefault("_split_cache", {})
        if check_split(split) not in cache:
            cache[split] = load(split)
        return cache[split]

    def first_attempt_messages(self, example: Example) -> list[Message]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": self.user_prompt(example)}]

    def reflection_messages(self, example: Example, attempt: str) -> list[Message]:
        """The conversation the reflection is sampled from: task, failed attempt, request to reflect."""
        return self.first_attempt_messages(example) + [
            {"role": "assistant", "content": attempt},
            {"role": "user", "content": self.reflection_prompt.format(**example)},
        ]

    def retry_messages(self, example: Example, attempt: str, reflection: str) -> list[Message]:
        """The conversation the retry is sampled from: everything above plus the reflection."""
        return self.reflection_messages(example, attempt) + [
            {"role": "assistant", "content": reflection},
            {"role": "user", "content": self.retry_prompt.format(**example)},
        ]

    def reflection_followed(self, example: Example, attempt: str, reflection: str, retry: str) -> bool | None:
        """Did the retry do what the reflection proposed: its answer differs from the attempt's and is the
        one the reflection's proposal gives? None where the reflection proposes nothing this task can
        read (and for tasks that do not define it): the follow rate counts the defined cases only."""
        return None

    def scripted_episodes(self, count: int, seed: int) -> list[dict] | None:
        """Up to ``count`` training-split episodes written by a program, for the warm start:
        ``{"example", "attempt", "reflection", "answer"}`` (a wrong attempt, a reflection on it, a right
        answer), optionally ``"repair"`` (a reflection that only names the change, for
        ``model.warm_start.reflection_analysis=false``). None when the task has no script (the warm start
        then refuses to run)."""
        return None

    @property
    def scripted_episodes_ignore_splits(self) -> bool:
        """True when ``scripted_episodes`` depends on neither the task's seed nor its split sizes (and
        never draws an evaluation example of any seed), so one warm start serves runs of every seed and
        every evaluation size."""
        return False

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        """Representative text of this task (prompts and answers), used to train the tiny tokenizer."""
        texts = []
        for example in list(self.examples("train"))[:n]:
            texts.append(self.user_prompt(example))
            texts.append(self.reflection_prompt.format(**example))
            texts.append(self.retry_prompt.format(**example))
        return texts


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split
