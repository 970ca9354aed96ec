"""Attention pieces π0.5's VLM and action expert share.

π0.5 runs two transformers of equal depth side by side (a "mixture of experts by token type"): in
every layer each stream projects its own tokens to queries/keys/values, and one attention runs over
both. The prefix (images + prompt) never attends to the action tokens, so its keys and values do not
depend on them: the VLM computes them once (:class:`~policies.backbones.pi05.PI05Backbone`) and the
expert's tokens attend to ``[prefix keys | own keys]`` per layer — exactly the joint attention, and the
prefix cache over the denoising steps for free. Both sides use transformers' Gemma modules
(projections, MLP, rotary embedding); only the layer loop is ours, because stock ``GemmaModel.forward``
rescales its inputs and builds a causal mask π0.5 does not use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AttentionGeometry:
    """What the action expert must share with the VLM to attend jointly with it."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float


def project_heads(attention: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(B, T, D)`` → queries ``(B, heads, T, d)`` and keys/values ``(B, kv_heads, T, d)`` of a
    transformers ``GemmaAttention``'s projections."""
    batch, length = hidden.shape[:2]

    def split(projection: nn.Linear) -> torch.Tensor:
        return projection(hidden).view(batch, length, -1, attention.head_dim).transpose(1, 2)

    return split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)


def attend(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """Grouped-query attention; ``allowed`` is a bool mask broadcastable to ``(B, 1, Tq, Tk)``.

    Returns ``(B, Tq, heads · d)``, ready for the output projection.
    """
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, enable_gqa=True)
    return out.transpose(1, 2).flatten(2)
