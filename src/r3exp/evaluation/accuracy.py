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
    # controls (None when not run): retries fixed with another example's reflection / an empty one, and
    # how often the retry followed its own reflection's proposal, of the failures where one could be read
    shuffled_reflection_fixed: int | None = None
    empty_reflection_fixed: int | None = None
    followed: int | None = None
    follow_defined: int | None = None
    # the same counts per group of examples (``Task.group``: BFCL's categories), None for ungrouped tasks
    groups: dict[str, "EvalResult"] | None = None

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
        record = {
            **asdict(self),
            "after_reflection_correct": self.after_reflection_correct,
            "first_try_accuracy": self.first_try_accuracy,
            "after_reflection_accuracy": self.after_reflection_accuracy,
        }
        if self.groups is None:
            del record["groups"]
        else:
            record["groups"] = {name: group.to_dict() for name, group in self.groups.items()}
        return record

    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        controls = ("shuffled_reflection_fixed", "empty_reflection_fixed", "followed", "follow_defined")
        groups = data.get("groups")
        return cls(
            data["split"],
            data["total"],
            data["first_try_correct"],
            data["reflection_fixed"],
            **{key: data.get(key) for key in controls},
            groups=None if groups is None else {name: cls.from_dict(g) for name, g in groups.items()},
        )


def evaluate(
    protocol: R3Protocol,
    examples: Sequence[dict],
    split: str,
    batch_size: int = 256,
    description: str = "evaluate",
    progress: bool = True,
) -> tuple[EvalResult, list[Episode]]:
    """Run one R3 episode (one reflection, one retry) per example, in batches of equal size of at most
    ``batch_size`` examples (each batch is three engine calls, the progress bar moves once per batch)."""
    episodes: list[Episode] = []
    with tqdm(total=len(examples), desc=description, unit="ex", dynamic_ncols=True, disable=not progress) as bar:
        for chunk in even_batches(examples, batch_size):
            episodes.extend(protocol.run(chunk, group_size=1))
            bar.update(len(chunk))
            solved = sum(ep.first_try_success or any(ep.retry_successes) for ep in episodes)
            bar.set_postfix(after_reflection=f"{solved / len(episodes):.3f}")
    return episodes_result(episodes, split), episodes


