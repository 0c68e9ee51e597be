"""GRPO math against hand-computed numbers (derivations in the comments)."""

import math

import pytest
import torch

from r3exp.grpo import functions as F


def test_group_advantages_group_scaling():
    # group 0: rewards 1,0,0,1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    # group 1: all 1 -> centred 0, std 0 -> advantage 0 (no signal)
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = F.group_advantages(rewards, groups, "group", eps=1e-4)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert torch.allclose(adv, torch.tensor([expected, -expected, -expected, expected, 0, 0, 0, 0]))


def test_group_advantages_batch_and_none_scaling():
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    centred = torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert torch.allclose(F.group_advantages(rewards, groups, "none"), centred)
    # batch std: mean 0.75; squared deviations 6 * 0.0625 + 2 * 0.5625 = 1.5; / 7 -> std 0.4629
    batch_std = math.sqrt(1.5 / 7)
    assert torch.allclose(F.group_advantages(rewards, groups, "batch", eps=1e-4), centred / (batch_std + 1e-4))


def test_group_advantages_match_a_loop_for_uneven_interleaved_groups():
    torch.manual_seed(0)
    rewards = torch.randint(0, 2, (23,)).float()
    groups = torch.randint(0, 5, (23,)) * 7  # non-contiguous ids, uneven sizes
    adv = F.group_advantages(rewards, groups, "group")
    for g in groups.unique():
        members = rewards[groups == g]
        std = members.std() if len(members) > 1 else torch.tensor(0.0)
        assert torch.allclose(adv[groups == g], (members - members.mean()) / (std + 1e-4), atol=1e-6)


def test_pooled_std_of_moments_equals_torch_std():
    values = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    moments = (len(values), values.sum().item(), (values**2).sum().item())
    assert F.pooled_std(*moments) == pytest.approx(values.std().item(), rel=1e-6)
    assert F.pooled_std(1, 1.0, 1.0) == 0.0
    adv = F.group_advantages(values, torch.zeros(7, dtype=torch.long), "batch", batch_std=F.pooled_std(*moments))
    assert torch.allclose(adv, F.group_advantages(values, torch.zeros(7, dtype=torch.long), "batch"))


def test_unknown_scale_rewards_names_the_options():
    with pytest.raises(ValueError, match="group"):
        F.group_advantages(torch.ones(2), torch.zeros(2, dtype=torch.long), "per_token")


def test_reward_std_is_zero():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert F.reward_std_is_zero(rewards, groups).tolist() == [True, False, True]


def test_token_logprobs_with_temperature():
    # logits [0, ln 3]: p = [1/4, 3/4]. With temperature 2: [0, ln3 / 2] -> p0 = 1 / (1 + sqrt 3)
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)]]])
    tokens = torch.tensor([[1, 0]])
    assert torch.allclose(F.token_logprobs(logits, tokens), torch.tensor([[math.log(0.75), math.log(0.25)]]))
    assert torch.allclose(
        F.token_logprobs(logits, tokens[:, 1:2].expand(1, 2), 2.0)[0, 0], torch.tensor(-math.log(1 + math.sqrt(3)))
    )


def test_clipped_surrogate_hand_values_and_clip_gradients():
    mask = torch.ones(1, 3, dtype=torch.bool)
    # ratios 1.5, 0.5, 1.1 against a zero behaviour log-prob
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_(True)
    behaviour = torch.zeros(1, 3)
    loss, ratio = F.clipped_surrogate(lp, behaviour, torch.tensor([1.0]), mask, 0.2, 0.28)
    # A=+1: rho=1.5 -> min(1.5, 1.28) = 1.28; rho=0.5 -> min(0.5, 0.8) = 0.5; rho=1.1 -> 1.1
    assert torch.allclose(loss, -torch.tensor([[1.28, 0.5, 1.1]]))
    loss.sum().backward()
    # clipped (constant) at rho=1.5; d(-rho)/d lp = -rho elsewhere
    assert torch.allclose(lp.grad, torch.tensor([[0.0, -0.5, -1.1]]))
    loss_neg, _ = F.clipped_surrogate(lp.detach(), behaviour, torch.tensor([-1.0]), mask, 0.2, 0.28)
    # A=-1: rho=1.5 -> min(-1.5, -1.28) = -1.5; rho=0.5 -> min(-0.5, -0.8) = -0.8; 1.1 -> -1.1
    assert torch.allclose(loss_neg, torch.tensor([[1.5, 0.8, 1.1]]))


