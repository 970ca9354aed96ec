"""A data order that is a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[int]):
    """Shuffles ``0..size-1`` with a generator seeded by ``seed + epoch``.

    :meth:`set_epoch` is called by the loader that owns it (accelerate's prepared loader does, from
    its own counter, so the trainer sets that counter rather than this sampler).

    Unlike ``RandomSampler`` with a shared generator, the permutation of epoch ``e`` does not depend
    on how many epochs this process has already drawn, which is what exact resume needs.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("the training dataset is empty")
        self.size, self.seed = size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def step_generator(seed: int, step: int, process_index: int, device: torch.device) -> torch.Generator:
    """The generator a step's randomness (flow noise and timesteps) comes from: a function of the step."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 64 + process_index)
    return generator
