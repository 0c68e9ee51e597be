import pytest
import torch

from r3exp.rollout.batching import build_batch, reflection_mask
from r3exp.rollout.engines import Completion
from r3exp.rollout.episodes import Episode

EOS = 99


def episode(context, reflections, rewards, version=3, solved=False):
    ep = Episode({"id": 0}, Completion([1], [0.0], "attempt", True), solved, policy_version=version)
    if not solved:
        ep.reflection_prompt_ids = context
        ep.reflections = [
            Completion(r, [-0.1 * (i + 1) for i in range(len(r))], "r", r[-1] == EOS) for r in reflections
        ]
        ep.retries = [Completion([7], [0.0], "retry", True) for _ in reflections]
        ep.rewards = rewards
    return ep


def test_reflection_mask_selects_exactly_the_reflection_tokens():
    mask = reflection_mask(torch.tensor([2, 3]), torch.tensor([3, 1]), 6)
    assert mask.int().tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 0, 0]]


def test_build_batch_rows_masks_and_groups():
    episodes = [
        episode([10, 11, 12], [[20, 21, EOS], [22, EOS]], [1.0, 0.0]),
        episode([], [], [], solved=True),  # a first-try success contributes no rows
        episode([30, 31], [[40, 41, 42, 43], [44, EOS]], [0.0, 0.0]),  # first reflection truncated
    ]
    batch = build_batch(episodes, pad_id=0)
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, 20, 21, EOS],
        [10, 11, 12, 22, EOS, 0],
        [30, 31, 40, 41, 42, 43],
        [30, 31, 44, EOS, 0, 0],
    ]
    assert batch["reflection_mask"].int().tolist() == [
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 0, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0], [1] * 6, [1] * 4 + [0, 0]]
    assert batch["rewards"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert batch["group_ids"].tolist() == [0, 0, 1, 1]
    assert batch["policy_version"].tolist() == [3, 3, 3, 3]
    # behaviour log-probs sit at the reflection tokens' own positions, zero elsewhere
    assert torch.allclose(batch["behaviour_logprobs"][1], torch.tensor([0, 0, 0, -0.1, -0.2, 0]))


def test_build_batch_without_failures_is_empty():
    batch = build_batch([episode([], [], [], solved=True)], pad_id=0)
    assert batch["input_ids"].shape == (0, 0) and batch["rewards"].numel() == 0


def test_sampled_tokens_add_up_over_rollouts_and_ranks_and_undefined_rates_are_skipped():
    import math

    from r3exp import keys
    from r3exp.grpo.step_metrics import merge_rank_rollout_stats, merge_rollout_stats

    def stats(tokens, follow, seconds):
        return {
            keys.SAMPLED_TOKENS: tokens,
            keys.FOLLOW_RATE: follow,
            keys.REWARD_MEAN: 0.5,
            keys.SECONDS: seconds,
            keys.GROUPS: 2.0,
        }

    rollouts = merge_rollout_stats([stats(100, 0.5, 1.0), stats(50, math.nan, 2.0)])
    assert rollouts[keys.SAMPLED_TOKENS] == 150 and rollouts[keys.FOLLOW_RATE] == 0.5 and rollouts[keys.SECONDS] == 3.0
    ranks = merge_rank_rollout_stats([stats(100, 0.2, 1.0), stats(60, 0.4, 2.0)])
    assert ranks[keys.SAMPLED_TOKENS] == 160 and ranks[keys.FOLLOW_RATE] == pytest.approx(0.3)
    assert ranks[keys.SECONDS] == 2.0 and ranks[keys.GROUPS] == 4.0 and ranks[keys.REWARD_MEAN] == 0.5
    assert math.isnan(merge_rank_rollout_stats([stats(1, math.nan, 1.0), stats(1, math.nan, 1.0)])[keys.FOLLOW_RATE])
