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
from trl import GRPOTrainer

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


class GMPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with :func:`gmpo_loss` in place of its per-token loss: rollouts, rewards and
    the group-normalized advantages are TRL's. ``epsilon``/``epsilon_high`` are the log-space clipping
    range; ``beta`` adds the k3 KL estimate to the reference model, as GRPO's. (With vLLM, TRL's
    importance-sampling correction for the sampler's log-probabilities is not applied.)"""

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], mask], dim=1)
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1)
        )
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        advantages = inputs["advantages"]
        if advantages.dim() != 1:
            raise ValueError("GMPO needs one advantage per completion; got per-token advantages")
        epsilon_high = self.epsilon_high if self.epsilon_high is not None else self.epsilon_low
        loss, clipped = gmpo_loss(per_token_logps, old, advantages, mask, self.epsilon_low, epsilon_high)
        mode = "train" if self.model.training else "eval"
        if self.beta != 0.0:
            reference = inputs["ref_per_token_logps"]
            kl = torch.exp(reference - per_token_logps) - (reference - per_token_logps) - 1
            weights = mask.to(kl.dtype)
            kl_per_sequence = (kl * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)
            loss = loss + self.beta * kl_per_sequence.mean()
            self._metrics[mode]["kl"].append(self.accelerator.gather(kl_per_sequence.mean()).mean().item())
        self._metrics[mode]["clip_ratio/region_mean"].append(self.accelerator.gather(clipped).mean().item())
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        return loss
