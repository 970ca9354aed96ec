"""Decode a small dataset once and serve it from memory (the offline demo trains many epochs on it)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from vla_train.progress import progress_bar


class InMemoryDataset(Dataset):
    """Every sample of ``dataset`` decoded up front; images kept as uint8 to use 4× less memory.

    Worth it when the dataset fits in memory and is read for many epochs: decoding PNG frames is
    then paid once instead of once per epoch.
    """

    def __init__(self, dataset: Dataset, description: str = "caching dataset") -> None:
        self.samples = []
        with progress_bar(len(dataset), description, unit="sample") as progress:
            for index in range(len(dataset)):
                self.samples.append(_compress(dataset[index]))
                progress.update(1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.samples[index])
        sample["images"] = sample["images"].float().div_(255.0)
        return sample


def _compress(sample: dict[str, Any]) -> dict[str, Any]:
    images = sample["images"]
    return {**sample, "images": images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)}
