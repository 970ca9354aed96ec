"""Pieces the action heads share."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def masked_mean(values: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, chunk, A)`` values over the chunk steps that are not padding."""
    keep = (~action_is_pad).unsqueeze(-1).to(values.dtype)
    return (values * keep).sum() / (keep.sum() * values.size(-1)).clamp_min(1.0)


def run_block(block: nn.Module, *inputs: Any, recompute: bool) -> Any:
    """``block(*inputs)``, its activations recomputed in the backward pass when ``recompute`` is set
    and gradients are on (a head's blocks hold much of a step's memory at the paper's batch: the Pro
    policy's 24 blocks each attend over the task tokens of a layer). Non-reentrant checkpointing, so
    frozen inputs and parameters are safe and the RNG state is replayed."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)
