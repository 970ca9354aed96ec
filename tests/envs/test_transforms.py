"""Each environment's transform pair: a live observation reaches the policy through the very input
transform its training data goes through, and the layout is the same whichever path a frame took."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.layout import STATE_KEY, as_read, camera_key
from envs.libero.transforms import LiberoTransforms
from envs.robosuite.transforms import LiftTransforms


def observation(cameras: list[str], size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {f"{camera}_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for camera in cameras}
    return {
        **images,
        "robot0_eef_pos": np.array([0.1, -0.2, 0.9]),
        "robot0_eef_quat": np.array([0.0, 0.0, np.sin(0.3), np.cos(0.3)]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
    }


def as_dataset_row(frame: dict) -> dict:
    """What LeRobot's loader returns for a written frame: torch tensors, images CHW in [0, 1]."""
    read = as_read(frame)
    return {key: torch.as_tensor(value) if key != "task" else value for key, value in read.items()}


@pytest.mark.parametrize(
    "transforms, instruction",  # LIBERO's instruction comes with the task, Lift's from env.instruction
    [
        (LiberoTransforms(("image", "image2")), ("open the drawer",)),
        (LiftTransforms(("agentview", "robot0_eye_in_hand"), "lift the cube"), ()),
    ],
    ids=["libero", "robosuite_lift"],
)
def test_live_and_dataset_frames_give_the_same_policy_input(transforms, instruction: tuple) -> None:
    obs = observation(["agentview", "robot0_eye_in_hand"])
    live_input = transforms.live_inputs(obs, *instruction)
    frame = transforms.frame(obs, *instruction)
    row_input = transforms.inputs(as_dataset_row(frame))
    assert isinstance(live_input["images"], np.ndarray) and isinstance(row_input["images"], torch.Tensor)
    np.testing.assert_array_equal(live_input["images"], row_input["images"].numpy())
    np.testing.assert_array_equal(live_input["state"], row_input["state"].numpy())
    assert live_input["instruction"] == row_input["instruction"]
    assert live_input["images"].shape == (2, 3, 8, 8) and live_input["images"].dtype == np.float32
    assert live_input["images"].min() >= 0.0 and live_input["images"].max() <= 1.0


def test_libero_frames_are_upright_and_follow_env_cameras() -> None:
    obs = observation(["agentview", "robot0_eye_in_hand"])
    wrist_only = LiberoTransforms(("image2",)).live_inputs(obs, "task")
    assert wrist_only["images"].shape == (1, 3, 8, 8)  # the cameras the policy was trained on, only
    upright_wrist = obs["robot0_eye_in_hand_image"][::-1, ::-1].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(wrist_only["images"][0], upright_wrist, rtol=1e-6)
    axis_angle = wrist_only["state"][3:6]
    np.testing.assert_allclose(axis_angle, [0.0, 0.0, 0.6], atol=1e-6)  # 2·0.3 about z
    with pytest.raises(ValueError, match=r"env.cameras: LIBERO has no camera 'wrist'"):
        LiberoTransforms(("wrist",))


def test_outputs_are_the_simulators_actions() -> None:
    action = np.array([2.0, -3.0, 0.5, 0.0, 0.0, 0.0, 1.5])
    for transforms in (LiberoTransforms(), LiftTransforms(("agentview",))):
        np.testing.assert_array_equal(transforms.outputs(action), np.clip(action, -1, 1))


def test_lift_frames_are_what_the_recorder_writes() -> None:
    obs = observation(["agentview"])
    frame = LiftTransforms(("agentview",), "lift the cube").frame(obs)
    assert set(frame) == {camera_key("agentview"), STATE_KEY, "task"} and frame["task"] == "lift the cube"
    assert frame[camera_key("agentview")].dtype == np.uint8  # as written; inputs() read them as floats
