"""BFCL's AST check: do decoded calls match a question's possible answers?

A port of ``bfcl_eval.eval_checker.ast_eval.ast_checker`` (bfcl-eval 2026.3.23, Apache-2.0) for the
Python categories, rule for rule and quirk for quirk, returning ``(valid, reason)``. bfcl-eval's own
checker is not imported at run time: its module imports ``bfcl_eval.constants.model_config``, which
imports every API client BFCL supports (openai, anthropic, mistralai, cohere, google-genai, ...), none of
which r3exp depends on. ``tests/test_bfcl.py`` proves this port gives bfcl-eval's verdict on every possible
answer of every category r3exp uses, and on perturbed answers.

The rules (BFCL's):

- ``*parallel*`` categories: as many calls as possible answers, matched in any order (each answer takes
  the first unmatched call that fits). ``*multiple*``: as many calls as answers (one), checked against the
  answer's function. Others (``simple``): exactly one call.
- A call fits an answer when its name is the answer's function, every required parameter is given, every
  given parameter is documented and appears in the answer, and every answer parameter without ``""``
  among its values is given.
- A value fits when its type is the documented one (an int passes for a float; a tuple for a tuple),
  and it is among the answer's values: strings compared after removing spaces and ``,./-_*^``,
  lowercased, ``'`` read as ``"``; lists element by element the same way; dicts key by key; lists of
  dicts dict by dict. A value of the answer's type instead of the documented one is a "variable"
  (``x="my_list"``) and compared as it is.
"""

from __future__ import annotations

import re
from typing import Any

PYTHON_TYPES = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
NESTED_TYPES = ("array", "tuple")  # the types whose elements are checked too (one level deep)
STANDARDIZE = re.compile(r"[ \,\.\/\-\_\*\^]")

Verdict = tuple[bool, str]
OK: Verdict = (True, "")


def check_calls(functions: list[dict], calls: list[dict], answers: list[dict], category: str) -> Verdict:
    """``(valid, reason)`` for decoded ``calls`` against ``answers`` (``[{function: {param: [values]}}]``)
    given the question's ``functions``, under ``category``'s rule (BFCL's ``ast_checker``)."""
    if "parallel" in category:
        return _parallel_no_order(functions, calls, answers)
    if "multiple" in category:
        if len(calls) != len(answers):
            return False, "wrong number of functions"
        return check_call(_find_description(functions, next(iter(answers[0]))), calls[0], answers[0])
    if len(calls) != 1:
        return False, "wrong number of functions"
    return check_call(functions[0], calls[0], answers[0])


def _find_description(functions, name: str) -> dict | None:
    if isinstance(functions, list):
        return next((function for function in functions if function["name"] == name), None)
    return functions


def _parallel_no_order(functions: list[dict], calls: list[dict], answers: list[dict]) -> Verdict:
    if len(calls) != len(answers):
        return False, "wrong number of functions"
    matched: list[int] = []
    for index, answer in enumerate(answers):
        description = _find_description(functions, next(iter(answer)))
        verdict: Verdict = (False, "")
        for call_index, call in enumerate(calls):
            if call_index in matched:
                continue
            verdict = check_call(description, call, answer)
            if verdict[0]:
                matched.append(call_index)
                break
        if not verdict[0]:
            return False, f"no call matches possible answer {index} ({verdict[1]})"
    return OK


