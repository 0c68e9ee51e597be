"""APIGen function calling (xLAM format): emit the right tool calls for a query and a list of tools."""

from __future__ import annotations

import json
import logging
import random
from typing import Iterable

from r3exp.tasks.apigen_generator import generate_row
from r3exp.tasks.apigen_validator import validate_calls
from r3exp.tasks.base import Example, Task, hash_split
from r3exp.tasks.hub import load_hub_rows

log = logging.getLogger(__name__)
REQUIRED = ("id", "query", "tools", "answers")


def parse_row(row: dict) -> Example:
    """An example from an xLAM row; raises ValueError naming the problem for a malformed row."""
    missing = [key for key in REQUIRED if key not in row or row[key] is None]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    try:
        tools = json.loads(row["tools"]) if isinstance(row["tools"], str) else row["tools"]
        answers = json.loads(row["answers"]) if isinstance(row["answers"], str) else row["answers"]
    except json.JSONDecodeError as err:
        raise ValueError(f"bad JSON: {err}") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
        raise ValueError("`tools` is not a list of {name, description, parameters}")
    if not isinstance(answers, list) or not all(
        isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("arguments"), dict) for a in answers
    ):
        raise ValueError("`answers` is not a list of {name, arguments}")
    names = {t["name"] for t in tools}
    unknown = [a["name"] for a in answers if a["name"] not in names]
    if unknown:
        raise ValueError(f"answers call unknown tool(s) {unknown}")
    return {"id": row["id"], "query": str(row["query"]), "tools": tools, "answers": answers}


def parse_rows(rows: Iterable[dict], source: str, report: int = 3) -> tuple[list[Example], int]:
    """Parsed examples and the number of malformed rows skipped; the first ``report`` are logged by id."""
    examples, skipped = [], 0
    for row in rows:
        try:
            examples.append(parse_row(row))
        except ValueError as err:
            skipped += 1
            if skipped <= report:
                log.warning("%s: skipping row id=%s: %s", source, row.get("id", "?"), err)
    if skipped:
        log.warning("%s: skipped %d malformed row(s)", source, skipped)
    return examples, skipped


def split_of(row_id) -> str:
    return hash_split(f"apigen/{row_id}")


class ApigenTask(Task):
    """Function calling as in APIGen / xLAM.

    Args:
        source: ``generated`` (seeded procedural rows, offline default), the hub id
            ``Salesforce/xlam-function-calling-60k`` (gated: accept its terms and set ``HF_TOKEN``), or a
            local .json/.jsonl/.parquet file in the same format.
        split_sizes: examples per split; from the hub, the test split is held out first (the paper: 12,000).
        tools_prompt: system prompt presenting the tools (``{tools}``) when the model's chat template has
            no native tool support; otherwise the tools go through ``apply_chat_template(tools=...)``.
    """

    name = "apigen"

    def __init__(
        self,
        prompt: str,
        tools_prompt: str,
        reflection_prompt: str,
        retry_prompt: str,
        system_prompt: str | None = None,
        source: str = "generated",
        split_sizes: dict[str, int] | None = None,
        seed: int = 0,
        name: str = "apigen",
    ):
        super().__init__(reflection_prompt, retry_prompt, system_prompt, name)
        self.prompt, self.tools_prompt, self.source, self.seed = prompt, tools_prompt, source, seed
        self.split_sizes = dict(split_sizes or {"train": 2000, "validation": 200, "test": 200})
        self.skipped: dict[str, int] = {}

    def examples(self, split: str) -> list[Example]:
        return self._cached_split(split, self._load)

    def _load(self, split: str) -> list[Example]:
        count = int(self.split_sizes[split])
        if self.source == "generated":
            rng = random.Random(f"apigen/{self.seed}")
            rows, index = [], 0
            while len(rows) < count:  # one seeded stream; each row's split comes from its id
                row = generate_row(index, rng)
                index += 1
                if split_of(row["id"]) == split:
                    rows.append(row)
        else:
            rows = load_hub_rows(self.source, split, self.split_sizes, self.seed, required=REQUIRED)
        examples, self.skipped[split] = parse_rows(rows, f"{self.source}[{split}]")
        return examples

    def user_prompt(self, example: Example) -> str:
        return self.prompt.format(**example)

    def tools(self, example: Example) -> list[dict] | None:
        return example["tools"]

    def tools_system_message(self, example: Example) -> str:
        return self.tools_prompt.format(tools=json.dumps(example["tools"]))

    def validate(self, example: Example, answer: str) -> bool:
        return validate_calls(answer, example["answers"], example["tools"])

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        texts = super().corpus(n, seed)
        for ex in self.examples("train")[:n]:
            texts += [json.dumps(ex["tools"]), json.dumps(ex["answers"])]
        texts.append(self.tools_prompt)
        return texts
