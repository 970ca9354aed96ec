"""bench_decode.py compares like with like: both layouts hold the same samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bench_decode import main, record

from vla_train.data.lerobot_io import load_lerobot_dataset

pytestmark = pytest.mark.slow


def test_png_and_mp4_layouts_hold_the_same_samples(tmp_path: Path) -> None:
    for layout, video in (("png", False), ("mp4", True)):
        record(tmp_path / layout, video, episodes=2, frames=6, size=32)
    png, mp4 = (
        load_lerobot_dataset("local/bench", tmp_path / layout, "action", 4) for layout in ("png", "mp4")
    )
    assert len(png) == len(mp4) == 12
    for index in (0, 5, 9):
        a, b = png[index], mp4[index]
        assert torch.equal(a["action"], b["action"]) and torch.equal(
            a["observation.state"], b["observation.state"]
        )
        for camera in ("observation.images.image", "observation.images.image2"):
            assert a[camera].shape == b[camera].shape == (3, 32, 32)
            assert (a[camera] - b[camera]).abs().mean() < 0.03  # the codec is lossy, the frame the same
    rates = main(
        ["--episodes", "1", "--frames", "6", "--size", "32", "--samples", "5", "--workdir", str(tmp_path)]
    )
    assert rates["png"] > 0 and rates["mp4"] > 0
