"""Flow-matching action head (eq. A2): a velocity field from Gaussian noise to the action chunk."""

from __future__ import annotations

import math

import torch
from torch import nn

from policies.base import ActionHead, BackboneOutput, OptimizerRules
from policies.heads.trunk import ConditionedTransformer, masked_mean
from vla_train.optim import ModalityRule

TIME_SAMPLINGS = ("uniform", "beta")


def sinusoidal_embedding(t: torch.Tensor, width: int, max_period: float = 100.0) -> torch.Tensor:
    """``(B,)`` times in [0, 1] → ``(B, width)`` sin/cos features at geometric frequencies."""
    half = width // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = 2 * math.pi * t.unsqueeze(-1) * frequencies * max_period / 2
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FlowMatchingHead(ActionHead):
    """Linear path ``a_t = t·a1 + (1−t)·a0`` with ``a0 ~ N(0, I)``; the head regresses ``a1 − a0``.

    Args:
        num_inference_steps: Euler steps from t = 0 (noise) to t = 1 (actions) at inference.
        time_sampling: ``uniform`` (eq. A2) or ``beta`` (π0's Beta(1.5, 1) on 1 − t, which puts more
            training weight near the noise end).
    """

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        state_dim: int,
        chunk_size: int,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        num_inference_steps: int = 10,
        time_sampling: str = "uniform",
    ) -> None:
        super().__init__()
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.num_inference_steps = num_inference_steps
        self.time_sampling = time_sampling
        self.width = width
        self.trunk = ConditionedTransformer(context_dim, width, depth, heads, mlp_ratio)
        self.action_in_proj = nn.Linear(action_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.state_proj = nn.Linear(state_dim, width)
        self.chunk_position = nn.Parameter(torch.randn(chunk_size, width) * 0.02)
        self.output_proj = nn.Linear(width, action_dim)

    def velocity(
        self, features: BackboneOutput, state: torch.Tensor, noisy_actions: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """``v(a_t, t | x, c)``: ``(B, chunk, A)``."""
        time = self.time_mlp(sinusoidal_embedding(t, self.width)).unsqueeze(1)
        tokens = self.action_in_proj(noisy_actions) + self.chunk_position + time
        tokens = torch.cat([self.state_proj(state).unsqueeze(1), tokens], dim=1)
        return self.output_proj(self.trunk(tokens, features.tokens, features.mask)[:, 1:])

    def sample_time(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        if self.time_sampling == "uniform":
            return torch.rand(batch, device=device, generator=generator)
        # Beta(1.5, 1) on s = 1 − t through the inverse CDF s = u^(1/1.5): reproducible with a generator.
        u = torch.rand(batch, device=device, generator=generator)
        return 1.0 - u.pow(1.0 / 1.5)

    def loss(
        self,
        features: BackboneOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        noise = torch.randn(actions.shape, device=actions.device, dtype=actions.dtype, generator=generator)
        t = self.sample_time(actions.size(0), actions.device, generator).to(actions.dtype)
        noisy = t.view(-1, 1, 1) * actions + (1 - t.view(-1, 1, 1)) * noise
        predicted = self.velocity(features, state, noisy, t)
        return masked_mean((predicted - (actions - noise)).pow(2), action_is_pad)

    @torch.no_grad()
    def predict(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = (state.size(0), self.chunk_size, self.action_dim)
        actions = torch.randn(shape, device=state.device, dtype=state.dtype, generator=generator)
        dt = 1.0 / self.num_inference_steps
        for step in range(self.num_inference_steps):
            t = torch.full((shape[0],), step * dt, device=state.device, dtype=state.dtype)
            actions = actions + dt * self.velocity(features, state, actions, t)
        return actions

    def optimizer_rules(self) -> OptimizerRules:
        own = OptimizerRules(
            modality_rules=[
                ModalityRule(r"^(action_in_proj|time_mlp|state_proj|chunk_position|output_proj)", "action")
            ],
            adamw_patterns=[r"^chunk_position$", r"^output_proj\."],
        )
        return self.trunk.optimizer_rules().prefixed("trunk") + own
