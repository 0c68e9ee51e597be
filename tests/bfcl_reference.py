"""bfcl-eval's own decoder and AST checker, for the equality tests (never used by r3exp itself).

The checker module imports ``bfcl_eval.constants.model_config``, which imports every API client BFCL
supports; it is the only import that fails with r3exp's dependencies, and the checker reads one thing from
it (``MODEL_CONFIG_MAPPING[model].underscore_to_dot``, for models that cannot write ``.`` in names). A
stand-in module gives that table one model whose names keep their dots, as a local model's do. The
decoder's module imports BFCL's Java/JavaScript parsers (tree-sitter) and more, so its four Python
decoding functions are taken from its source as they are (including their ``eval``: only the tests'
own, well-formed answers reach it).
"""

from __future__ import annotations

import ast
import sys
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

MODEL = "r3exp_local"  # a model whose function names keep their dots
DECODER_FUNCTIONS = ("ast_parse", "resolve_ast_call", "resolve_ast_by_type", "default_decode_ast_prompting")
FORMAT_FUNCTIONS = ("is_function_calling_format_output", "is_empty_output")


@dataclass
class _LocalModel:
    underscore_to_dot: bool = False


def _package_file(relative: str) -> Path:
    return Path(metadata.distribution("bfcl-eval").locate_file(f"bfcl_eval/{relative}"))


def _functions(path: Path, names: tuple[str, ...], namespace: dict) -> dict:
    tree = ast.parse(path.read_text())
    picked = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    assert {node.name for node in picked} == set(names), f"{path} no longer defines {names}"
    exec(compile(ast.Module(body=picked, type_ignores=[]), str(path), "exec"), namespace)  # BFCL's code, as is
    return namespace


def load_reference():
    """(decode, is_empty, is_calls_format, check): BFCL's ``default_decode_ast_prompting`` (Python),
    ``is_empty_output``, ``is_function_calling_format_output``,
    and ``ast_checker`` bound to the Python language and a local model."""
    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = {MODEL.replace("_", "/"): _LocalModel()}
    sys.modules.setdefault("bfcl_eval.constants.model_config", stub)
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    decoder = _functions(
        _package_file("model_handler/utils.py"),
        DECODER_FUNCTIONS,
        {"ast": ast, "re": __import__("re"), "ReturnFormat": ReturnFormat},
    )
    formats = _functions(_package_file("utils.py"), FORMAT_FUNCTIONS, {})

    def decode(text: str):
        return decoder["default_decode_ast_prompting"](text, ReturnFormat.PYTHON, False)

    def check(functions, calls, answers, category):
        return ast_checker(functions, calls, answers, Language.PYTHON, category, MODEL)["valid"]

    return decode, formats["is_empty_output"], formats["is_function_calling_format_output"], check
