"""ℓ1-regression action head (eq. A1): learnable action queries read the features and regress the chunk."""

from __future__ import annotations

import torch
from torch import nn

from policies.base import ActionHead, BackboneOutput, OptimizerRules
from policies.heads.trunk import ConditionedTransformer, masked_mean
from vla_train.optim import ModalityRule


class L1RegressionHead(ActionHead):
    """One query token per chunk step plus a state token; ``‖f(x, c) − a‖₁`` loss.

    ``context_dim``, ``action_dim``, ``state_dim`` and ``chunk_size`` come from the backbone and the
    environment when the policy is built; the rest is the head's own config.
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
    ) -> None:
        super().__init__()
        self.trunk = ConditionedTransformer(context_dim, width, depth, heads, mlp_ratio)
        self.action_queries = nn.Parameter(torch.randn(chunk_size, width) * 0.02)
        self.state_proj = nn.Linear(state_dim, width)
        self.output_proj = nn.Linear(width, action_dim)

    def predict(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        queries = self.action_queries.unsqueeze(0).expand(state.size(0), -1, -1)
        tokens = torch.cat([self.state_proj(state).unsqueeze(1), queries], dim=1)
        hidden = self.trunk(tokens, features.tokens, features.mask)
        return self.output_proj(hidden[:, 1:])

    def loss(
        self,
        features: BackboneOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        prediction = self.predict(features, state)
        return masked_mean((prediction - actions).abs(), action_is_pad)

    def optimizer_rules(self) -> OptimizerRules:
        own = OptimizerRules(
            modality_rules=[ModalityRule(r"^(action_queries|state_proj|output_proj)", "action")],
            adamw_patterns=[r"^action_queries$", r"^output_proj\."],
        )
        return self.trunk.optimizer_rules().prefixed("trunk") + own
