"""Scripted Countdown episodes for the warm start: a near-miss wrong attempt, a reflection written by a
program (what the equation evaluates to and how far from the target, which numbers were used too often or
not at all, and which single change repairs it), and the correct answer as the retry. They teach a small
model the reflect-and-retry conversation: a reflection locates the error, the retry applies the repair.
They never appear in R3 training or evaluation."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from r3exp.tasks.safe_arithmetic import UnsafeExpression, evaluate

OPERATOR = re.compile(r"(?<=\s)[-+*/](?=\s)")
NUMBER = re.compile(r"\d+")


def answer_text(expression: str) -> str:
    return f"<answer> {expression} </answer>"


ORDINALS = ["first", "second", "third", "fourth", "fifth"]
KINDS = {"operator": OPERATOR, "number": NUMBER}


@dataclass(frozen=True)
class Repair:
    """One change of an equation, as data: the ``position``-th token of its ``kind`` (``operator`` or
    ``number``, counted left to right), ``old``, becomes ``new``. Written as text by :meth:`sentence`
    only; read back from model output by :func:`read_repair` only."""

    kind: str
    position: int
    old: str
    new: str

    def _spot(self, expression: str):
        spots = list(KINDS[self.kind].finditer(expression))
        if self.position >= len(spots) or spots[self.position].group() != self.old:
            raise ValueError(f"{self} does not fit {expression!r}")
        return spots[self.position]

    def apply(self, expression: str) -> str:
        spot = self._spot(expression)
        return expression[: spot.start()] + self.new + expression[spot.end() :]

    def sentence(self, expression: str) -> str:
        """The repair in words: "I should use 7 instead of the second 8." (the ordinal only where
        ``old`` occurs more than once)."""
        self._spot(expression)
        same = [m.group() for m in KINDS[self.kind].finditer(expression)]
        occurrence = same[: self.position].count(self.old)
        which = self.old if same.count(self.old) == 1 else f"the {ORDINALS[occurrence]} {self.old}"
        return f"I should use {self.new} instead of {which}."


@dataclass(frozen=True)
class NearMiss:
    """A wrong expression one edit away from a solution, and the repair that gives the solution."""

    expression: str
    repair: Repair


def near_miss(solution: str, nums: list[int], target: int, rng: random.Random) -> NearMiss | None:
    """A wrong expression close to ``solution``: one operator changed, or one number replaced by
    another of the given numbers (so one is used twice and one not at all). None if every try is right."""
    for _ in range(8):
        if rng.random() < 0.6 and OPERATOR.search(solution):
            kind, spots = "operator", list(OPERATOR.finditer(solution))
            position = rng.randrange(len(spots))
            replacement = rng.choice([op for op in "+-*/" if op != spots[position].group()])
        else:
            kind, spots = "number", list(NUMBER.finditer(solution))
            position = rng.randrange(len(spots))
            others = [str(n) for n in nums if str(n) != spots[position].group()]
            if not others:
                continue
            replacement = rng.choice(others)
        candidate = Repair(kind, position, spots[position].group(), replacement).apply(solution)
        try:
            value, used = evaluate(candidate)
        except UnsafeExpression:
            continue
        if sorted(used) == sorted(nums) and value == target:
            continue
        return NearMiss(candidate, Repair(kind, position, replacement, spots[position].group()))
    return None


def repairs(expression: str, nums: list[int]) -> list[Repair]:
    """Every single change of ``expression``: an operator, or a number replaced by another of ``nums``."""
    changes = []
    for kind, choices in (("operator", "+-*/"), ("number", sorted({str(n) for n in nums}))):
        for position, spot in enumerate(KINDS[kind].finditer(expression)):
            changes += [Repair(kind, position, spot.group(), choice) for choice in choices if choice != spot.group()]
    return changes


REPAIR = re.compile(r"I should use (\S+) instead of (?:the (first|second|third|fourth|fifth) )?(\S+?)\.")


def read_repair(expression: str, reflection: str) -> Repair | None:
    """The change a reflection (model output) names for ``expression`` ("I should use 7 instead of the
    second 8."), or None when it names none that fits the expression."""
    found = REPAIR.search(reflection)
    if not found:
        return None
    new, occurrence, old = found.group(1), ORDINALS.index(found.group(2)) if found.group(2) else 0, found.group(3)
    kind = "number" if old.isdigit() else "operator"
    if (kind == "number") != new.isdigit() or (kind == "operator" and new not in "+-*/"):
        return None
    same = [i for i, m in enumerate(KINDS[kind].finditer(expression)) if m.group() == old]
    return Repair(kind, same[occurrence], old, new) if occurrence < len(same) else None


def apply_repair(expression: str, reflection: str) -> str | None:
    """``expression`` with the change a reflection names, or None when it names none that fits. The
    inverse of ``near_miss``: it measures whether a reflection's repair is right, independently of what
    the retry then does."""
    repair = read_repair(expression, reflection)
    return repair.apply(expression) if repair else None


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.2f}"


def scripted_reflection(nums: list[int], target: int, miss: NearMiss) -> str:
    """What went wrong with the near miss (its value, the numbers it misuses) and its repair: one
    change, not the whole answer."""
    value, used = evaluate(miss.expression)
    gap = value - target
    sentences = [
        f"My equation gives {_fmt(value)}, {_fmt(abs(gap))} {'more' if gap > 0 else 'less'} than {target}."
        if gap
        else f"My equation gives {target}."
    ]
    given, have = Counter(nums), Counter(used)
    twice, unused = sorted((have - given).elements()), sorted((given - have).elements())
    problems = ([f"used {', '.join(map(str, twice))} too often"] if twice else []) + (
        [f"did not use {', '.join(map(str, unused))}"] if unused else []
    )
    if problems:
        sentences.append(f"I {' and '.join(problems)}.")
    sentences.append(miss.repair.sentence(miss.expression))
    return " ".join(sentences)
