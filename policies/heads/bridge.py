"""VLA-Adapter's "bridge attention" policy: one small block per language-model layer.

Block ``i`` reads layer ``i + 1`` of the backbone twice: its *raw* vision-language features (the
image and instruction tokens) and its *action-query* features (the hidden states of the learnable
queries the head appended to the language model's input), plus a proprioception token. The chunk
tokens attend to all three sources in **one softmax**; the raw features' logits are scaled by
``tanh(gate)`` with the gate initialized at 0, so the policy learns how much of the raw stream to
let through. As in VLA-Adapter's code the feed-forward wraps the residual sum (``x = ffn(x + attn)``).

Deliberate differences from the reference code (which we read, not copied), each for a reason:
- each source is layer-normalized before its keys and values: the per-layer hidden states of a
  causal LM differ in scale by orders of magnitude across depth (the last one is post-norm);
- the chunk tokens start from a learned embedding per chunk step (the reference feeds a constant
  plus training noise), so steps are distinguishable without rotary embeddings;
- the gated raw-feature logits are implemented by scaling the raw keys, which is the same product
  and lets PyTorch's fused attention kernel run the joint softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policies.base import OptimizerRules
from policies.heads.common import run_block
from vla_train.optim import ModalityRule, PerHeadRule


def split_into_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, L, D)`` → ``(B, heads, L, D / heads)``, the layout of ``scaled_dot_product_attention``."""
    batch, length, width = tokens.shape
    return tokens.view(batch, length, heads, width // heads).transpose(1, 2)


class BridgeAttentionBlock(nn.Module):
    """Chunk tokens attend jointly to themselves, to [query features, proprio] and to gated raw features."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(
                f"head.heads={heads}: the bridge width {width} (the backbone's) must be divisible by it"
            )
        self.heads = heads
        self.raw_norm = nn.LayerNorm(width)
        self.query_norm = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)
        self.gate = nn.Parameter(torch.zeros(1))
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        raw: torch.Tensor,
        raw_mask: torch.Tensor,
        query_features: torch.Tensor,
        proprio: torch.Tensor,
    ) -> torch.Tensor:
        """x ``(B, C, D)``; raw ``(B, T, D)`` with mask ``(B, T)``; query_features ``(B, Q, D)``;
        proprio ``(B, 1, D)``."""
        bridge = torch.cat([self.query_norm(query_features), proprio], dim=1)
        raw = self.raw_norm(raw)
        keys = torch.cat(
            [self.k_proj(x), self.k_proj(bridge), torch.tanh(self.gate) * self.k_proj(raw)], dim=1
        )
        values = self.v_proj(torch.cat([x, bridge, raw], dim=1))
        real = torch.cat([raw_mask.new_ones(x.shape[:2]), raw_mask.new_ones(bridge.shape[:2]), raw_mask], 1)
        attended = F.scaled_dot_product_attention(
            split_into_heads(self.q_proj(x), self.heads),
            split_into_heads(keys, self.heads),
            split_into_heads(values, self.heads),
            attn_mask=real[:, None, None, :],
        )
        attended = self.o_proj(attended.transpose(1, 2).flatten(2))
        return F.relu(self.ffn(self.ffn_norm(x + attended)))


class BridgeAttentionPolicy(nn.Module):
    """``num_layers`` bridge blocks; block ``i`` reads the backbone's layer ``i + 1``.

    Args:
        width: the backbone's hidden size (the policy runs at the language model's width).
        num_layers: the language model's layer count (one block per layer).
        heads: attention heads per block.
        gradient_checkpointing: recompute each block's activations in the backward pass.
    """

    def __init__(self, width: int, num_layers: int, heads: int, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.head_dim = width // heads
        self.blocks = nn.ModuleList(BridgeAttentionBlock(width, heads) for _ in range(num_layers))
        self.output_norm = nn.LayerNorm(width)

    def forward(
        self,
        x: torch.Tensor,
        raw_layers: tuple[torch.Tensor, ...],
        raw_mask: torch.Tensor,
        query_layers: tuple[torch.Tensor, ...],
        proprio: torch.Tensor,
    ) -> torch.Tensor:
        """``raw_layers`` / ``query_layers``: ``num_layers + 1`` hidden states, embedding output first."""
        if len(raw_layers) != len(self.blocks) + 1 or len(query_layers) != len(raw_layers):
            raise ValueError(
                f"the bridge policy has {len(self.blocks)} blocks and needs {len(self.blocks) + 1} hidden "
                f"states per source, got {len(raw_layers)} raw and {len(query_layers)} query"
            )
        for index, block in enumerate(self.blocks):
            x = run_block(
                block,
                x,
                raw_layers[index + 1],
                raw_mask,
                query_layers[index + 1],
                proprio,
                recompute=self.gradient_checkpointing,
            )
        return self.output_norm(x)

    def optimizer_rules(self) -> OptimizerRules:
        """All action modality; Q/K/V split into heads by rows, the output projection by columns."""
        return OptimizerRules(
            modality_rules=[ModalityRule(r"^", "action")],
            per_head_rules=[
                PerHeadRule(r"^blocks\.\d+\.(q|k|v)_proj\.weight$", self.head_dim, 0),
                PerHeadRule(r"^blocks\.\d+\.o_proj\.weight$", self.head_dim, 1),
            ],
        )
