"""Exhaustive Countdown solver and a seeded generator of solvable instances.

Every generated instance carries a witness ``solution`` found by the solver, so solvability is proven
rather than assumed, and the warm start can use the witnesses as supervised targets.
"""

from __future__ import annotations

import random
from fractions import Fraction
from functools import lru_cache

from r3exp.tasks.base import SPLIT_FRACTIONS, hash_split

Expression = tuple[Fraction, str]


def _combine(a: Expression, b: Expression):
    (va, ea), (vb, eb) = a, b
    yield va + vb, f"{ea} + {eb}"
    yield va * vb, f"{_wrap(ea)} * {_wrap(eb)}"
    yield va - vb, f"{ea} - {_wrap(eb)}"
    yield vb - va, f"{eb} - {_wrap(ea)}"
    if vb != 0:
        yield va / vb, f"{_wrap(ea)} / {_wrap(eb)}"
    if va != 0:
        yield vb / va, f"{_wrap(eb)} / {_wrap(ea)}"


def _wrap(expr: str) -> str:
    """Parenthesise compound sub-expressions (always, for simplicity and unambiguity)."""
    return f"({expr})" if (" " in expr) else expr


@lru_cache(maxsize=4096)
def reachable(nums: tuple[int, ...]) -> dict[Fraction, str]:
    """All values reachable using every number in ``nums`` exactly once, each with one expression."""
    if len(nums) == 1:
        return {Fraction(nums[0]): str(nums[0])}
    results: dict[Fraction, str] = {}
    n = len(nums)
    # Split the multiset into two non-empty parts (by index mask), combine every pair of sub-results.
    for mask in range(1, (1 << n) - 1):
        if mask & 1 == 0:  # each unordered split once: the part holding index 0 is the left one
            continue
        left = tuple(sorted(nums[i] for i in range(n) if mask >> i & 1))
        right = tuple(sorted(nums[i] for i in range(n) if not mask >> i & 1))
        for lv, le in reachable(left).items():
            for rv, re_ in reachable(right).items():
                for value, expr in _combine((lv, le), (rv, re_)):
                    results.setdefault(value, expr)
    return results


def solve(nums: list[int], target: int) -> str | None:
    """An expression using each of ``nums`` once that equals ``target``, or None if there is none."""
    return reachable(tuple(sorted(nums))).get(Fraction(target))


def instance_key(nums: list[int], target: int) -> str:
    return f"{sorted(nums)}->{target}"


def split_of(nums: list[int], target: int, fractions: dict[str, float] = SPLIT_FRACTIONS) -> str:
    """The split an instance belongs to, from a stable hash of the instance (:func:`hash_split`)."""
    return hash_split(instance_key(nums, target), fractions)


def random_expression(nums: list[int], rng: random.Random) -> tuple[Fraction, str] | None:
    """Combine ``nums`` in random order with random operations; None on division by zero."""
    terms: list[Expression] = [(Fraction(n), str(n)) for n in nums]
    rng.shuffle(terms)
    while len(terms) > 1:
        i, j = rng.sample(range(len(terms)), 2)
        a, b = terms[i], terms[j]
        options = [c for c in _combine(a, b)]
        if not options:
            return None
        combined = rng.choice(options)
        terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [combined]
    return terms[0]


def generate_instances(
    count: int,
    split: str,
    seed: int,
    num_range: tuple[int, int] = (1, 99),
    target_range: tuple[int, int] = (10, 100),
    sizes: tuple[int, ...] = (3, 4),
) -> list[dict]:
    """``count`` distinct solvable instances of ``split``: 3 or 4 numbers, a target, a witness solution.

    The target is the value of a random expression over the numbers, so the expression (``solution``)
    proves the instance solvable; the tests re-check witnesses with the validator and the exhaustive
    solver. Asking for fewer examples gives a prefix of the longer list.
    """
    rng = random.Random(f"countdown/{seed}/{split}")
    seen: set[str] = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 1000 * count + 1000:
            raise RuntimeError(f"could not generate {count} countdown instances for split {split!r}")
        nums = [rng.randint(*num_range) for _ in range(rng.choice(sizes))]
        found = random_expression(nums, rng)
        if found is None:
            continue
        value, expression = found
        if value.denominator != 1 or not target_range[0] <= value <= target_range[1]:
            continue
        target = int(value)
        key = instance_key(nums, target)
        if key in seen or split_of(nums, target) != split:
            continue
        seen.add(key)
        rows.append({"nums": nums, "target": target, "solution": expression})
    return rows
