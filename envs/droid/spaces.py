"""DROID's state and action spaces, as its ``trajectory.h5`` records them and ``RobotEnv`` accepts them.

A converted dataset holds one state space and one action space (chosen at conversion), each followed
by the gripper: ``joint`` state = 7 joint positions, ``cartesian`` = end-effector pose (xyz + euler);
actions ``joint_velocity`` (π0.5-DROID's), ``joint_position`` (openpi's full-DROID fine-tuning),
``cartesian_velocity`` or ``cartesian_position``, then the gripper position. Velocities are commands in
[−1, 1] that the robot side clips; positions are absolute targets, passed through.
"""

from __future__ import annotations

STATE_SPACES = {
    "joint": ("observation/robot_state/joint_positions", [f"joint_{i}" for i in range(7)]),
    "cartesian": ("observation/robot_state/cartesian_position", ["x", "y", "z", "roll", "pitch", "yaw"]),
}
ACTION_SPACES = {
    "joint_velocity": [f"joint_velocity_{i}" for i in range(7)],
    "joint_position": [f"joint_position_{i}" for i in range(7)],
    "cartesian_velocity": [f"cartesian_velocity_{axis}" for axis in ("x", "y", "z", "roll", "pitch", "yaw")],
    "cartesian_position": [f"cartesian_position_{axis}" for axis in ("x", "y", "z", "roll", "pitch", "yaw")],
}
#: what the robot laptop reads from ``RobotEnv.get_observation()["robot_state"]`` for each state space
ROBOT_STATE_KEYS = {"joint": "joint_positions", "cartesian": "cartesian_position"}


def check(state_space: str, action_space: str) -> None:
    """Raise, naming the allowed values, if either space is unknown."""
    state_names(state_space)
    action_names(action_space)


def state_names(state_space: str) -> list[str]:
    if state_space not in STATE_SPACES:
        raise ValueError(f"DROID state space {state_space!r}: use one of {list(STATE_SPACES)}")
    return [*STATE_SPACES[state_space][1], "gripper"]


def action_names(action_space: str) -> list[str]:
    if action_space not in ACTION_SPACES:
        raise ValueError(f"DROID action space {action_space!r}: use one of {list(ACTION_SPACES)}")
    return [*ACTION_SPACES[action_space], "gripper"]


def state_dim(state_space: str) -> int:
    """``${droid_state_dim:<space>}`` in ``configs/env/droid.yaml``."""
    return len(state_names(state_space))


def action_dim(action_space: str) -> int:
    """``${droid_action_dim:<space>}`` in ``configs/env/droid.yaml``."""
    return len(action_names(action_space))


def is_velocity(action_space: str) -> bool:
    return action_space.endswith("_velocity")
