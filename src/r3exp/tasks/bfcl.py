"""BFCL (Berkeley Function Calling Leaderboard) single-turn categories as an R3 task, scored as BFCL scores.

Questions, function documents and possible answers come from the ``bfcl-eval`` package's files
(:mod:`r3exp.tasks.bfcl_data`); an answer is read by :mod:`r3exp.tasks.bfcl_decoder` (parsed, never
executed) and judged by :mod:`r3exp.tasks.bfcl_checker` (BFCL's AST check, proven equal to bfcl-eval's).

The split cannot leak: training (and validation) questions come from ``categories.train``, test questions
from ``categories.test``; the two lists must be disjoint (checked when the task is built), validation is a
hash-of-the-id share of the training categories' questions, and the three splits' question ids are checked
disjoint when the examples are first loaded.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, Sequence

from r3exp.errors import ConfigError
from r3exp.tasks.base import SPLITS, Example, Task, hash_split
from r3exp.tasks.bfcl_checker import check_calls
from r3exp.tasks.bfcl_data import CATEGORIES, load_category
from r3exp.tasks.bfcl_decoder import decode_calls, is_calls_format, is_empty

log = logging.getLogger(__name__)

# BFCL's default system prompt for prompting models (bfcl_eval.constants.default_prompts, the default
# format ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic),
# assembled as bfcl_eval.model_handler.utils.formulate_system_prompt assembles it.
BFCL_SYSTEM_PROMPT = (
    "You are an expert in composing functions."
    "You are given a question and a set of possible functions. Based on the question, you will need to make one "
    "or more function/tool calls to achieve the purpose. If none of the functions can be used, point it out. If "
    "the given question lacks the parameters required by the function, also point it out.\n\n"
    "You should only return the function calls in your response.\n\nIf you decide to invoke any of the "
    "function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
    "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text in the "
    "response.\n\n"
    "At each turn, you should try your best to complete the tasks requested by the user within the current "
    "turn. Continue to output functions to call until you have fulfilled the user's request to the best of "
    "your ability. Once you have no more functions to call, the system will consider the current turn complete "
    "and proceed to the next turn or task.\n\n"
    "Here is a list of functions in json format that you can invoke.\n{functions}\n"
)
# BFCL's types as JSON-schema types, for chat templates with native tool support (bfcl_eval's
# GORILLA_TO_OPENAPI, Python types).
OPENAPI_TYPES = {
    "integer": "integer",
    "float": "number",
    "string": "string",
    "boolean": "boolean",
    "array": "array",
    "tuple": "array",
    "dict": "object",
    "any": "string",
}


class BfclTask(Task):
    """BFCL's single-turn Python categories (``simple_python``, ``multiple``, ``parallel``,
    ``parallel_multiple``, their ``live_*`` versions, ``irrelevance``, ``live_irrelevance``,
    ``live_relevance``).

    Args:
        categories: ``{train: [...], test: [...]}``: the categories each side draws from (disjoint).
        validation_fraction: share of the training categories' questions held out as validation (by a
            hash of the question id).
        split_sizes: at most this many examples per split (null: all); the examples of a split are its
            categories' questions, each category shuffled with ``seed``, taken in turn, so any prefix
            covers every category.
        max_prompt_chars: leave out questions whose prompt (system prompt with the function documents, and
            the question) is longer; null keeps all. The engine's ``max_model_len`` must hold the prompt
            and the R3 turns after it.
        tools_prompt: system prompt presenting the functions (``{functions}``: their JSON) when the chat
            template has no native tool support; null is BFCL's default prompt.
    """

    name = "bfcl"

    def __init__(
        self,
        reflection_prompt: str,
        retry_prompt: str,
        categories: dict[str, Sequence[str]],
        validation_fraction: float = 0.1,
        split_sizes: dict[str, int | None] | None = None,
        max_prompt_chars: int | None = None,
        context_tokens: int | None = None,
        tools_prompt: str | None = None,
        system_prompt: str | None = None,
        seed: int = 0,
        name: str = "bfcl",
    ):
        super().__init__(reflection_prompt, retry_prompt, system_prompt, name)
        self.categories = check_categories(categories)
        if not 0.0 <= float(validation_fraction) < 1.0:
            raise ConfigError(f"task.validation_fraction={validation_fraction}: expected a share in [0, 1)")
        self.validation_fraction = float(validation_fraction)
        self.split_sizes = dict(split_sizes or {})
        self.max_prompt_chars = max_prompt_chars
        self.context_tokens = context_tokens
        self.tools_prompt = tools_prompt or BFCL_SYSTEM_PROMPT
        self.seed = seed
        self.left_out: dict[str, dict[str, int]] = {}  # questions over max_prompt_chars, by split and category
        self._checked = False

    def split_of(self, example: Example) -> str:
        """``test`` for the test categories; ``validation`` or ``train`` by a hash of the question id."""
        if example["category"] in self.categories["test"]:
            return "test"
        fractions = {"validation": self.validation_fraction, "train": 1.0 - self.validation_fraction}
        return hash_split(f"bfcl/{example['id']}", fractions)

    def examples(self, split: str) -> list[Example]:
        if not self._checked:
            self.check_disjoint()
        return self._cached_split(split, self._load)

    def _questions(self, split: str) -> dict[str, list[Example]]:
        side = "test" if split == "test" else "train"
        return {
            name: [ex for ex in self._category(name) if self.split_of(ex) == split] for name in self.categories[side]
        }

    def _category(self, name: str) -> list[Example]:
        """A category's questions, its files read once per task (the disjointness check, then each split)."""
        files = self.__dict__.setdefault("_category_cache", {})
        if name not in files:
            files[name] = load_category(name)
        return files[name]

    def check_disjoint(self) -> None:
        """No question id in two splits (ConfigError naming one); run once, when examples are first loaded."""
        seen: dict[str, str] = {}
        for split in SPLITS:
            for questions in self._questions(split).values():
                for example in questions:
                    other = seen.setdefault(example["id"], split)
                    if other != split:
                        raise ConfigError(
                            f"task.categories: BFCL question {example['id']} is in both the "
                            f"{other} and the {split} split"
                        )
        self._checked = True

    def _load(self, split: str) -> list[Example]:
        by_category = {}
        for category, questions in self._questions(split).items():
            kept = [ex for ex in questions if self.fits(ex)]
            if len(kept) < len(questions):
                self.left_out.setdefault(split, {})[category] = len(questions) - len(kept)
                log.info(
                    "bfcl %s: %d of %d %s questions left out: prompt over task.max_prompt_chars=%s",
                    split,
                    len(questions) - len(kept),
                    len(questions),
                    category,
                    self.max_prompt_chars,
                )
            random.Random(f"bfcl/{self.seed}/{category}").shuffle(kept)
            by_category[category] = kept
        examples = interleave(list(by_category.values()))
        limit = self.split_sizes.get(split)
        return examples[: int(limit)] if limit is not None else examples

    def prompt_chars(self, example: Example) -> int:
        return len(self.tools_system_message(example)) + sum(len(m["content"]) for m in example["messages"])

    def fits(self, example: Example) -> bool:
        return self.max_prompt_chars is None or self.prompt_chars(example) <= int(self.max_prompt_chars)

    def group(self, example: Example) -> str:
        """The BFCL category: evaluation reports accuracy per category."""
        return example["category"]

    def user_prompt(self, example: Example) -> str:
        return "\n\n".join(m["content"] for m in example["messages"] if m["role"] == "user")

    def first_attempt_messages(self, example: Example) -> list[dict[str, str]]:
        messages = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def tools(self, example: Example) -> list[dict]:
        return [openai_tool(function) for function in example["functions"]]

    def tools_system_message(self, example: Example) -> str:
        return self.tools_prompt.replace("{functions}", json.dumps(example["functions"], indent=4))

    def validate(self, example: Example, answer: str) -> bool:
        try:
            category = CATEGORIES[example["category"]]
            decoded = decode_calls(answer)
            if category.scoring == "irrelevance":
                return is_empty(decoded)
            if category.scoring == "relevance":
                return not is_empty(decoded)
            if decoded is None or not is_calls_format(decoded):
                return False
            return check_calls(example["functions"], decoded, example["answers"], category.name)[0]
        except Exception:  # noqa: BLE001 - a validator returns a bool for any input, by contract
            return False

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        texts = super().corpus(n, seed)
        texts += [self.tools_system_message(ex) for ex in self.examples("train")[:n]]
        return texts


