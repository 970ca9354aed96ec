"""Learning-rate schedules: warmup, then constant, cosine to a floor, or multistep decay."""

from __future__ import annotations

import itertools

import pytest
import torch

from vla_train.trainer.schedule import build_lr_scheduler


def lrs(schedule: str, steps: int = 10, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler = build_lr_scheduler(optimizer, schedule, total_steps=steps, **options)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_constant_with_warmup() -> None:
    assert lrs("constant", warmup_steps=4)[:6] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_decays_to_the_floor() -> None:
    values = lrs("cosine", steps=20, warmup_steps=2, min_lr_ratio=0.1)
    assert values[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[2:]))
    assert values[-1] == pytest.approx(0.1, abs=0.02)


def test_multistep_multiplies_by_gamma_at_each_milestone() -> None:
    values = lrs("multistep", steps=8, milestones=[3, 6], gamma=0.5)
    assert values == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_unknown_schedule_is_an_error() -> None:
    with pytest.raises(ValueError, match="linear"):
        lrs("linear")