def check_call(description: dict, call: dict, answer: dict) -> Verdict:
    """One call against one possible answer (BFCL's ``simple_function_checker``, Python)."""
    possible = next(iter(answer.values()))
    name = description["name"]
    details = description["parameters"]["properties"]
    if name not in call:
        return False, f"function {name!r} not called"
    given = call[name]
    for parameter in description["parameters"]["required"]:
        if parameter not in given:
            return False, f"missing required parameter {parameter!r}"
    for parameter, value in given.items():
        if parameter not in details or parameter not in possible:
            return False, f"unexpected parameter {parameter!r}"
        documented = details[parameter]["type"]
        expected = PYTHON_TYPES[documented]
        nested = PYTHON_TYPES[details[parameter]["items"]["type"]] if documented in NESTED_TYPES else None
        if documented == "tuple" and type(value) is tuple:
            value = list(value)
        if documented == "float" and type(value) is int:
            value = float(value)
        verdict, is_variable = _type_check(parameter, value, possible[parameter], expected, nested)
        if not verdict[0]:
            return verdict
        if not is_variable:
            if expected is dict:
                verdict = _dict_check(parameter, value, possible[parameter])
            elif expected is list and nested is dict:
                verdict = _list_of_dicts_check(parameter, value, possible[parameter])
            elif expected is str:
                verdict = _string_check(parameter, value, possible[parameter])
            elif expected is list:
                verdict = _list_check(parameter, value, possible[parameter])
            else:
                verdict = None
            if verdict is not None:
                if not verdict[0]:
                    return verdict
                continue
        if value not in possible[parameter]:
            return False, f"invalid value for {parameter!r}: {value!r}"
    for parameter in possible:
        if parameter not in given and "" not in possible[parameter]:
            return False, f"parameter {parameter!r} not given and not optional"
    return OK


def _answer_type(values: list) -> type | None:
    return next((type(value) for value in values if value != ""), None)


def _type_check(parameter: str, value: Any, values: list, expected: type, nested: type | None) -> tuple[Verdict, bool]:
    """BFCL's ``type_checker``: (verdict, is_variable)."""
    answer_type = _answer_type(values)
    is_variable = answer_type is not None and answer_type != expected
    if type(value) is expected:
        if nested is None:
            return OK, is_variable
        for answer_value in values:
            fits = True
            if type(answer_value) is list:
                for item in value:
                    if not _type_check(parameter, item, answer_value, nested, None)[0][0]:
                        fits = False
                        break
            if fits:
                return OK, is_variable
        return (False, f"wrong element type in {parameter!r}"), False
    if answer_type is not None and type(value) is answer_type:
        return OK, True
    return (False, f"wrong type for {parameter!r}: {type(value).__name__}"), False


def standardize(text: str) -> str:
    """BFCL's ``standardize_string``: no spaces or ``,./-_*^``, lowercase, ``'`` as ``"``."""
    return STANDARDIZE.sub("", text).lower().replace("'", '"')


def _string_check(parameter: str, value: str, values: list) -> Verdict:
    if standardize(value) not in [standardize(v) for v in values if type(v) is str]:
        return False, f"invalid value for {parameter!r}: {value!r}"
    return OK


def _list_check(parameter: str, value: list, values: list) -> Verdict:
    mine = [standardize(item) if type(item) is str else item for item in value]
    options = [[standardize(item) if type(item) is str else item for item in option] for option in values]
    if mine not in options:
        return False, f"invalid value for {parameter!r}: {value!r}"
    return OK


def _dict_check(parameter: str, value: dict, values: list) -> Verdict:
    verdict: Verdict = (False, f"invalid value for {parameter!r}")
    for option in values:
        if option == "":
            continue
        verdict, fits = (False, f"invalid value for {parameter!r}"), True
        for key, item in value.items():
            if key not in option:
                verdict, fits = (False, f"unexpected key {key!r} in {parameter!r}"), False
                break
            mine = standardize(item) if type(item) is str else item
            allowed = [standardize(v) if type(v) is str else v for v in option[key]]
            if mine not in allowed:
                verdict, fits = (False, f"invalid value for {parameter!r}[{key!r}]"), False
                break
        for key, allowed in option.items():
            if key not in value and "" not in allowed:
                verdict, fits = (False, f"missing key {key!r} in {parameter!r}"), False
                break
        if fits:
            return OK
    return verdict


def _list_of_dicts_check(parameter: str, value: list, values: list) -> Verdict:
    verdict: Verdict = (False, f"invalid value for {parameter!r}")
    for option in values:
        if len(value) != len(option):
            verdict = (False, f"wrong number of dicts in {parameter!r}")
            continue
        fits = True
        for index, item in enumerate(value):
            verdict = _dict_check(parameter, item, [option[index]])
            if not verdict[0]:
                fits = False
                break
        if fits:
            return OK
    return verdict
