"""PPO's pure helpers against values worked out by hand."""

import math

import pytest
import torch

from workbench.train.ops import (
    KLController, entropy_from_logits, gae, group_advantages, kl_estimate, masked_mean, masked_var, masked_whiten,
    policy_loss, token_logprobs, value_loss,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


MASK = t([1, 1, 1], [1, 1, 0])


def test_masked_mean_var_and_whiten_ignore_padding():
    values = t([1, 2, 3], [4, 5, 99])
    assert masked_mean(values, MASK).item() == pytest.approx(3.0)  # (1+2+3+4+5)/5
    assert masked_mean(values, MASK, dim=1).tolist() == pytest.approx([2.0, 4.5])
    assert masked_var(values, MASK).item() == pytest.approx(2.5)  # sum sq dev 10, / (5-1)
    assert masked_var(values, MASK, unbiased=False).item() == pytest.approx(2.0)
    whitened = masked_whiten(values, MASK)
    assert masked_mean(whitened, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert whitened[0, 0].item() == pytest.approx(-2 / math.sqrt(2.5), rel=1e-5)
    assert whitened[1, 2].item() == 0.0  # padding stays zero


def test_gae_by_hand():
    # One response of 3 tokens, gamma 1, lambda 0.5. Rewards (0, 0, 1), values (0.5, 0.2, 0.4).
    # delta_2 = 1 - 0.4 = 0.6;          A_2 = 0.6
    # delta_1 = 0 + 0.4 - 0.2 = 0.2;    A_1 = 0.2 + 0.5 * 0.6 = 0.5
    # delta_0 = 0 + 0.2 - 0.5 = -0.3;   A_0 = -0.3 + 0.5 * 0.5 = -0.05
    advantages, returns = gae(t([0, 0, 1]), t([0.5, 0.2, 0.4]), t([1, 1, 1]), gamma=1.0, lam=0.5)
    assert advantages[0].tolist() == pytest.approx([-0.05, 0.5, 0.6])
    assert returns[0].tolist() == pytest.approx([0.45, 0.7, 1.0])


def test_gae_stops_at_the_end_of_a_shorter_response():
    # Second row ends after 2 tokens: the padding's value (9) and reward must not leak back.
    advantages, returns = gae(t([0, 1, 0], [0, 1, 5]), t([0, 0, 0], [0, 0, 9]), MASK, gamma=1.0, lam=1.0)
    assert advantages[1].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert advantages[0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert returns[1, 2].item() == 0.0


def test_kl_estimators():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    # k3 = (r - 1) - log r with r = 0.25 / 0.5 = 0.5: -0.5 + log 2
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2))
    assert kl_estimate(ref, logp, "k3").item() >= 0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k9")


def test_clipped_policy_loss_by_hand():
    # Token 1: ratio e^0.5 = 1.6487, A = +1: clipped at 1.2 -> loss -1.2 (clipped)
    # Token 2: ratio e^-0.5 = 0.6065, A = +1: min(0.6065, 0.8) = 0.6065 -> loss -0.6065 (not clipped)
    # Token 3: ratio 1, A = -2 -> loss 2
    new, old = t([0.5, -0.5, 0.0]), t([0.0, 0.0, 0.0])
    loss, clipfrac, approx_kl = policy_loss(new, old, t([1.0, 1.0, -2.0]), t([1, 1, 1]), clip=0.2)
    assert loss.item() == pytest.approx((-1.2 - math.exp(-0.5) + 2.0) / 3, rel=1e-5)
    assert clipfrac.item() == pytest.approx(1 / 3)
    k3 = [math.expm1(x) - x for x in (0.5, -0.5, 0.0)]  # KL(old || new) from old samples, r = p_new / p_old
    assert approx_kl.item() == pytest.approx(sum(k3) / 3, rel=1e-5)


def test_padding_with_extreme_log_probs_cannot_turn_the_statistics_into_nan():
    """After EOS the rows hold padding, scored by both models; a log ratio of -200 there must
    not overflow exp() into inf, which the mask's 0 would turn into NaN."""
    logp, ref, mask = t([-1.0, -250.0, -50.0]), t([-1.5, -50.0, -250.0]), t([1, 0, 0])
    assert torch.isfinite(kl_estimate(logp, ref, "k3", mask) * mask).all()
    assert kl_estimate(logp, ref, "k3", mask)[0, 1].item() == 0.0
    loss, clipfrac, approx_kl = policy_loss(logp, ref, t([1.0, 1.0, 1.0]), mask)
    assert all(torch.isfinite(x) for x in (loss, clipfrac, approx_kl))
    assert loss.item() == pytest.approx(-min(math.exp(0.5), 1.2))


def test_clipped_value_loss_by_hand():
    # old 0, new 1, return 1: clipped value 0.2 -> errors 0 (new) vs 0.64 (clipped): take 0.64
    # old 0, new 0.1, return 0: errors 0.01 vs 0.01: equal, not counted as clipped
    loss, clipfrac = value_loss(t([1.0, 0.1]), t([0.0, 0.0]), t([1.0, 0.0]), t([1, 1]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.01) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_token_logprobs_and_entropy_match_the_full_softmax():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 11)
    tokens = torch.randint(0, 11, (5, 4))
    full = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tokens, chunk_rows=2), full, atol=1e-6)
    uniform = torch.zeros(1, 1, 8)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(8))


