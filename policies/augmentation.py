"""Training-time image augmentation, as the paper's official runs apply it.

- :class:`ImageAugmentation`, openpi's for π models: per image a random crop of ``crop_scale`` of each
  side resized back and a rotation within ±``max_rotation`` degrees (not on wrist cameras, whose view
  is fixed to the gripper), then brightness, contrast and saturation jitter on every camera.
- :class:`OpenVLAImageAugmentation`, the one VLA-Adapter (``--image_aug True``) and VLANeXt configure
  in OpenVLA's terms: a random resized crop, then brightness, contrast, saturation and hue, in that
  order, on every camera.

The parameters come from the step's generator, so a resumed run augments exactly as the uninterrupted
one did; the image ops are torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


class ImageAugmentation:
    """Augment ``(B, cameras, 3, H, W)`` images in [0, 1] (see the module docstring).

    Args:
        cameras: the env's camera names, in the order of the images.
        crop_scale: side fraction of the random crop (1: no crop).
        max_rotation: degrees; 0: no rotation.
        brightness, contrast, saturation: jitter factors drawn from ``[1 − x, 1 + x]``; 0: none.
        geometric_exclude: cameras whose name contains one of these get no crop or rotation.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        crop_scale: float = 0.95,
        max_rotation: float = 5.0,
        brightness: float = 0.3,
        contrast: float = 0.4,
        saturation: float = 0.5,
        geometric_exclude: Sequence[str] = ("wrist",),
    ) -> None:
        if not 0 < crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
        jitter = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        for name, value in jitter.items():
            if not 0 <= value < 1:
                raise ValueError(f"{name} jitter must be in [0, 1), got {value}")
        self.cameras = list(cameras)
        self.geometric = [not any(tag in camera for tag in geometric_exclude) for camera in self.cameras]
        self.crop_scale, self.max_rotation = crop_scale, max_rotation
        self.jitter = jitter

    def evaluation_view(self, images: torch.Tensor) -> torch.Tensor:
        """openpi evaluates on the frames as they are."""
        return images

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, cameras, _, height, width = images.shape
        if cameras != len(self.cameras):
            raise ValueError(f"augmentation set up for cameras {self.cameras}, got {cameras} images")
        # all random numbers at once, then one transfer to the host: no device sync per image
        draws = torch.rand(batch, cameras, 6, generator=generator, device=images.device).tolist()
        crop_height, crop_width = round(height * self.crop_scale), round(width * self.crop_scale)
        out = torch.empty_like(images)
        for b in range(batch):
            for c in range(cameras):
                top, left, angle, bright, contrast, saturation = draws[b][c]
                image = images[b, c]
                if self.geometric[c]:
                    if self.crop_scale < 1:
                        image = _resized_crop(image, top, left, crop_height, crop_width)
                    if self.max_rotation:
                        image = TF.rotate(
                            image, (2 * angle - 1) * self.max_rotation, InterpolationMode.BILINEAR
                        )
                factors = {
                    name: 1 + (2 * draw - 1) * amount
                    for (name, amount), draw in zip(
                        self.jitter.items(), (bright, contrast, saturation), strict=True
                    )
                }
                image = TF.adjust_brightness(image, factors["brightness"])
                image = TF.adjust_contrast(image, factors["contrast"])
                image = TF.adjust_saturation(image, factors["saturation"])
                out[b, c] = image.clamp(0, 1)
        return out


