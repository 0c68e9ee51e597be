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


@dataclass(frozen=True)
class NearMiss:
    """A wrong expression one edit away from a solution, and the repair stated in words."""

    expression: str
    repair: str


def _which(occurrences: list[str], index: int, token: str) -> str:
    """``token`` alone when it occurs once, else ``the second token`` (counted left to right)."""
    return token if occurrences.count(token) == 1 else f"the {ORDINALS[occurrences[:index].count(token)]} {token}"


def near_miss(solution: str, nums: list[int], target: int, rng: random.Random) -> NearMiss | None:
    """A wrong expression close to ``solution``: one operator changed, or one number replaced by
    another of the given numbers (so one is used twice and one not at all). None if every try is right."""
    for _ in range(8):
        if rng.random() < 0.6 and OPERATOR.search(solution):
            spots = list(OPERATOR.finditer(solution))
            spot = spots[rng.randrange(len(spots))]
            replacement = rng.choice([op for op in "+-*/" if op != spot.group()])
        else:
            spots = list(NUMBER.finditer(solution))
            spot = spots[rng.randrange(len(spots))]
            others = [str(n) for n in nums if str(n) != spot.group()]
            if not others:
                continue
            replacement = rng.choice(others)
        candidate = solution[:spot.start()] + replacement + solution[spot.end():]
        try:
            value, used = evaluate(candidate)
        except UnsafeExpression:
            continue
        if sorted(used) == sorted(nums) and value == target:
            continue
        repair = next(sentence for sentence, changed in repair_sentences(candidate, nums) if changed == solution)
        return NearMiss(candidate, repair)
    return None


def repair_sentences(expression: str, nums: list[int]) -> list[tuple[str, str]]:
    """Every single change of ``expression`` (an operator, or a number replaced by another of ``nums``),
    each as the sentence that names it and the expression it gives: ("I should use 7 instead of the
    second 8.", "...")."""
    changes = []
    for kind, choices in ((OPERATOR, "+-*/"), (NUMBER, sorted({str(n) for n in nums}))):
        spots = list(kind.finditer(expression))
        tokens = [m.group() for m in spots]
        for index, spot in enumerate(spots):
            for choice in choices:
                if choice != spot.group():
                    changes.append((f"I should use {choice} instead of {_which(tokens, index, spot.group())}.",
                                    expression[:spot.start()] + choice + expression[spot.end():]))
    return changes


REPAIR = re.compile(r"I should use (\S+) instead of (?:the (first|second|third|fourth|fifth) )?(\S+?)\.")


def apply_repair(expression: str, reflection: str) -> str | None:
    """``expression`` with the change a reflection names ("I should use 7 instead of the second 8."),
    or None when the reflection names no change that fits the expression. The inverse of ``near_miss``:
    it measures whether a reflection's repair is right, independently of what the retry then does."""
    found = REPAIR.search(reflection)
    if not found:
        return None
    new, which, old = found.group(1), ORDINALS.index(found.group(2)) if found.group(2) else 0, found.group(3)
    kind = NUMBER if old.isdigit() else OPERATOR
    if (kind is NUMBER) != new.isdigit() or (kind is OPERATOR and new not in "+-*/"):
        return None
    spots = [m for m in kind.finditer(expression) if m.group() == old]
    if which >= len(spots):
        return None
    spot = spots[which]
    return expression[:spot.start()] + new + expression[spot.end():]


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.2f}"


def scripted_reflection(nums: list[int], target: int, miss: NearMiss) -> str:
    """What went wrong with the near miss (its value, the numbers it misuses) and its repair: one
    change, not the whole answer."""
    value, used = evaluate(miss.expression)
    gap = value - target
    sentences = [f"My equation gives {_fmt(value)}, {_fmt(abs(gap))} {'more' if gap > 0 else 'less'} than {target}."
                 if gap else f"My equation gives {target}."]
    given, have = Counter(nums), Counter(used)
    twice, unused = sorted((have - given).elements()), sorted((given - have).elements())
    problems = ([f"used {', '.join(map(str, twice))} too often"] if twice else []) + \
               ([f"did not use {', '.join(map(str, unused))}"] if unused else [])
    if problems:
        sentences.append(f"I {' and '.join(problems)}.")
    sentences.append(miss.repair)
    return " ".join(sentences)