def test_the_temperature_divides_bf16_logits_in_fp32_as_sampling_does():
    """generate() casts the logits to fp32 before dividing by the temperature; a division in
    bf16 would round each logit again (up to about 0.04 at a logit of 20)."""
    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 50) * 10).bfloat16()
    tokens = torch.randint(0, 50, (3, 4))
    sampled_from = torch.log_softmax(logits.float() / 0.7, -1)
    expected = sampled_from.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tokens, temperature=0.7), expected, atol=1e-6)
    rounded_twice = torch.log_softmax((logits / 0.7).float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert not torch.allclose(rounded_twice, expected, atol=1e-3)
    entropy = -(sampled_from.exp() * sampled_from).sum(-1)
    assert torch.allclose(entropy_from_logits(logits, temperature=0.7), entropy, atol=1e-5)


def test_adaptive_kl_controller_moves_towards_the_target_and_fixed_stays():
    controller = KLController(value=0.1, target=6.0, horizon=100)
    controller.update(current_kl=12.0, n_samples=10)  # error clipped to +0.2: x (1 + 0.2 * 10 / 100)
    assert controller.value == pytest.approx(0.1 * 1.02)
    controller.update(current_kl=3.0, n_samples=10)  # error -0.2 (clipped from -0.5)
    assert controller.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = KLController(value=0.1, target=None)
    fixed.update(50.0, 10)
    assert fixed.value == 0.1


def test_rloo_advantage_is_the_reward_minus_the_mean_of_the_others_by_hand():
    # Two prompts, three answers each: [1, 2, 6] and [0, 0, 3].
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    advantages = group_advantages(rewards, 3, "rloo")
    # 1 - (2+6)/2 = -3; 2 - (1+6)/2 = -1.5; 6 - (1+2)/2 = 4.5; 0 - 1.5; 0 - 1.5; 3 - 0
    assert advantages.tolist() == pytest.approx([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    # Each group's advantages sum to zero: the baseline is unbiased and removes the prompt's level.
    assert advantages.reshape(2, 3).sum(1).tolist() == pytest.approx([0.0, 0.0])


def test_grpo_advantage_is_the_group_standardised_reward_by_hand():
    rewards = torch.tensor([1.0, 2.0, 6.0, 5.0, 5.0, 5.0])
    advantages = group_advantages(rewards, 3, "grpo")
    # Group 1: mean 3, unbiased std sqrt(((-2)^2 + (-1)^2 + 3^2) / 2) = sqrt(7).
    std = 7 ** 0.5
    assert advantages[:3].tolist() == pytest.approx([-2 / (std + 1e-4), -1 / (std + 1e-4), 3 / (std + 1e-4)])
    # Group 2 all scored alike: no signal, and no division by zero.
    assert advantages[3:].tolist() == [0.0, 0.0, 0.0]


def test_group_advantages_refuse_groups_that_do_not_fill_the_batch():
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), 2, "rloo")
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([1.0, 2.0]), 1, "grpo")
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([1.0, 2.0]), 2, "gae")
