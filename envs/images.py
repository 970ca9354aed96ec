"""Camera images as robot-side clients prepare them. NumPy and Pillow only (env workers, robot laptops)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(size, size, 3)`` uint8: bilinear resize of the longer side, centred."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    padded = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    padded[top : top + new_height, left : left + new_width] = resized
    return padded
