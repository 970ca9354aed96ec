"""The transformer both heads share: action tokens self-attend and cross-attend to backbone features."""

from __future__ import annotations

import torch
from torch import nn

from policies.base import OptimizerRules
from vla_train.optim import ModalityRule, PerHeadRule


class ConditionedTransformer(nn.Module):
    """``depth`` pre-norm decoder layers (torch's own) over action tokens, conditioned on features.

    Args:
        context_dim: width of the backbone's tokens, projected to ``width``.
        width, depth, heads, mlp_ratio: the trunk's size.
    """

    def __init__(self, context_dim: int, width: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"head width {width} must be divisible by heads={heads}")
        self.head_dim = width // heads
        self.context_proj = nn.Linear(context_dim, width)
        layer = nn.TransformerDecoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=int(mlp_ratio * width),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerDecoder(layer, num_layers=depth, norm=nn.LayerNorm(width))

    def forward(
        self, tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """tokens ``(B, N, width)``, context ``(B, T, context_dim)``, mask ``(B, T)`` True = real."""
        memory = self.context_proj(context)
        return self.layers(tokens, memory, memory_key_padding_mask=~context_mask)

    def optimizer_rules(self) -> OptimizerRules:
        """All action modality; Q, K and V heads are stacked along the rows of ``in_proj_weight``."""
        return OptimizerRules(
            modality_rules=[ModalityRule(r"^", "action")],
            per_head_rules=[
                PerHeadRule(r"\.(self_attn|multihead_attn)\.in_proj_weight$", self.head_dim, 0),
                PerHeadRule(r"\.(self_attn|multihead_attn)\.out_proj\.weight$", self.head_dim, 1),
            ],
        )


def masked_mean(values: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, chunk, A)`` values over the chunk steps that are not padding."""
    keep = (~action_is_pad).unsqueeze(-1).to(values.dtype)
    return (values * keep).sum() / (keep.sum() * values.size(-1)).clamp_min(1.0)