def even_batches(items: Sequence, batch_size: int) -> list[Sequence]:
    """``items`` in the fewest batches of at most ``batch_size``, their sizes differing by at most one (288
    examples at 256: 144 and 144, not 256 and 32): every engine call is as large as the fewest calls allow."""
    if batch_size < 1:
        raise ValueError(f"evaluation.batch_size={batch_size}; expected >= 1")
    count = -(-len(items) // batch_size)
    bounds = [len(items) * i // count for i in range(count + 1)] if count else [0]
    return [items[start:stop] for start, stop in zip(bounds, bounds[1:])]


def episodes_result(episodes: Sequence[Episode], split: str) -> EvalResult:
    """The counts of a set of evaluation episodes (one reflection and one retry each)."""
    return EvalResult(
        split=split,
        total=len(episodes),
        first_try_correct=sum(ep.first_try_success for ep in episodes),
        reflection_fixed=sum(bool(ep.retry_successes and ep.retry_successes[0]) for ep in episodes),
    )


def result_with_controls(
    task, episodes: Sequence[Episode], split: str, control_outcomes: dict[str, list[tuple[Episode, bool]]]
) -> EvalResult:
    """The counts of ``episodes``, with the follow rate and each control's fixed retries (``control_outcomes``:
    control -> (failed episode, did its control retry pass), for these episodes or more), and per group
    when the task groups its examples (``Task.group``; groups in the order they first appear)."""
    result = _counts(task, episodes, split, control_outcomes)
    names = [task.group(ep.example) for ep in episodes]
    if any(name is not None for name in names):
        result.groups = {
            str(name): _counts(task, [ep for ep, n in zip(episodes, names) if n == name], split, control_outcomes)
            for name in dict.fromkeys(names)
        }
    return result


def _counts(
    task, episodes: Sequence[Episode], split: str, control_outcomes: dict[str, list[tuple[Episode, bool]]]
) -> EvalResult:
    result = episodes_result(episodes, split)
    result.followed, result.follow_defined = follow_counts(task, episodes)
    members = {id(ep) for ep in episodes}
    for control, outcomes in control_outcomes.items():
        setattr(result, f"{control}_reflection_fixed", sum(bool(fixed) for ep, fixed in outcomes if id(ep) in members))
    return result


CONTROLS = ("shuffled", "empty")  # evaluation.controls


def control_reflections(episodes: Sequence[Episode], control: str) -> list[tuple[Episode, str]]:
    """The failed episodes, each with the reflection a control retries it with: ``shuffled`` gives each the
    reflection written for the next failure (a cyclic shift: never its own when there are two or more),
    ``empty`` an empty reflection. The reflection's content is what the controls take away."""
    failures = [ep for ep in episodes if ep.reflections]
    if control == "shuffled":
        texts = [ep.reflections[0].text for ep in failures]
        return list(zip(failures, texts[1:] + texts[:1]))
    if control == "empty":
        return [(ep, "") for ep in failures]
    raise ValueError(f"evaluation.controls: unknown control {control!r}; expected some of {CONTROLS}")


def follow_counts(task, episodes: Sequence[Episode]) -> tuple[int, int]:
    """(followed, defined): retries that did what their reflection proposed, of the failures whose
    reflection proposes something the task can read (``Task.reflection_followed``)."""
    verdicts = [
        task.reflection_followed(ep.example, ep.attempt.text, ep.reflections[0].text, ep.retries[0].text)
        for ep in episodes
        if ep.reflections and ep.retries
    ]
    defined = [v for v in verdicts if v is not None]
    return sum(defined), len(defined)


def format_table(results: dict[str, EvalResult]) -> str:
    """Markdown table in the paper's layout: one row per model, first try and after reflection."""
    lines = ["| model | split | n | first try | after reflection | Δ |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.split} | {r.total} | {100 * r.first_try_accuracy:.1f}% ({r.first_try_correct}) "
            f"| {100 * r.after_reflection_accuracy:.1f}% ({r.after_reflection_correct}) "
            f"| {100 * (r.after_reflection_accuracy - r.first_try_accuracy):+.1f} |"
        )
    if any(r.shuffled_reflection_fixed is not None or r.empty_reflection_fixed is not None for r in results.values()):
        lines += [
            "",
            "| model | after reflection | with another example's reflection | with an empty reflection "
            "| retry follows its reflection |",
            "|---|---|---|---|---|",
        ]
        for name, r in results.items():
            lines.append(
                f"| {name} | {_share(r.after_reflection_correct, r.total)} "
                f"| {_share(_plus(r.first_try_correct, r.shuffled_reflection_fixed), r.total)} "
                f"| {_share(_plus(r.first_try_correct, r.empty_reflection_fixed), r.total)} "
                f"| {_share(r.followed, r.follow_defined)} |"
            )
    if any(r.groups for r in results.values()):
        lines += [
            "",
            "| model | category | n | first try | after reflection | Δ "
            "| with another example's reflection | with an empty reflection |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results.items():
            for group, g in (r.groups or {}).items():
                lines.append(
                    f"| {name} | {group} | {g.total} | {100 * g.first_try_accuracy:.1f}% ({g.first_try_correct}) "
                    f"| {100 * g.after_reflection_accuracy:.1f}% ({g.after_reflection_correct}) "
                    f"| {100 * (g.after_reflection_accuracy - g.first_try_accuracy):+.1f} "
                    f"| {_share(_plus(g.first_try_correct, g.shuffled_reflection_fixed), g.total)} "
                    f"| {_share(_plus(g.first_try_correct, g.empty_reflection_fixed), g.total)} |"
                )
    return "\n".join(lines)


def _plus(a: int, b: int | None) -> int | None:
    return None if b is None else a + b


def _share(count: int | None, total: int | None) -> str:
    if count is None or not total:
        return "n/a"
    return f"{100 * count / total:.1f}% ({count}/{total})"


def save_results(
    results: dict[str, EvalResult],
    path: str | Path,
    forgetting: dict | None = None,
    phases: dict[str, float] | None = None,
) -> Path:
    """``results.json``: each evaluated model's counts and accuracies under its label, and, when the
    forgetting check ran, ``forgetting``: lm-eval scores by label and ``difference`` (trained - base);
    ``phases``: the run's wall-clock seconds per phase (``r3exp.timing``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {name: r.to_dict() for name, r in results.items()}
    if forgetting:
        record["forgetting"] = forgetting
    if phases:
        record["phases"] = phases
    path.write_text(json.dumps(record, indent=2))
    return path
