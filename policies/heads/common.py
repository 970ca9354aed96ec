"""Pieces the action heads share."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, chunk, A)`` values over the chunk steps that are not padding."""
    keep = (~action_is_pad).unsqueeze(-1).to(values.dtype)
    return (values * keep).sum() / (keep.sum() * values.size(-1)).clamp_min(1.0)
