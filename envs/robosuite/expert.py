"""A scripted Lift expert on privileged state: above the cube, down, close, up.

Measured with robosuite 1.4 (50 episodes each): 100% success in 36 steps on average without noise,
still 100% with Gaussian noise σ = 0.2 on the arm dimensions, 76% at σ = 0.3 (it never re-grasps).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial.transform import Rotation

# OSC_POSE maps an action of 1.0 to a 5 cm position goal offset and a 0.5 rad rotation offset.
POSITION_GAIN = 15.0  # action per metre of position error
ROTATION_SCALE = 0.5


class LiftExpert:
    """Proportional controller through the phases approach → descend → grasp → lift.

    It keeps the gripper pointing down and turns it about the vertical to face the cube's sides.
    ``noise`` adds Gaussian noise to the six arm dimensions, for diverse demonstrations.
    """

    def __init__(self, noise: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.noise = noise
        self.rng = rng if rng is not None else np.random.default_rng()

    def reset(self, observation: Mapping[str, np.ndarray]) -> None:
        self.phase, self.phase_steps, self.grasp_height = "approach", 0, 0.0
        home = Rotation.from_quat(observation["robot0_eef_quat"])  # (x, y, z, w), as robosuite reports
        cube_yaw = _yaw(Rotation.from_quat(observation["cube_quat"]))
        # the cube is symmetric under quarter turns: take the smallest yaw change that faces a side
        turn = (cube_yaw - _yaw(home) + np.pi / 4) % (np.pi / 2) - np.pi / 4
        self.target_rotation = Rotation.from_euler("z", turn) * home

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        eef, cube = observation["robot0_eef_pos"], observation["cube_pos"]
        self.phase_steps += 1
        if self.phase == "approach":
            target, gripper = cube + np.array([0.0, 0.0, 0.05]), -1.0
            arrived = np.linalg.norm((target - eef)[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.02
            if arrived or self.phase_steps > 60:
                self._next("descend")
        elif self.phase == "descend":
            target, gripper = cube + np.array([0.0, 0.0, -0.005]), -1.0
            if abs(target[2] - eef[2]) < 0.008 or self.phase_steps > 40:
                self._next("grasp")
        elif self.phase == "grasp":
            target, gripper = cube + np.array([0.0, 0.0, -0.005]), 1.0
            if self.phase_steps >= 8:
                self._next("lift")
                self.grasp_height = eef[2]
        else:
            target, gripper = np.array([eef[0], eef[1], self.grasp_height + 0.20]), 1.0
        action = np.concatenate(
            [
                np.clip(POSITION_GAIN * (target - eef), -1.0, 1.0),
                self._rotation_action(observation),
                [gripper],
            ]
        )
        if self.noise > 0:
            action[:6] += self.rng.normal(0.0, self.noise, size=6)
        return np.clip(action, -1.0, 1.0)

    def _rotation_action(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        error = self.target_rotation * Rotation.from_quat(observation["robot0_eef_quat"]).inv()
        return np.clip(error.as_rotvec() / ROTATION_SCALE, -1.0, 1.0)

    def _next(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0


def _yaw(rotation: Rotation) -> float:
    matrix = rotation.as_matrix()
    return float(np.arctan2(matrix[1, 0], matrix[0, 0]))