def test_kl_k3():
    # d = ref - lp = ln 2: exp(d) - d - 1 = 1 - ln 2; zero where masked out, zero when equal
    lp = torch.tensor([[0.0, 0.0, -1.0]])
    ref = torch.tensor([[math.log(2), math.log(2), -1.0]])
    mask = torch.tensor([[True, False, True]])
    assert torch.allclose(F.kl_k3(lp, ref, mask), torch.tensor([[1 - math.log(2), 0.0, 0.0]]))


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[True, True, False], [True, False, False]])


SIZE = F.StepSize.of(MASK)  # 2 rows, 3 reflection tokens


def test_aggregation_grpo_per_sequence_mean():
    assert SIZE == F.StepSize(rows=2, tokens=3)
    assert F.aggregate_grpo(PER_TOKEN, MASK, SIZE, 1).item() == pytest.approx((1.5 + 4.0) / 2)  # (1+2)/2, 4/1
    # one micro-batch of a 5-row step: its share is the sum of its row means over all 5 rows
    assert F.aggregate_grpo(PER_TOKEN, MASK, F.StepSize(5, 9), 1).item() == pytest.approx((1.5 + 4.0) / 5)


def test_aggregation_dr_grpo_constant_normaliser():
    assert F.aggregate_dr_grpo(PER_TOKEN, MASK, SIZE, max_tokens=4).item() == pytest.approx(7 / (2 * 4))
    assert F.aggregate_dr_grpo(PER_TOKEN, MASK, F.StepSize(5, 9), max_tokens=4).item() == pytest.approx(7 / (5 * 4))


def test_aggregation_dapo_token_mean_and_global_normaliser():
    assert F.aggregate_dapo(PER_TOKEN, MASK, SIZE, 1).item() == pytest.approx(7 / 3)
    assert F.aggregate_dapo(PER_TOKEN, MASK, F.StepSize(rows=9, tokens=7), 1).item() == pytest.approx(1.0)


def test_merge_metrics_weights_means_by_tokens_and_takes_maxima():
    # micro-batch 1: 3 tokens, ratio mean 1.0; micro-batch 2: 1 token, ratio mean 2.0 -> (3 + 2) / 4
    merged = F.merge_metrics(
        [({"ratio_mean": 1.0, "logprob_diff_max": 0.1}, 3.0), ({"ratio_mean": 2.0, "logprob_diff_max": 0.3}, 1.0)]
    )
    assert merged == {"ratio_mean": pytest.approx(1.25), "logprob_diff_max": 0.3}


def test_grpo_loss_on_policy_equals_minus_mean_advantage():
    # on-policy (ratio 1): per-token loss is -A; grpo: mean over sequences of -A
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    adv = torch.tensor([1.0, -0.5])
    loss, metrics = F.grpo_loss(lp, lp.clone(), adv, MASK, epsilon=0.2, epsilon_high=0.2, loss_type="grpo")
    assert loss.item() == pytest.approx(-(1.0 - 0.5) / 2)
    assert metrics["clip_ratio/region"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)
    loss, _ = F.grpo_loss(lp, lp.clone(), adv, MASK, epsilon=0.2, epsilon_high=0.2, loss_type="dapo")
    assert loss.item() == pytest.approx((-1 - 1 + 0.5) / 3)


