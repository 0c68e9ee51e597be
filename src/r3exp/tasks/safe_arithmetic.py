"""Evaluate an arithmetic expression without ``eval``: an AST walk over + - * / and integer literals.

Anything else (names, calls, attributes, ``**``, huge numbers, deep nesting, division by zero) is
rejected by raising :class:`UnsafeExpression`, which callers turn into a failed validation.
"""

from __future__ import annotations

import ast
from fractions import Fraction

MAX_EXPRESSION_CHARS = 200
MAX_LITERAL = 10**6
MAX_NODES = 64

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class UnsafeExpression(ValueError):
    """The expression is not a plain arithmetic expression over small integer literals."""


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Return the exact value of ``expression`` and the integer literals it uses, in order.

    Exact rational arithmetic (``Fraction``) avoids float surprises such as ``(1/3)*3 != 1``.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpression("expression too long")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(f"not parseable: {err}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise UnsafeExpression("expression too large")
    literals: list[int] = []
    return _eval_node(tree.body, literals), literals


def _eval_node(node: ast.AST, literals: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if not 0 <= node.value <= MAX_LITERAL:
            raise UnsafeExpression("literal out of range")
        literals.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _eval_node(node.left, literals)
        right = _eval_node(node.right, literals)
        if isinstance(node.op, ast.Div) and right == 0:
            raise UnsafeExpression("division by zero")
        return _BINARY[type(node.op)](left, right)
    raise UnsafeExpression(f"disallowed syntax: {type(node).__name__}")
