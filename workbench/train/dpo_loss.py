"""The losses of direct preference optimisation, on summed response log-probs of pairs.

With h the policy's log-ratio margin over the reference,
h = (log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) - log π_ref(y_r|x)):

- sigmoid (DPO, Rafailov et al. 2023): -log σ(β h); with label smoothing ε (the conservative
  DPO of Mitchell 2023, TRL's `label_smoothing`): -(1 - ε) log σ(β h) - ε log σ(-β h);
- ipo (Azar et al. 2023): (h - 1 / (2β))², on log-probs averaged over each reply's tokens, as
  TRL computes it;
- simpo (Meng et al. 2024): no reference; -log σ(β (ā_c - ā_r) - γ), where ā is a reply's
  log-prob averaged over its tokens and γ the target margin (label smoothing as for sigmoid).

The implicit rewards are what the policy's log-ratios say of each reply: β (log π - log π_ref)
(per token for ipo), and for simpo β ā. Their mean, margin and accuracy are logged under TRL's
names (`rewards/chosen`, `rewards/margins`, ...), so users read our curves as they read TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass

LOSS_TYPES = ("sigmoid", "ipo", "simpo")


@dataclass
class PairLogprobs:
    """Summed reply log-probs [pairs] of the policy and the reference, and reply lengths."""

    chosen: object
    rejected: object
    ref_chosen: object | None      # None for simpo, which has no reference
    ref_rejected: object | None
    chosen_tokens: object
    rejected_tokens: object


def preference_loss(lp: PairLogprobs, loss_type: str, beta: float, label_smoothing: float = 0.0,
                    simpo_gamma: float = 0.5):
    """(per-pair losses, chosen rewards, rejected rewards), each [pairs]; rewards carry no gradient."""
    import torch.nn.functional as F

    if loss_type == "simpo":
        chosen, rejected = lp.chosen / lp.chosen_tokens, lp.rejected / lp.rejected_tokens
        logits = beta * (chosen - rejected) - simpo_gamma
        losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
        return losses, (beta * chosen).detach(), (beta * rejected).detach()
    chosen_ratio, rejected_ratio = lp.chosen - lp.ref_chosen, lp.rejected - lp.ref_rejected
    if loss_type == "ipo":
        chosen_ratio, rejected_ratio = chosen_ratio / lp.chosen_tokens, rejected_ratio / lp.rejected_tokens
        losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    elif loss_type == "sigmoid":
        logits = beta * (chosen_ratio - rejected_ratio)
        losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    else:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}")
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def pair_metrics(losses, chosen_rewards, rejected_rewards, lp: PairLogprobs) -> dict[str, float]:
    """TRL's statistics of a batch of pairs (means over its pairs)."""
    return {"rewards/chosen": float(chosen_rewards.mean()), "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
            "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
            "logps/chosen": float(lp.chosen.detach().mean()), "logps/rejected": float(lp.rejected.detach().mean())}