def check_categories(categories: Any) -> dict[str, list[str]]:
    """``{train: [...], test: [...]}`` of known, disjoint category names, or ConfigError naming the problem."""
    if not hasattr(categories, "get") or categories.get("test") is None:
        raise ConfigError("task.categories: expected {train: [...], test: [...]} of BFCL category names")
    for side in ("train", "test"):
        if isinstance(categories.get(side), str):
            raise ConfigError(
                f"task.categories.{side}={categories.get(side)}: expected a list, "
                f"e.g. task.categories.{side}=[{categories.get(side)}]"
            )
    result = {side: list(categories.get(side) or []) for side in ("train", "test")}
    for side, names in result.items():
        unknown = [name for name in names if name not in CATEGORIES]
        if unknown:
            raise ConfigError(
                f"task.categories.{side}: unknown BFCL categor{'ies' if len(unknown) > 1 else 'y'} "
                f"{', '.join(map(repr, unknown))}; known: {', '.join(CATEGORIES)}"
            )
    both = [name for name in result["train"] if name in result["test"]]
    if both:
        raise ConfigError(
            f"task.categories: {', '.join(both)} in both train and test: training would see test questions"
        )
    if not result["test"]:
        raise ConfigError("task.categories.test: no category to test on")
    return result


def interleave(lists: list[list]) -> list:
    """The lists' items taken in turn (one of each, then the next of each, ...)."""
    items, index = [], 0
    while any(index < len(items_) for items_ in lists):
        items += [items_[index] for items_ in lists if index < len(items_)]
        index += 1
    return items


def openai_tool(function: dict) -> dict:
    """A BFCL function document as a JSON-schema tool (``{"type": "function", "function": ...}``)."""
    return {
        "type": "function",
        "function": {
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": {**_schema(function["parameters"]), "type": "object"},
        },
    }


def _schema(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {key: _schema(value) for key, value in node.items()}
        if isinstance(node.get("type"), str):
            converted["type"] = OPENAPI_TYPES.get(node["type"], "string")
        return converted
    if isinstance(node, list):
        return [_schema(item) for item in node]
    return node
