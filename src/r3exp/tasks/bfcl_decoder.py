"""Read function calls out of a model's answer, as BFCL's AST decoder does, without executing anything.

Two answer formats are read:

- BFCL's prompting format, ``[func_name1(param=value, ...), func_name2(...)]`` (what BFCL's default
  system prompt asks for). It is parsed with :func:`ast.parse` and read node by node, following
  ``bfcl_eval.model_handler.utils.default_decode_ast_prompting`` / ``resolve_ast_by_type`` (bfcl-eval
  2026.3.23, Apache-2.0), including its quirks (a name stands for its own string, ``-x`` of a literal is
  its negation, a call without keywords is its own source text, a subscript is its source text).
- The tool-call blocks of chat templates with native tool support (Hermes / Qwen2.5:
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``), read as JSON.

BFCL evaluates arithmetic in an answer with ``eval`` (``f(x=2*3)``); here an arithmetic expression over
number, string, list and tuple literals is computed by an AST walk with size limits, and anything else in it (names,
calls, attributes) fails the decode instead of running. The only other difference: BFCL's ``eval``
can reach Python builtins (``f(x=abs(-3)+1)``), which here fails the decode.

Hostile answers (unbalanced brackets, huge nesting, huge numbers, non-UTF-8 text, code that would
execute) fail the decode: :func:`decode_calls` returns None and never raises.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from typing import Any

from r3exp.tasks.apigen_validator import reject_constant

MAX_ANSWER_CHARS = 20_000  # BFCL answers are a few hundred characters; longer ones fail the decode
MAX_EXPRESSION_NODES = 256
MAX_INT_BITS = 4096
MAX_STRING_CHARS = 100_000
TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)

Calls = list[dict[str, dict[str, Any]]]  # [{function name: {parameter: value}}], BFCL's decoded form


class DecodeError(ValueError):
    """The answer is not a list of function calls in a format this module reads."""


def decode_calls(answer: Any) -> Calls | None:
    """The calls in ``answer`` as BFCL's decoder returns them (``[{name: {param: value}}]``), or None when
    BFCL's decoder would fail on it (or it is not text, or too long). Never raises, never executes."""
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    try:
        if "<tool_call>" in answer:
            return decode_tool_call_blocks(answer)
        return decode_python_calls(answer)
    except (
        DecodeError,
        SyntaxError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        OverflowError,
        ZeroDivisionError,
        RecursionError,
        MemoryError,
        UnicodeError,
    ):
        return None


def decode_python_calls(answer: str) -> Calls:
    """BFCL's ``default_decode_ast_prompting`` for Python: strip backticks, newlines and spaces, add the
    missing outer brackets, strip wrapping single quotes, parse, read each element as a call."""
    text = answer.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    tree = ast.parse(text.strip().strip("'"), mode="eval")
    if isinstance(tree.body, ast.Call):
        return [resolve_call(tree.body)]
    elements = getattr(tree.body, "elts", None)  # BFCL reads .elts: a list, tuple or set of calls
    if elements is None:
        raise DecodeError(f"not a list of calls: {type(tree.body).__name__}")
    if not all(isinstance(element, ast.Call) for element in elements):
        raise DecodeError("an element of the list is not a call")
    return [resolve_call(element) for element in elements]


def resolve_call(call: ast.Call) -> dict[str, dict[str, Any]]:
    """``{dotted.function.name: {keyword: value}}``; positional arguments are ignored, as in BFCL."""
    parts, node = [], call.func
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    arguments = {}
    for keyword in call.keywords:
        arguments[keyword.arg] = resolve_value(keyword.value)
    return {".".join(reversed(parts)): arguments}


def resolve_value(node: ast.AST) -> Any:
    """The value of one argument, read as BFCL's ``resolve_ast_by_type`` reads it (see the module doc)."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):  # BFCL negates the operand's literal whatever the operator
        if not isinstance(node.operand, ast.Constant):
            raise DecodeError("a unary operator on something other than a literal")
        return -node.operand.value
    if isinstance(node, ast.List):
        return [resolve_value(element) for element in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise DecodeError("** in a dict")
        return {resolve_value(key): resolve_value(value) for key, value in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp):
        return arithmetic(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return ast.unparse(node) if not node.keywords else resolve_call(node)
    if isinstance(node, ast.Tuple):
        return tuple(resolve_value(element) for element in node.elts)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise DecodeError(f"unsupported syntax in an argument: {type(node).__name__}")  # BFCL: lambdas too


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SIGNS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_LITERALS = (int, float, complex, str)


def arithmetic(expression: ast.BinOp) -> Any:
    """The value Python gives a binary expression over number, string, list and tuple literals, computed without
    ``eval``; sizes are bounded (no ``9**9**9``), and anything but literals and + - * / // % ** fails."""
    if sum(1 for _ in ast.walk(expression)) > MAX_EXPRESSION_NODES:
        raise DecodeError("arithmetic expression too large")
    return _compute(expression)


def _compute(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, _LITERALS):  # bool is an int, as in Python
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):  # [0] * 3, (1, 2) + (3,)
        items = [_compute(element) for element in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _SIGNS:
        return _bounded(_SIGNS[type(node.op)](_compute(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _compute(node.left), _compute(node.right)
        _check_size(node.op, left, right)
        return _bounded(_OPERATORS[type(node.op)](left, right))
    raise DecodeError(f"not arithmetic over literals: {type(node).__name__}")


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large to compute quickly."""
    if isinstance(op, ast.Mod) and isinstance(left, str):  # printf-style formatting: '%*d' % (10**9, 1)
        raise DecodeError("string formatting")
    if isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
            raise DecodeError("power too large")
    if isinstance(op, ast.Mult):
        for sequence, count in ((left, right), (right, left)):
            if (
                isinstance(sequence, (str, list, tuple))
                and isinstance(count, int)
                and len(sequence) * max(count, 0) > MAX_STRING_CHARS
            ):
                raise DecodeError("sequence too long")
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS
        ):
            raise DecodeError("product too large")


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise DecodeError("number too large")
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_STRING_CHARS:
        raise DecodeError("string too long")
    return value


def decode_tool_call_blocks(answer: str) -> Calls:
    """Calls in ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (the Hermes / Qwen2.5
    chat templates' format; ``"parameters"`` is read like ``"arguments"``)."""
    blocks = TOOL_CALL.findall(answer)
    if not blocks:
        raise DecodeError("an unclosed <tool_call> block")
    calls = []
    for block in blocks:
        call = json.loads(block.strip(), parse_constant=reject_constant)
        arguments = call.get("arguments", call.get("parameters")) if isinstance(call, dict) else None
        if isinstance(arguments, str):  # some templates write the arguments as a JSON string
            arguments = json.loads(arguments, parse_constant=reject_constant)
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(arguments, dict)):
            raise DecodeError("a <tool_call> block is not {name, arguments}")
        calls.append({call["name"]: arguments})
    return calls


def is_calls_format(decoded: Any) -> bool:
    """BFCL's ``is_function_calling_format_output``: a list of one-key dicts whose value is a dict."""
    return isinstance(decoded, list) and all(
        type(item) is dict and len(item) == 1 and type(next(iter(item.values()))) is dict for item in decoded
    )


def is_empty(decoded: Calls | None) -> bool:
    """BFCL's ``is_empty_output`` (relevance): no call in it (``[]``, ``[{}]``, or not the calls format)."""
    return (
        decoded is None
        or not is_calls_format(decoded)
        or len(decoded) == 0
        or (len(decoded) == 1 and len(decoded[0]) == 0)
    )
