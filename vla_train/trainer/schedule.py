"""Learning-rate schedules: warmup then constant, cosine or multistep, via transformers' schedulers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
    decay_steps: int | None = None,
) -> LambdaLR:
    """One multiplier for every parameter group, applied to each group's own initial lr.

    ``cosine`` decays from the peak after warmup to ``min_lr_ratio`` × peak at ``decay_steps``
    (default ``total_steps``): openpi's π0.5 recipe decays over 30k steps and stops at 20k.
    """
    if schedule == "constant":
        return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps)
    if schedule == "cosine":
        return get_scheduler(
            "cosine_with_min_lr",
            optimizer,
            num_warmup_steps=warmup_steps,
            num_training_steps=decay_steps or total_steps,
            scheduler_specific_kwargs={"min_lr_rate": min_lr_ratio},
        )
    if schedule == "multistep":
        ordered = sorted(milestones)

        def multistep(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
            return warm * gamma ** sum(step >= milestone for milestone in ordered)

        return LambdaLR(optimizer, multistep)
    raise ValueError(f"trainer.schedule must be constant, cosine or multistep, got {schedule!r}")
