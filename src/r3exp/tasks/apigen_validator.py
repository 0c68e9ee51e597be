"""APIGen function-calling validator: the model's JSON list of calls against the reference answers.

Accepted output: a JSON list of ``{"name": str, "arguments": object}``, optionally inside one Markdown
code fence (```` ```json ... ``` ````) and surrounding whitespace; nothing looser (no prose around it,
no single quotes, no trailing commas).

A call matches a reference call when the names are equal and the arguments are equal as JSON values:
key order does not matter; numbers compare by value (``5`` equals ``5.0``); booleans are not numbers
(``true`` does not equal ``1``); list order matters; an omitted argument equals the schema's
``default`` (defaults are filled in on both sides before comparing). The calls must form the same
multiset as the answers (order of calls does not matter, duplicates count), and every call must name a
tool of the row.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_ANSWER_CHARS = 50_000
FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_calls(text: str) -> list[dict] | None:
    """The list of calls in ``text``, or None when it is not in the accepted format."""
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    body = text.strip()
    fenced = FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        calls = json.loads(body, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(calls, list):
        return None
    for call in calls:
        if not (
            isinstance(call, dict)
            and set(call) == {"name", "arguments"}
            and isinstance(call["name"], str)
            and isinstance(call["arguments"], dict)
        ):
            return None
    return calls


def reject_constant(name: str):
    """``json.loads``'s ``parse_constant``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def canonical(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal: integral floats become ints, dicts sorted."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("non-finite number")
        return ("number", int(value) if float(value).is_integer() and abs(value) < 2**63 else float(value))
    if isinstance(value, list):
        return ("list", tuple(canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((str(k), canonical(v)) for k, v in value.items())))
    raise ValueError(f"not a JSON value: {type(value).__name__}")


def with_defaults(call: dict, tools: dict[str, dict]) -> dict:
    """The call's arguments with the schema's defaults filled in for omitted parameters."""
    parameters = tools[call["name"]].get("parameters") or {}
    arguments = dict(call["arguments"])
    for name, spec in parameters.items():
        if name not in arguments and isinstance(spec, dict) and "default" in spec:
            arguments[name] = spec["default"]
    return arguments


def calls_match(predicted: list[dict], expected: list[dict], tools: list[dict]) -> bool:
    by_name = {tool["name"]: tool for tool in tools}
    if any(call["name"] not in by_name for call in predicted):
        return False
    try:
        left = sorted(repr((c["name"], canonical(with_defaults(c, by_name)))) for c in predicted)
        right = sorted(repr((c["name"], canonical(with_defaults(c, by_name)))) for c in expected)
    except (ValueError, KeyError, TypeError, RecursionError):
        return False
    return left == right


def validate_calls(answer: str, expected: list[dict], tools: list[dict]) -> bool:
    """True when ``answer`` holds exactly the expected calls. Returns a bool for any input; never raises."""
    try:
        predicted = parse_calls(answer)
        return predicted is not None and calls_match(predicted, expected, tools)
    except Exception:  # noqa: BLE001 - a validator returns a bool for any input, by contract
        return False
