"""Training-time image augmentation, as openpi applies it when fine-tuning π models.

Per image: a random crop of ``crop_scale`` of each side resized back and a rotation within
±``max_rotation`` degrees (not on wrist cameras, whose view is fixed to the gripper), then brightness,
contrast and saturation jitter on every camera. The parameters come from the step's generator, so a
resumed run augments exactly as the uninterrupted one did; the ops are torchvision's.
"""

from __future__ import annotations

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
                        image = TF.resized_crop(
                            image,
                            int(top * (height - crop_height + 1)),
                            int(left * (width - crop_width + 1)),
                            crop_height,
                            crop_width,
                            [height, width],
                            antialias=True,
                        )
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