def test_grpo_loss_kl_term_and_clip_metrics():
    lp = torch.zeros(1, 2)
    behaviour = torch.log(torch.tensor([[1 / 1.5, 1.0]]))  # ratio 1.5 at token 0, 1 at token 1
    ref = torch.tensor([[math.log(2), 0.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, metrics = F.grpo_loss(
        lp,
        behaviour,
        torch.tensor([2.0]),
        mask,
        epsilon=0.2,
        epsilon_high=0.2,
        loss_type="dapo",
        beta=0.1,
        ref_logprobs=ref,
    )
    # tokens: -min(1.5*2, 1.2*2) = -2.4 and -2; kl: 1 - ln 2 and 0
    expected = (-2.4 - 2.0 + 0.1 * (1 - math.log(2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["clip_ratio/high"] == pytest.approx(0.5) and metrics["clip_ratio/low"] == 0.0
    assert metrics["kl"] == pytest.approx((1 - math.log(2)) / 2, rel=1e-5)


def test_unknown_loss_type_lists_valid_ones():
    with pytest.raises(ValueError, match="dapo"):
        F.grpo_loss(
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.zeros(1),
            torch.ones(1, 1, dtype=torch.bool),
            epsilon=0.2,
            epsilon_high=0.2,
            loss_type="ppo",
        )


@pytest.mark.parametrize("loss_type", sorted(F.AGGREGATIONS))
def test_gradients_at_non_reflection_positions_are_exactly_zero(loss_type):
    """Logits at every position whose next token is not a reflection token get exactly zero gradient."""
    torch.manual_seed(0)
    N, T, V = 3, 9, 11
    logits = (torch.randn(N, T, V) * 5).requires_grad_(True)
    input_ids = torch.randint(0, V, (N, T))
    reflection = torch.zeros(N, T, dtype=torch.bool)
    reflection[0, 4:7] = True  # context 0-3, reflection 4-6 (EOS at 6), padding 7-8
    reflection[1, 2:9] = True
    reflection[2, 5:6] = True
    mask = reflection[:, 1:]
    lp = F.token_logprobs(logits[:, :-1], input_ids[:, 1:])
    behaviour = torch.where(mask, lp.detach() + 0.3 * torch.randn(N, T - 1), torch.full((N, T - 1), -50.0))
    ref = lp.detach() + torch.randn(N, T - 1) * 3
    loss, _ = F.grpo_loss(
        lp,
        behaviour,
        torch.tensor([1.0, -2.0, 0.5]),
        mask,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type=loss_type,
        beta=0.05,
        ref_logprobs=ref,
        max_tokens=8,
    )
    loss.backward()
    predicts_reflection = torch.zeros(N, T, dtype=torch.bool)
    predicts_reflection[:, :-1] = mask
    assert torch.all(logits.grad[~predicts_reflection] == 0)
    assert torch.all(logits.grad[predicts_reflection].abs().sum(-1) > 0)


def test_importance_weights_truncate_mask_or_leave_the_engine_trainer_ratio():
    # ratios pi_trainer / pi_engine on the masked tokens: 1, 3, 0.25, 1.5; the last position is off-mask
    trainer = torch.log(torch.tensor([[1.0, 3.0, 0.25], [1.5, 0.1, 0.1]]))
    engine = torch.zeros(2, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    weights, metrics = F.importance_weights(trainer, engine, mask, "truncate", cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 2.0, 0.25], [1.5, 1.0, 1.0]]))
    assert metrics["correction_share"] == pytest.approx(1 / 4)  # only the 3 was truncated
    assert metrics["engine_gap_mean"] == pytest.approx((0 + math.log(3) + math.log(4) + math.log(1.5)) / 4)
    assert metrics["engine_gap_max"] == pytest.approx(math.log(4))  # |log 0.25|; off-mask 0.1 ignored
    assert metrics["engine_ratio_min"] == pytest.approx(0.25) and metrics["engine_ratio_max"] == pytest.approx(3.0)
    weights, metrics = F.importance_weights(trainer, engine, mask, "mask", cap=2.0, low=0.5)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0, 0.0], [1.5, 1.0, 1.0]]))  # 3 and 0.25 leave
    assert metrics["correction_share"] == pytest.approx(2 / 4)
    weights, metrics = F.importance_weights(trainer, engine, mask, "none")
    assert torch.equal(weights, torch.ones(2, 3)) and metrics["correction_share"] == 0.0
    with pytest.raises(ValueError, match="correction='clip'"):
        F.importance_weights(trainer, engine, mask, "clip")


def test_importance_weights_scale_the_policy_gradient_term_and_not_the_kl():
    # on-policy ratio 1, advantage 1: per-token surrogate -1; weights 2 and 0.5 -> dapo mean (-2 - 0.5) / 2
    lp = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    weights = torch.tensor([[2.0, 0.5]])
    loss, _ = F.grpo_loss(
        lp, lp.clone(), torch.tensor([1.0]), mask, epsilon=0.2, epsilon_high=0.2, loss_type="dapo", is_weights=weights
    )
    assert loss.item() == pytest.approx(-1.25)
    # with beta: the k3 KL of ref = lp - 1 on each token is e^-1 + 1 - 1 = e^-1, added unweighted
    loss, _ = F.grpo_loss(
        lp,
        lp.clone(),
        torch.tensor([1.0]),
        mask,
        epsilon=0.2,
        epsilon_high=0.2,
        loss_type="dapo",
        is_weights=weights,
        beta=0.1,
        ref_logprobs=lp - 1.0,
    )
    assert loss.item() == pytest.approx(-1.25 + 0.1 * math.exp(-1))


def test_merge_metrics_takes_minima_and_ignores_extremes_of_empty_micro_batches():
    merged = F.merge_metrics(
        [
            ({"ratio_min": 0.9, "ratio_max": 1.1}, 3.0),
            ({"ratio_min": 1.0, "ratio_max": 1.0}, 0.0),
            ({"ratio_min": 0.95, "ratio_max": 1.05}, 1.0),
        ]
    )
    assert merged == {"ratio_min": 0.9, "ratio_max": 1.1}
