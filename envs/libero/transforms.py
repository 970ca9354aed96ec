"""LIBERO ↔ policy, one transform pair for the training data, the env workers and LIBERO-Plus clients.

- :meth:`LiberoTransforms.frame`: a live simulator observation → the frame LIBERO's LeRobot datasets
  store for it (``lerobot/libero`` and ``HuggingFaceVLA/libero`` alike: upright images ``image`` =
  agent view, ``image2`` = wrist; 8-D state: end-effector position, axis-angle orientation, gripper
  finger positions);
- :meth:`LiberoTransforms.inputs`: a frame as read → the policy input (cameras in ``env.cameras``
  order), for dataset frames and live frames alike;
- :meth:`LiberoTransforms.outputs`: a policy action → the simulator's (delta end-effector pose and
  gripper, −1 open / +1 close, clipped to [−1, 1]);
- :meth:`LiberoTransforms.openpi_inputs`: what openpi's LIBERO client (``examples/libero/main.py``)
  sends → the policy input: its images are already upright (it rotates them by 180° as the datasets
  do) and resized to 224² with padding, its state is the datasets' 8-D state.

NumPy only, so that LIBERO-Plus env clients can import it from their own Python environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs import openpi
from envs.images import resize_with_pad
from envs.layout import STATE_KEY, as_read, camera_key, stack_cameras

#: dataset camera (``env.cameras``) → the simulator camera it was recorded from
SIMULATOR_CAMERAS = {"image": "agentview", "image2": "robot0_eye_in_hand"}
#: dataset camera → the key openpi's LIBERO client sends it under, and the state's key
OPENPI_CAMERAS = {"image": "observation/image", "image2": "observation/wrist_image"}
OPENPI_STATE = "observation/state"
LIBERO_STATE_DIM = 8
#: the policy's state, from the datasets' 8-D one: ``dataset`` as stored (end-effector position,
#: axis-angle, both finger positions); ``vlanext`` as VLANeXt's official run builds it (position,
#: axis-angle, one gripper closedness in [0, 1]: ``clip(1 − mean|fingers| / 0.04, 0, 1)``)
STATE_LAYOUTS = {"dataset": LIBERO_STATE_DIM, "vlanext": 7}
FINGER_OPEN = 0.04  # a finger's position at fully open, in VLANeXt's closedness


def policy_state(state: Any, layout: str) -> Any:
    """``(..., 8)`` dataset states → the policy's ``(..., STATE_LAYOUTS[layout])``, for NumPy arrays and
    torch tensors alike (dataset frames and live ones go through the same function)."""
    if layout == "dataset":
        return state
    if layout != "vlanext":
        raise ValueError(f"env.state_layout={layout!r}: LIBERO has {sorted(STATE_LAYOUTS)}")
    pose, fingers = state[..., :6], state[..., 6:8]
    if type(state).__module__.startswith("torch"):  # torch only where it is in use (env clients lack it)
        import torch

        closed = (1 - fingers.abs().mean(-1, keepdim=True) / FINGER_OPEN).clamp(0.0, 1.0)
        return torch.cat([pose, closed.to(pose.dtype)], dim=-1)
    closed = np.clip(1 - np.abs(fingers).mean(-1, keepdims=True) / FINGER_OPEN, 0.0, 1.0)
    return np.concatenate([pose, closed.astype(pose.dtype)], axis=-1)


def axis_angle(quaternion_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a unit quaternion, by the formula LIBERO datasets were recorded with
    (angle ``2·acos(w)`` in [0, 2π), zero vector when the rotation is the identity)."""
    w = float(np.clip(quaternion_xyzw[3], -1.0, 1.0))
    sine = np.sqrt(1.0 - w * w)
    if np.isclose(sine, 0.0):
        return np.zeros(3)
    return quaternion_xyzw[:3] * 2.0 * np.arccos(w) / sine


def libero_state(observation: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate(
        [
            observation["robot0_eef_pos"],
            axis_angle(np.asarray(observation["robot0_eef_quat"], dtype=np.float64)),
            observation["robot0_gripper_qpos"],
        ]
    ).astype(np.float32)


def upright(image: np.ndarray) -> np.ndarray:
    """LIBERO renders upside down (OpenGL convention): rotate by 180°."""
    return np.ascontiguousarray(image[::-1, ::-1])


@dataclass(frozen=True)
class LiberoTransforms:
    """``cameras``: the dataset cameras the policy sees, in order (``env.cameras``); ``state_layout``:
    the policy's state (:data:`STATE_LAYOUTS`)."""

    cameras: tuple[str, ...] = ("image", "image2")
    state_layout: str = "dataset"

    def __post_init__(self) -> None:
        unknown = [camera for camera in self.cameras if camera not in SIMULATOR_CAMERAS]
        if unknown:
            raise ValueError(
                f"env.cameras: LIBERO has no camera {unknown[0]!r}; it has {list(SIMULATOR_CAMERAS)}"
            )
        if self.state_layout not in STATE_LAYOUTS:
            raise ValueError(f"env.state_layout={self.state_layout!r}: LIBERO has {sorted(STATE_LAYOUTS)}")

    def frame(self, observation: Mapping[str, np.ndarray], instruction: str) -> dict[str, Any]:
        """A live observation → the frame as the LIBERO datasets store it (images as written)."""
        frame: dict[str, Any] = {
            camera_key(camera): upright(observation[f"{SIMULATOR_CAMERAS[camera]}_image"])
            for camera in self.cameras
        }
        frame[STATE_KEY] = libero_state(observation)
        frame["task"] = instruction
        return frame

    def inputs(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """A frame as read (a dataset row, or :meth:`live_inputs`' converted frame) → the policy input."""
        return {
            "images": stack_cameras(frame, self.cameras),
            "state": policy_state(frame[STATE_KEY], self.state_layout),
            "instruction": frame["task"],
        }

    def live_inputs(self, observation: Mapping[str, np.ndarray], instruction: str) -> dict[str, Any]:
        """A live observation → the policy input, through the same :meth:`inputs` as the training data."""
        return self.inputs(as_read(self.frame(observation, instruction)))

    def openpi_inputs(self, observation: Mapping[str, Any], image_size: int) -> dict[str, Any]:
        """openpi's LIBERO observation → the policy input, its images resized (with padding) to the
        training data's ``image_size`` and then through the same :meth:`inputs` as the training data."""
        expected = [*(OPENPI_CAMERAS[camera] for camera in self.cameras), OPENPI_STATE, openpi.PROMPT_KEY]
        frame: dict[str, Any] = {
            camera_key(camera): resize_with_pad(
                openpi.image(observation, OPENPI_CAMERAS[camera], expected), image_size
            )
            for camera in self.cameras
        }
        frame[STATE_KEY] = openpi.vector(observation, OPENPI_STATE, LIBERO_STATE_DIM, expected)
        frame["task"] = openpi.prompt(observation, expected)
        return self.inputs(as_read(frame))

    def outputs(self, action: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
