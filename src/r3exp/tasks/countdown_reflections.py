"""Scripted Countdown episodes for the warm start: a near-miss wrong attempt, a reflection written by a
program (which numbers were used, what the equation evaluates to and how far from the target), and the
correct answer as the retry. They teach a small model the reflect-and-retry conversation format; they
never appear in R3 training or evaluation."""
from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

from r3exp.tasks.safe_arithmetic import UnsafeExpression, evaluate

OPERATOR = re.compile(r"(?<=\s)[-+*/](?=\s)")
NUMBER = re.compile(r"\d+")


def answer_text(expression: str) -> str:
    return f"<answer> {expression} </answer>"


def near_miss(solution: str, nums: list[int], target: int, rng: random.Random) -> str | None:
    """A wrong expression close to ``solution``: one operator changed, or one number replaced by
    another of the given numbers (so one is used twice and one not at all). None if every try is right."""
    for _ in range(8):
        if rng.random() < 0.6 and OPERATOR.search(solution):
            spots = list(OPERATOR.finditer(solution))
            spot = rng.choice(spots)
            new_op = rng.choice([op for op in "+-*/" if op != spot.group()])
            candidate = solution[:spot.start()] + new_op + solution[spot.end():]
        else:
            spots = list(NUMBER.finditer(solution))
            spot = rng.choice(spots)
            others = [str(n) for n in nums if str(n) != spot.group()]
            if not others:
                continue
            candidate = solution[:spot.start()] + rng.choice(others) + solution[spot.end():]
        try:
            value, used = evaluate(candidate)
        except UnsafeExpression:
            continue
        if not (sorted(used) == sorted(nums) and value == target):
            return candidate
    return None


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.2f}"


def scripted_reflection(nums: list[int], target: int, expression: str | None) -> str:
    """What went wrong with ``expression``, stated without giving the answer."""
    if expression is None:
        return "I did not give an equation inside <answer> tags."
    try:
        value, used = evaluate(expression)
    except UnsafeExpression:
        return "My equation is not valid arithmetic with + - * / and the given numbers."
    gap = value - target
    sentences = [f"My equation gives {_fmt(value)}, {_fmt(abs(gap))} {'more' if gap > 0 else 'less'} than {target}."
                 if gap else f"My equation gives {target}."]
    given, have = Counter(nums), Counter(used)
    twice, unused = sorted((have - given).elements()), sorted((given - have).elements())
    problems = ([f"used {', '.join(map(str, twice))} too often"] if twice else []) + \
               ([f"did not use {', '.join(map(str, unused))}"] if unused else [])
    if problems:
        sentences.append(f"I {' and '.join(problems)}.")
    sentences.append("I should change one operation or number.")
    return " ".join(sentences)
