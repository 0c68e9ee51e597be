"""The paper's evaluation: accuracy on the first try, and after one reflection and one retry."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from r3exp.rollout.episodes import Episode, R3Protocol


@dataclass
class EvalResult:
    """Counts and accuracies of one model on one split.

    ``after_reflection`` counts examples solved on the first try or on the retry that follows one
    reflection (the paper's second column); ``reflection_fixed`` counts the retries that succeeded.
    """

    split: str
    total: int
    first_try_correct: int
    reflection_fixed: int

    @property
    def after_reflection_correct(self) -> int:
        return self.first_try_correct + self.reflection_fixed

    @property
    def first_try_accuracy(self) -> float:
        return self.first_try_correct / self.total if self.total else 0.0

    @property
    def after_reflection_accuracy(self) -> float:
        return self.after_reflection_correct / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "after_reflection_correct": self.after_reflection_correct,
                "first_try_accuracy": self.first_try_accuracy,
                "after_reflection_accuracy": self.after_reflection_accuracy}

    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        return cls(data["split"], data["total"], data["first_try_correct"], data["reflection_fixed"])


def evaluate(protocol: R3Protocol, examples: Sequence[dict], split: str, batch_size: int = 64,
             description: str = "evaluate", progress: bool = True) -> tuple[EvalResult, list[Episode]]:
    """Run one R3 episode (one reflection, one retry) per example, in batches, with a progress bar."""
    episodes: list[Episode] = []
    with tqdm(total=len(examples), desc=description, unit="ex", dynamic_ncols=True, disable=not progress) as bar:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            episodes.extend(protocol.run(chunk, group_size=1))
            bar.update(len(chunk))
            solved = sum(ep.first_try_success or any(ep.retry_successes) for ep in episodes)
            bar.set_postfix(after_reflection=f"{solved / len(episodes):.3f}")
    return episodes_result(episodes, split), episodes


def episodes_result(episodes: Sequence[Episode], split: str) -> EvalResult:
    """The counts of a set of evaluation episodes (one reflection and one retry each)."""
    return EvalResult(
        split=split,
        total=len(episodes),
        first_try_correct=sum(ep.first_try_success for ep in episodes),
        reflection_fixed=sum(bool(ep.retry_successes and ep.retry_successes[0]) for ep in episodes),
    )


def format_table(results: dict[str, EvalResult]) -> str:
    """Markdown table in the paper's layout: one row per model, first try and after reflection."""
    lines = ["| model | split | n | first try | after reflection | Δ |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.split} | {r.total} | {100 * r.first_try_accuracy:.1f}% ({r.first_try_correct}) "
            f"| {100 * r.after_reflection_accuracy:.1f}% ({r.after_reflection_correct}) "
            f"| {100 * (r.after_reflection_accuracy - r.first_try_accuracy):+.1f} |"
        )
    return "\n".join(lines)


def save_results(results: dict[str, EvalResult], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: r.to_dict() for name, r in results.items()}, indent=2))
    return path
