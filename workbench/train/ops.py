"""Pure tensor helpers of the online loop (PPO: Ziegler et al. 2019, InstructGPT; RLOO and GRPO's
group baselines), each tested on hand-computed values.

Shapes: `[batch, T]` over response tokens, with `mask` 1 on real response tokens and 0 on the
padding after them (responses are right-padded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def masked_mean(values, mask, dim=None):
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values, mask, unbiased: bool = True):
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values, mask, shift_mean: bool = True, eps: float = 1e-8):
    """Zero mean (unless shift_mean is False), unit variance over the masked entries."""
    import torch

    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    """Generalised advantage estimates and returns (advantages + values), right to left; the
    value after a response's last token is 0 (the episode ends there)."""
    import torch

    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < length else 0)
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def group_advantages(rewards, group_size: int, kind: str, eps: float = 1e-4):
    """Critic-free advantages of sequence rewards `[batch]` laid out as consecutive groups of
    `group_size` answers to the same prompt. rloo (Ahmadian et al. 2024): each answer's reward
    minus the mean of the other answers in its group. grpo (Shao et al. 2024): the reward minus
    the group mean, divided by the group's standard deviation (unbiased) + eps; a group whose
    answers all score the same gives zero advantage, not a division by zero."""
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError("a group baseline needs groups of two or more answers that fill the batch")
    groups = rewards.reshape(-1, group_size)
    mean = groups.mean(1, keepdim=True)
    if kind == "rloo":
        leave_one_out = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
        return (groups - leave_one_out).reshape(-1)
    if kind == "grpo":
        return ((groups - mean) / (groups.std(1, keepdim=True) + eps)).reshape(-1)
    raise ValueError(f"unknown group advantage {kind!r}: use rloo or grpo")


def kl_estimate(logprobs, ref_logprobs, kind: str = "k1", mask=None):
    """Per-token KL(policy || reference) from sampled tokens: k1 = log ratio (unbiased, can be
    negative per token); k3 = (r - 1) - log r with r = p_ref / p_policy (unbiased, never negative).
    Zero where `mask` is 0: padding after EOS is scored by both models too, and one extreme
    log ratio there (below -88) would overflow k3 to inf, and inf * 0 is NaN."""
    import torch

    log_ratio = logprobs - ref_logprobs
    if mask is not None:
        log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; use k1 or k3")


def policy_loss(logprobs, old_logprobs, advantages, mask, clip: float = 0.2):
    """Clipped surrogate objective (as a loss to minimise), the share of clipped tokens, and the
    approximate KL(old || new) for the plot: k3 = (r - 1) - log r with r = p_new / p_old, unbiased
    for tokens sampled from the old policy."""
    import torch

    # Padding is left out before exp(): an overflow there would turn the masked means into NaN.
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(values, old_values, returns, mask, clip: float = 0.2):
    """Clipped value loss (0.5 * the larger squared error) and the share of clipped tokens."""
    import torch

    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clipfrac


def scaled(logits, temperature: float):
    """`logits` in fp32 divided by `temperature` (no copy of fp32 logits at temperature 1)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs(logits, tokens, chunk_rows: int = 8, temperature: float = 1.0):
    """log p(token) under `logits` / `temperature` ([rows, T, vocab] -> [rows, T]), a few rows at
    a time, so the full-vocabulary fp32 log-softmax never exists for the whole batch at once.
    bf16 logits are divided after the cast to fp32, as generate() does before it samples."""
    import torch

    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = scaled(logits[start:start + chunk_rows], temperature)
        picked = torch.gather(chunk, -1, tokens[start:start + chunk_rows].unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.cat(out)


def entropy_from_logits(logits, chunk_rows: int = 8, temperature: float = 1.0):
    """Entropy of each position's next-token distribution (of `logits` / `temperature`), a few rows at a time."""
    import torch

    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = scaled(logits[start:start + chunk_rows], temperature)
        log_p = torch.log_softmax(chunk, dim=-1)
        out.append(-(log_p.exp() * log_p).sum(-1))
    return torch.cat(out)


@dataclass
class KLController:
    """The KL coefficient beta. Adaptive (Ziegler et al. 2019): after each step, beta is scaled
    by 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon, pulling the KL towards the target.
    With target 0 (or None) it stays fixed."""

    value: float = 0.05
    target: float | None = 6.0
    horizon: float = 10_000.0

    def update(self, current_kl: float, n_samples: int) -> None:
        if not self.target or not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon

    def state(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}
