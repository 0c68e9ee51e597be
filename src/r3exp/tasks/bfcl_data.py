"""BFCL's question and possible-answer files, read from the installed ``bfcl-eval`` package's files.

The files are found through the distribution's metadata (``importlib.metadata``): ``bfcl_eval`` itself is
never imported (its package imports every API client BFCL supports). ``scripts/install.sh`` installs the
package with ``--no-deps``: its pinned dependencies (numpy 1.26.4, ...) are old and none is needed to read
its data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from r3exp.tasks.hub import DataUnavailable, read_split_file

DISTRIBUTION = "bfcl-eval"
VERSION = "2026.3.23"
INSTALL = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"


@dataclass(frozen=True)
class Category:
    """A single-turn BFCL category and how BFCL scores it: ``ast`` (calls against possible answers),
    ``irrelevance`` (right when the answer holds no call), ``relevance`` (right when it holds one)."""

    name: str
    scoring: str


CATEGORIES = {
    c.name: c
    for c in (
        Category("simple_python", "ast"),
        Category("multiple", "ast"),
        Category("parallel", "ast"),
        Category("parallel_multiple", "ast"),
        Category("live_simple", "ast"),
        Category("live_multiple", "ast"),
        Category("live_parallel", "ast"),
        Category("live_parallel_multiple", "ast"),
        Category("irrelevance", "irrelevance"),
        Category("live_irrelevance", "irrelevance"),
        Category("live_relevance", "relevance"),
    )
}
# BFCL's prompting handlers append this to every function's description (bfcl_eval.utils,
# _get_language_specific_hint) before the functions go into the prompt.
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


def data_dir() -> Path:
    """``bfcl_eval/data`` of the installed distribution; DataUnavailable naming the install command when
    it is not installed."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DataUnavailable(
            f"task=bfcl needs the {DISTRIBUTION} package: {INSTALL} (scripts/install.sh installs it)"
        ) from None
    return Path(distribution.locate_file("bfcl_eval/data"))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataUnavailable(f"{path} does not exist (is {DISTRIBUTION}=={VERSION} installed? {INSTALL})")
    return read_split_file(path, None, required=("id",))


def load_category(name: str, directory: Path | None = None) -> list[dict]:
    """Every question of category ``name`` as an example: ``id``, ``category``, ``messages`` (the single
    turn's chat messages), ``functions`` (with BFCL's Python hint in each description) and ``answers``
    (the possible answers, None for the relevance categories), in the file's order."""
    category = CATEGORIES[name]
    directory = directory or data_dir()
    questions = read_jsonl(directory / f"BFCL_v4_{name}.json")
    answers = {}
    if category.scoring == "ast":
        answers = {
            row["id"]: row["ground_truth"] for row in read_jsonl(directory / "possible_answer" / f"BFCL_v4_{name}.json")
        }
    examples = []
    for row in questions:
        if row["id"] not in answers and category.scoring == "ast":
            raise DataUnavailable(f"{DISTRIBUTION}: question {row['id']} has no possible answer")
        examples.append(
            {
                "id": row["id"],
                "category": name,
                "messages": row["question"][0],
                "functions": with_python_hint(row["function"]),
                "answers": answers.get(row["id"]),
            }
        )
    return examples


def with_python_hint(functions: list[dict]) -> list[dict]:
    functions = copy.deepcopy(functions)
    for function in functions:
        function["description"] = function["description"] + PYTHON_HINT
    return functions
