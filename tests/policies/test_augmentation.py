"""Training-time image augmentation (openpi's for π models, VLA-Adapter's for its LIBERO runs):
reproducible from the step's generator, geometric only where it should be, and only ever applied to
training batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_train
from hydra.utils import instantiate

from policies.augmentation import ImageAugmentation, OpenVLAImageAugmentation
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
    seen, viewed = [], []

    class Recording:
        def __call__(self, pictures, generator):
            return seen.append(pictures) or pictures

        def evaluation_view(self, pictures):
            return viewed.append(pictures) or pictures

    policy.augmentation = Recording()
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
    assert len(seen) == 1 and len(viewed) == 2  # every other forward gets the evaluation view
    no_augmentation = compose_train(["env=droid", "env.augmentation=null"], tmp_path)
    assert instantiate(no_augmentation.env.augmentation) is None


def test_vla_adapter_augmentation_follows_its_rlds_pipeline() -> None:
    """TF semantics: brightness adds δ ∈ [−0.2, 0.2]; contrast scales each channel about its own mean."""
    augment = OpenVLAImageAugmentation(CAMERAS)
    first = augment(images(), torch.Generator().manual_seed(4))
    assert torch.equal(first, augment(images(), torch.Generator().manual_seed(4)))
    assert not torch.equal(first, augment(images(), torch.Generator().manual_seed(5)))
    assert not torch.allclose(first[:, 1], images()[:, 1], atol=1e-3)  # the wrist camera too
    assert first.min() >= 0 and first.max() <= 1

    brightness_only = OpenVLAImageAugmentation(
        CAMERAS, crop_scale=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=0
    )
    gray = torch.full((64, 2, 3, 8, 8), 0.5)
    shifts = brightness_only(gray, torch.Generator().manual_seed(1)) - 0.5
    assert torch.allclose(shifts, shifts[..., :1, :1, :1])  # one additive δ per image
    assert shifts.min() >= -0.2 - 1e-6 and shifts.max() <= 0.2 + 1e-6 and shifts.std() > 0.08

    contrast_only = OpenVLAImageAugmentation(
        CAMERAS, crop_scale=(1, 1), brightness=0, saturation=(1, 1), hue=0
    )
    picture = images()
    out = contrast_only(picture, torch.Generator().manual_seed(2))
    means = picture.mean(dim=(-2, -1), keepdim=True)
    factor = (out - means)[..., 0, 24, 0] / (picture - means)[..., 0, 24, 0]  # a pixel far from 0 and 1
    torch.testing.assert_close(out, ((picture - means) * factor[..., None, None, None] + means).clamp(0, 1))
    assert ((factor >= 0.8 - 1e-5) & (factor <= 1.2 + 1e-5)).all()

    saturation_only = OpenVLAImageAugmentation(
        CAMERAS, crop_scale=(1, 1), brightness=0, contrast=(1, 1), hue=0
    )
    pixel = torch.tensor([0.8, 0.4, 0.6]).view(1, 1, 3, 1, 1).expand(64, 2, 3, 1, 1).clone()
    out = saturation_only(pixel, torch.Generator().manual_seed(3))[..., 0, 0]
    # HSV: V = 0.8 and hue kept; S = 0.5 scaled by f ∈ [0.8, 1.2] (TF's adjust_saturation)
    assert torch.allclose(out[..., 0], torch.full_like(out[..., 0], 0.8))
    scaled = (0.8 - out[..., 1]) / 0.8  # the new saturation
    assert scaled.min() >= 0.4 - 1e-5 and scaled.max() <= 0.6 + 1e-5 and scaled.std() > 0.02
    torch.testing.assert_close(out[..., 2] - out[..., 1], (out[..., 0] - out[..., 1]) / 2)  # hue kept

    nothing = OpenVLAImageAugmentation(
        CAMERAS, crop_scale=(1, 1), brightness=0, contrast=(1, 1), saturation=(1, 1), hue=0
    )
    torch.testing.assert_close(nothing(images(), torch.Generator().manual_seed(0)), images())
    with pytest.raises(ValueError, match="crop_scale"):
        OpenVLAImageAugmentation(CAMERAS, crop_scale=(0, 0.5))


@pytest.mark.parametrize(
    ("preset", "crop_scale", "crop_ratio"),
    [("vla_adapter", (0.9, 0.9), (1.0, 1.0)), ("vlanext", (0.8, 1.0), (0.9, 1.1))],
)
def test_official_augmentation_of_the_libero_presets(
    preset: str, crop_scale, crop_ratio, tmp_path: Path
) -> None:
    """VA run_pion.sh --image_aug True (datasets.py image_augment_kwargs); VN yaml data.augmentation."""
    augmentation = instantiate(compose_train([f"experiment={preset}"], tmp_path).env.augmentation)
    assert isinstance(augmentation, OpenVLAImageAugmentation) and augmentation.cameras == ["image", "image2"]
    assert (augmentation.crop_scale, augmentation.crop_ratio) == (crop_scale, crop_ratio)
    assert (augmentation.brightness, augmentation.contrast, augmentation.saturation, augmentation.hue) == (
        0.2,
        (0.8, 1.2),
        (0.8, 1.2),
        0.05,
    )
    assert compose_train(["env=libero_object"], tmp_path).env.augmentation is None  # not outside the presets


def test_the_libero_presets_evaluate_on_the_centre_crop_their_training_crops_average(tmp_path: Path) -> None:
    """The official evaluations centre-crop (0.9 area) what was trained on random 0.9-area crops."""
    augment = OpenVLAImageAugmentation(CAMERAS)  # VLA-Adapter's crop: 0.9 area, square
    picture = images()
    view = augment.evaluation_view(picture)
    side = round(32 * 0.9**0.5)  # 30 of 32 pixels
    expected = torch.nn.functional.interpolate(
        picture[..., 1 : 1 + side, 1 : 1 + side].flatten(0, 1), size=(32, 32), mode="bilinear", antialias=True
    ).view_as(picture)
    torch.testing.assert_close(view, expected, atol=2e-3, rtol=0)
    no_crop = OpenVLAImageAugmentation(CAMERAS, crop_scale=(1, 1))
    assert torch.equal(no_crop.evaluation_view(picture), picture)
    assert torch.equal(ImageAugmentation(CAMERAS).evaluation_view(picture), picture)  # openpi: as they are