class OpenVLAImageAugmentation:
    """Augment ``(B, cameras, 3, H, W)`` images in [0, 1] as OpenVLA-style data pipelines configure it.

    ``random_resized_crop`` (area fraction drawn from ``crop_scale``, aspect ratio log-uniform in
    ``crop_ratio``, resized back), then ``random_brightness``, ``random_contrast``,
    ``random_saturation`` and ``random_hue``, in that order, with TensorFlow's meanings: brightness adds
    ``δ ∈ [−b, b]``, contrast scales each channel about its own mean, saturation scales HSV saturation
    (clipped), hue turns by ``δ ∈ [−h, h]`` of a full circle. Values are clipped to [0, 1] after each
    op. At evaluation the images get the matching centre crop (the mean crop area, square), as the
    official evaluations do (``center_crop``). VLA-Adapter (``--image_aug True``,
    ``prismatic/vla/datasets/datasets.py``): scale [0.9, 0.9], ratio [1, 1]; VLANeXt
    (``libero_train_pion_config.yaml``): scale [0.8, 1.0], ratio [0.9, 1.1]; both brightness 0.2,
    contrast and saturation [0.8, 1.2], hue 0.05.

    Args:
        cameras: the env's camera names, in the order of the images.
        crop_scale: ``(low, high)`` area fraction of the crop; ``(1, 1)``: no crop.
        crop_ratio: ``(low, high)`` aspect ratio (width / height) of the crop.
        brightness: additive jitter bound; 0: none.
        contrast, saturation: factor ranges ``(low, high)``; ``(1, 1)``: none.
        hue: hue shift bound, a fraction of the colour circle (< 0.5); 0: none.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        crop_scale: Sequence[float] = (0.9, 0.9),
        crop_ratio: Sequence[float] = (1.0, 1.0),
        brightness: float = 0.2,
        contrast: Sequence[float] = (0.8, 1.2),
        saturation: Sequence[float] = (0.8, 1.2),
        hue: float = 0.05,
    ) -> None:
        ranges = {
            "crop_scale": crop_scale,
            "crop_ratio": crop_ratio,
            "contrast": contrast,
            "saturation": saturation,
        }
        for name, bounds in ranges.items():
            if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]:
                raise ValueError(
                    f"{name} must be a range [low, high] with 0 <= low <= high, got {list(bounds)}"
                )
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1 or crop_ratio[0] <= 0:
            raise ValueError(
                f"crop_scale must lie in (0, 1] and crop_ratio be > 0, got {crop_scale}, {crop_ratio}"
            )
        if not 0 <= brightness < 1 or not 0 <= hue < 0.5:
            raise ValueError(f"brightness must be in [0, 1) and hue in [0, 0.5), got {brightness}, {hue}")
        self.cameras = list(cameras)
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.brightness, self.hue = brightness, hue
        self.contrast, self.saturation = tuple(contrast), tuple(saturation)

    def evaluation_view(self, images: torch.Tensor) -> torch.Tensor:
        """The centre crop of the mean training crop area, resized back (identity without cropping)."""
        if self.crop_scale == (1.0, 1.0):
            return images
        *_, height, width = images.shape
        side = (sum(self.crop_scale) / 2) ** 0.5
        crop = [round(height * side), round(width * side)]
        flat = images.flatten(0, 1)
        return TF.resize(TF.center_crop(flat, crop), [height, width], antialias=True).view_as(images)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, cameras, _, height, width = images.shape
        if cameras != len(self.cameras):
            raise ValueError(f"augmentation set up for cameras {self.cameras}, got {cameras} images")
        draws = torch.rand(batch, cameras, 8, generator=generator, device=images.device).tolist()
        out = torch.empty_like(images)
        for b in range(batch):
            for c in range(cameras):
                scale, ratio, top, left, bright, contrast, saturation, hue = draws[b][c]
                image = images[b, c]
                if self.crop_scale != (1.0, 1.0):
                    area = _between(self.crop_scale, scale) * height * width
                    aspect = math.exp(
                        _between((math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])), ratio)
                    )
                    crop_width = min(width, max(1, round(math.sqrt(area * aspect))))
                    crop_height = min(height, max(1, round(math.sqrt(area / aspect))))
                    image = _resized_crop(image, top, left, crop_height, crop_width)
                image = (image + (2 * bright - 1) * self.brightness).clamp(0, 1)
                mean = image.mean(dim=(-2, -1), keepdim=True)  # per channel, as tf.image.adjust_contrast
                image = ((image - mean) * _between(self.contrast, contrast) + mean).clamp(0, 1)
                image = _tf_saturation(image, _between(self.saturation, saturation))
                if self.hue:
                    image = TF.adjust_hue(image, (2 * hue - 1) * self.hue).clamp(0, 1)
                out[b, c] = image
        return out


def _resized_crop(image: torch.Tensor, top: float, left: float, height: int, width: int) -> torch.Tensor:
    """The ``height × width`` crop at relative position ``(top, left) ∈ [0, 1)²``, resized back."""
    full_height, full_width = image.shape[-2:]
    return TF.resized_crop(
        image,
        int(top * (full_height - height + 1)),
        int(left * (full_width - width + 1)),
        height,
        width,
        [full_height, full_width],
        antialias=True,
    )


def _tf_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``tf.image.adjust_saturation``: HSV saturation × ``factor``, clipped to [0, 1], hue and value kept.

    In closed form per pixel with value ``V = max(rgb)`` and saturation ``S = (V − min) / V``: each
    channel ``c`` becomes ``V − (V − c) · min(factor, 1 / S)`` (torchvision's version blends with grey
    instead, which differs for factors above 1).
    """
    value = image.amax(dim=0, keepdim=True)
    spread = value - image.amin(dim=0, keepdim=True)
    saturation = torch.where(value > 0, spread / value.clamp_min(1e-12), torch.zeros_like(value))
    scale = torch.where(
        saturation > 0,
        (saturation * factor).clamp(0, 1) / saturation.clamp_min(1e-12),
        torch.ones_like(value),
    )
    return (value - (value - image) * scale).clamp(0, 1)


def _between(bounds: tuple[float, float], draw: float) -> float:
    low, high = bounds
    return low + draw * (high - low)
