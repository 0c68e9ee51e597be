"""Records that one part of r3exp writes and others read: the :class:`StepRecord` the training step
publishes once per optimizer step (the callbacks read it and never write module state), and the
:class:`EpisodeRecord` of an evaluation episode (the JSONL files, W&B, the analyses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from r3exp import keys


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step, as the module saw it (``module.last_step`` after each ``training_step``).

    Attributes:
        step: the optimizer step (the global step before it).
        rollout_step: the policy version that generated the rollouts this step trained on.
        drew_rollout: this step drew them (the first of ``mu`` steps on one set of rollouts).
        finished_rollout: this step was the last of the ``mu`` steps on them.
        rollouts: the rollouts (``r3exp.rollout.batching.Rollout``: tensors, episodes, metrics) as drawn.
        advantages: the advantage of each row of each rollout (for sample tables).
        rollout_stats: their metrics (``rollout/...``), merged over rollouts and ranks.
        metrics: everything logged since the rollouts were drawn (the step's metrics over ``mu`` steps).
        sync_seconds: the weight push to the engine before this step's rollouts (0 when none).
        trained_tokens: attended tokens that went through the forward, over every rank.
        phase_seconds: this rank's seconds in the trainer's parts of the step: ``trainer_logprobs`` (the
            no-grad pass of ``grpo.loss.behaviour=trainer`` or a correction), ``reference_logprobs``,
            ``forward_backward``, ``optimizer`` (clipping and the update); a part that did not run is absent.
    """

    step: int
    rollout_step: int
    drew_rollout: bool
    finished_rollout: bool
    rollouts: list = field(repr=False)
    advantages: list = field(repr=False)
    rollout_stats: dict[str, float]
    metrics: dict[str, float]
    sync_seconds: float
    trained_tokens: int
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def generation_seconds(self) -> float:
        """Wall time of this step's generation (0 on the steps that reuse rollouts)."""
        return self.rollout_stats.get(keys.WALL_SECONDS, 0.0) if self.drew_rollout else 0.0


class EpisodeRecord(TypedDict):
    """One evaluation episode as a flat record: a line of ``eval_<label>_episodes.jsonl`` and a row of the
    W&B evaluation samples. Written by :func:`episode_record`; read by the analyses and the notebook."""

    example: dict
    task_prompt: str
    first_attempt: str
    first_try_success: bool
    reflection: str | None  # the first reflection (None when the first attempt succeeded)
    retry: str | None
    retry_success: bool | None


EPISODE_FIELDS = tuple(EpisodeRecord.__annotations__)


def episode_record(task_prompt: str, episode) -> EpisodeRecord:
    """The record of an ``r3exp.rollout.episodes.Episode`` whose task prompt is ``task_prompt``."""
    return EpisodeRecord(
        example=episode.example,
        task_prompt=task_prompt,
        first_attempt=episode.attempt.text,
        first_try_success=episode.first_try_success,
        reflection=episode.reflections[0].text if episode.reflections else None,
        retry=episode.retries[0].text if episode.retries else None,
        retry_success=episode.retry_successes[0] if episode.retry_successes else None,
    )
