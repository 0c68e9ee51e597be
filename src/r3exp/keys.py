"""The names that several modules share: the labels of evaluated models and the keys of logged metrics.
Writers and readers (the module, the callbacks, W&B, ``train_metrics.csv``, ``mode=compare``) import
them from here."""

from __future__ import annotations

# evaluated models, in results.json, the printed table, W&B and mode=compare
BASE = "base"
TRAINED = "trained"
WARM_START = "warm_start"
COMPARED = (BASE, TRAINED)


def eval_key(label: str, field: str) -> str:
    """The W&B key of an evaluation figure: ``eval/<label>/<field>``."""
    return f"eval/{label}/{field}"


# rollout metrics (one value per optimizer step, merged over rollouts and ranks)
REWARD_MEAN = "rollout/reward_mean"
RETRY_SUCCESS = "rollout/retry_success"
FIRST_TRY_SUCCESS = "rollout/first_try_success"
REFLECTION_LENGTH = "rollout/reflection_length"
REFLECTIONS_TRUNCATED = "rollout/reflections_truncated"
FRAC_REWARD_ZERO_STD = "rollout/frac_reward_zero_std"
GROUPS = "rollout/groups"
DISTILLED_ROWS = "rollout/distilled_rows"  # r3_grpo_distill: rewarded retries added to attempt groups, per step
SECONDS = "rollout/seconds"
WALL_SECONDS = "rollout/wall_seconds"
GENERATED_TOKENS_PER_SECOND = "rollout/generated_tokens_per_second"
# tokens the engine sampled for the step (attempts, reflections, retries; all ranks): the budget that
# makes R3 and the plain-GRPO baseline comparable (callbacks.sampled_token_budget)
SAMPLED_TOKENS = "rollout/sampled_tokens"
# of the sampled reflections whose proposal the task can read, the share whose retry did what it proposed
FOLLOW_RATE = "rollout/follow_rate"

# training metrics
LOSS = "train/loss"
KL = "train/kl"
CLIP_RATIO_REGION = "train/clip_ratio/region"
SKIPPED = "train/skipped"
LOGPROB_DIFF_MAX = "train/logprob_diff_max"
SYNC_SECONDS = "time/sync_seconds"
