"""The frame layout every environment's LeRobot data uses, and the step from a frame as written to a
frame as read. NumPy only: env workers and robot-side clients import it without torch.

A *frame* is one dataset row: ``observation.images.<camera>`` images, ``observation.state``, ``task``.
Written (by a recorder, or by a live observation's transform) its images are ``(H, W, 3)`` uint8;
read back (LeRobot decodes them) they are ``(3, H, W)`` float32 in [0, 1]. Each environment's input
transform takes frames as read, so a live observation goes observation → frame → :func:`as_read` →
the same input transform the training data uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: the LeRobot feature names every environment's dataset uses for the robot state and the action
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."


def camera_key(camera: str) -> str:
    """The LeRobot feature of camera ``camera`` (an ``env.cameras`` entry) in every environment's data."""
    return f"{IMAGE_PREFIX}{camera}"


def as_read(frame: Mapping[str, Any]) -> dict[str, Any]:
    """A frame as written → as LeRobot reads it back: images ``(H, W, 3)`` uint8 → ``(3, H, W)`` float32
    in [0, 1]; everything else unchanged."""
    return {
        key: np.asarray(value).transpose(2, 0, 1).astype(np.float32) / 255.0
        if key.startswith(IMAGE_PREFIX)
        else value
        for key, value in frame.items()
    }


def stack_cameras(frame: Mapping[str, Any], cameras: tuple[str, ...] | list[str]) -> Any:
    """The frame's images of ``cameras``, in that order, as one ``(cameras, 3, H, W)`` array (a torch
    tensor for dataset frames, NumPy for live ones: torch is imported only where it is in use)."""
    images = [frame[camera_key(camera)] for camera in cameras]
    if type(images[0]).__module__.startswith("torch"):
        import torch

        return torch.stack(images)
    return np.stack(images)
