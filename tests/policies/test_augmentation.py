"""openpi's training-time image augmentation: reproducible from the step's generator, geometric only
off the wrist camera, and only ever applied to training batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_train
from hydra.utils import instantiate

from policies.augmentation import ImageAugmentation
from vla_train.training import build_policy

CAMERAS = ["exterior_1_left", "wrist_left"]


def images() -> torch.Tensor:
    grid = torch.linspace(0, 1, 32)
    picture = torch.stack(
        [grid[:, None].expand(32, 32), grid[None, :].expand(32, 32), 0.5 * torch.ones(32, 32)]
    )
    return picture.expand(3, 2, 3, 32, 32).clone()


def test_same_generator_same_augmentation_and_samples_differ() -> None:
    augment = ImageAugmentation(CAMERAS)
    first = augment(images(), torch.Generator().manual_seed(4))
    again = augment(images(), torch.Generator().manual_seed(4))
    other = augment(images(), torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # each sample draws its own parameters
    assert first.min() >= 0 and first.max() <= 1


def test_wrist_camera_gets_no_crop_or_rotation() -> None:
    geometric_only = ImageAugmentation(CAMERAS, brightness=0, contrast=0, saturation=0)
    out = geometric_only(images(), torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 1], images()[:, 1], atol=1e-6)  # wrist: untouched
    assert not torch.allclose(out[:, 0], images()[:, 0], atol=1e-3)  # exterior: cropped and rotated
    nothing = ImageAugmentation(CAMERAS, crop_scale=1, max_rotation=0, brightness=0, contrast=0, saturation=0)
    assert torch.allclose(nothing(images(), torch.Generator().manual_seed(0)), images(), atol=1e-6)


def test_brightness_jitter_stays_within_its_range() -> None:
    augment = ImageAugmentation(
        CAMERAS, crop_scale=1, max_rotation=0, brightness=0.3, contrast=0, saturation=0
    )
    gray = torch.full((64, 2, 3, 8, 8), 0.5)
    ratios = augment(gray, torch.Generator().manual_seed(1)).mean(dim=(2, 3, 4)) / 0.5
    assert ratios.min() >= 0.7 - 1e-4 and ratios.max() <= 1.3 + 1e-4 and ratios.std() > 0.1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        ImageAugmentation(CAMERAS, crop_scale=1.2)
    with pytest.raises(ValueError, match="saturation"):
        ImageAugmentation(CAMERAS, saturation=1.5)
    with pytest.raises(ValueError, match="cameras"):
        ImageAugmentation(CAMERAS)(torch.rand(1, 3, 3, 8, 8))


def test_droid_policies_augment_training_batches_only(tmp_path: Path) -> None:
    cfg = compose_train(
        ["env=droid", "env.image_size=32", "backbone=tiny", "backbone.image_size=32"], tmp_path
    )
    policy = build_policy(cfg, None, "", "")
    assert isinstance(policy.augmentation, ImageAugmentation) and policy.augmentation.cameras == CAMERAS
    seen = []
    policy.augmentation = lambda pictures, generator: seen.append(pictures) or pictures
    batch = {
        "images": torch.rand(2, 2, 3, 32, 32),
        "instruction": ["a", "b"],
        "state": torch.zeros(2, 8),
        "actions": torch.zeros(2, 16, 8),
        "action_is_pad": torch.zeros(2, 16, dtype=torch.bool),
    }
    policy.train()(batch)
    policy.eval()(batch)
    policy.predict_action_chunk(batch)
    assert len(seen) == 1
    no_augmentation = compose_train(["env=droid", "env.augmentation=null"], tmp_path)
    assert instantiate(no_augmentation.env.augmentation) is None
