"""A training budget in sampled tokens, the currency in which R3 and the plain-GRPO baseline are compared:
an R3 step samples a first attempt per example and G reflections and G retries per failure, a GRPO step G
attempts per example, so equal steps are not equal work. Both stop once the engine has sampled
``max_sampled_tokens`` (counted over every rank, from the steps' ``rollout/sampled_tokens``)."""

from __future__ import annotations

import logging

import lightning as L

from r3exp import keys
from r3exp.errors import ConfigError

log = logging.getLogger(__name__)


class SampledTokenBudget(L.Callback):
    """Stops training after the step at which the tokens sampled for training reach ``max_sampled_tokens``
    (``None``: no budget; ``trainer.max_steps`` still applies). The count is saved in checkpoints, so a
    resumed run spends what is left. ``sampled_tokens`` is the count so far."""

    def __init__(self, max_sampled_tokens: int | None = None):
        if max_sampled_tokens is not None and max_sampled_tokens <= 0:
            raise ConfigError(
                f"callbacks.sampled_token_budget.max_sampled_tokens={max_sampled_tokens}: "
                "expected a positive number of tokens, or null for no budget"
            )
        self.max_sampled_tokens = max_sampled_tokens
        self.sampled_tokens = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        record = module.last_step  # r3exp.records.StepRecord
        if record.drew_rollout:
            self.sampled_tokens += int(record.rollout_stats.get(keys.SAMPLED_TOKENS, 0))
        if (
            self.max_sampled_tokens is not None
            and self.sampled_tokens >= self.max_sampled_tokens
            and record.finished_rollout
            and not trainer.should_stop
        ):
            log.info(
                "sampled-token budget spent: %d of %d tokens after %d steps",
                self.sampled_tokens,
                self.max_sampled_tokens,
                trainer.global_step,
            )
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"sampled_tokens": self.sampled_tokens}

    def load_state_dict(self, state_dict: dict) -> None:
        self.sampled_tokens = int(state_dict["sampled_tokens"])
