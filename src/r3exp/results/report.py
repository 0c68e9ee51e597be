"""The comparison as a W&B Report (``wandb-workspaces`` reports API): the table, reward and reflection
length curves of the compared runs' W&B group, and their reflection samples.

Offline the report is built all the same and written as JSON next to the comparison
(``report.json``); publishing needs a network and ``WANDB_API_KEY`` (``compare.publish=true``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from r3exp import keys


class ReportUnavailable(RuntimeError):
    """Publishing a report needs W&B online (network and API key)."""


def build_report(title: str, table_markdown: str, entity: str | None, project: str, groups: list[str]):
    """A ``wandb_workspaces.reports.v2.Report`` with the comparison table and the runs' panels."""
    import wandb_workspaces.reports.v2 as wr  # noqa: PLC0415 - wandb-workspaces is optional (r3exp[reports])

    runset = wr.Runset(
        entity=entity or "",
        project=project,
        name="compared runs",
        filters=" or ".join(f"group == '{g}'" for g in groups) if groups else "",
    )
    return wr.Report(
        entity=entity or "",
        project=project,
        title=title,
        description="R3 (Reflect, Retry, Reward): base vs trained, first try vs after one reflection.",
        blocks=[
            wr.H1(text="Accuracy"),
            wr.MarkdownBlock(text=table_markdown),
            wr.H1(text="Training"),
            wr.PanelGrid(
                runsets=[runset],
                panels=[
                    wr.LinePlot(title="Reward of reflections", x="trainer/global_step", y=[keys.REWARD_MEAN]),
                    wr.LinePlot(title="Reflection length", x="trainer/global_step", y=[keys.REFLECTION_LENGTH]),
                    wr.LinePlot(
                        title="First-try success in rollouts", x="trainer/global_step", y=[keys.FIRST_TRY_SUCCESS]
                    ),
                ],
            ),
            wr.H1(text="Reflection samples"),
            wr.PanelGrid(runsets=[runset], panels=[wr.WeavePanelSummaryTable(table_name="reflection_samples")]),
            wr.H1(text="Evaluation"),
            wr.PanelGrid(runsets=[runset], panels=[wr.WeavePanelSummaryTable(table_name="evaluation")]),
        ],
    )


def write_report(report, path: str | Path) -> Path:
    """The report's definition as JSON (what ``report.save()`` would send)."""
    path = Path(path)
    # wandb-workspaces has no public serialiser; _to_model() is what Report.save() uploads
    path.write_text(json.dumps(report._to_model().model_dump(by_alias=True, mode="json"), indent=2))
    return path


def publish_report(report) -> str:
    """Save the report to W&B and return its URL; raises :class:`ReportUnavailable` offline."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or not os.environ.get("WANDB_API_KEY"):
        raise ReportUnavailable(
            "publishing a W&B report needs a network and WANDB_API_KEY (run `wandb login`, "
            "unset WANDB_MODE=offline); the report was written locally as report.json"
        )
    report.save()
    return report.url
