"""GMPO's policy loss (Geometric-Mean Policy Optimization, Zhao et al. 2025), which TRL does not provide.

GRPO averages each token's clipped importance ratio ``ρ_t`` times the sequence's advantage ``A``; GMPO
takes the geometric mean of the ratios over the sequence, so one token with an extreme ratio moves the
sequence's weight far less, and clips each token's ratio in log space to ``[−ε_low, ε_high]`` (0.4
each, the paper's default) — pessimistically for the advantage's sign, as PPO does:

    loss = −mean_i A_i · exp( (1/|o_i|) Σ_t s_i · min(s_i·log ρ_it, s_i·clip(log ρ_it)) ),  s_i = sign(A_i)

Written from the paper's objective (the official verl runs use verl's ``geo_mean`` loss mode).
"""

from __future__ import annotations

import torch

#: GMPO's clipping range in log space, (e^-0.4, e^0.4) for the ratio
GMPO_EPSILON = 0.4


def gmpo_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = GMPO_EPSILON,
    epsilon_high: float = GMPO_EPSILON,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, fraction of tokens clipped)`` of a batch of completions.

    Args:
        per_token_logps, old_per_token_logps: ``(B, T)`` log-probabilities of the sampled tokens under
            the policy being trained and the one that sampled them.
        advantages: ``(B,)`` one advantage per completion (GRPO's group-normalized reward).
        mask: ``(B, T)`` 1 for completion tokens, 0 for padding.
    """
    mask = mask.to(per_token_logps.dtype)
    sign = torch.sign(advantages).unsqueeze(1)
    log_ratio = (per_token_logps - old_per_token_logps).clamp(-20.0, 20.0)  # exp() stays finite
    clipped = log_ratio.clamp(-epsilon_low, epsilon_high)
    pessimistic = sign * torch.minimum(sign * log_ratio, sign * clipped)
    lengths = mask.sum(-1).clamp(min=1.0)
    sequence_ratio = torch.exp((pessimistic * mask).sum(-1) / lengths)
    loss = -(advantages * sequence_ratio).mean()
    was_clipped = ((log_ratio != clipped).to(mask.dtype) * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, was_clipped.detach()
