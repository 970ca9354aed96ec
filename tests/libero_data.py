"""LIBERO test data: the shared assets fixture, and small datasets in the layouts of lerobot/libero
(MP4 video) and HuggingFaceVLA/libero (PNG frames)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vla_train.rollout import EpisodeSpec

REPO_ROOT = Path(__file__).resolve().parents[1]


def libero_assets() -> Path:
    """``$LIBERO_ASSETS``, else the copy beside the repository (``../shared/libero-assets``)."""
    candidate = Path(os.environ.get("LIBERO_ASSETS") or REPO_ROOT.parent / "shared" / "libero-assets")
    if not (candidate / "scenes").is_dir():
        pytest.skip(f"LIBERO assets not found at {candidate} (set LIBERO_ASSETS to run the LIBERO tests)")
    return candidate


def record_libero_dataset(
    root: Path, settings, suite: str, tasks: list[int], episodes: int, steps: int, video: bool = False
) -> None:
    """Random-walk episodes of real LIBERO tasks, recorded as the LeRobot LIBERO datasets store them:
    cameras as MP4 video (``lerobot/libero``) or as PNG frames (``HuggingFaceVLA/libero``)."""
    from envs.libero.env import LiberoRolloutEnv, task_key
    from vla_train.data.lerobot_io import DatasetRecorder, image_feature, vector_feature

    size = settings.camera_size
    features = {
        "observation.images.image": image_feature(size, size, video=video),
        "observation.images.image2": image_feature(size, size, video=video),
        "observation.state": vector_feature([f"s{i}" for i in range(8)]),
        "action": vector_feature([f"a{i}" for i in range(7)]),
    }
    rng = np.random.default_rng(0)
    recorder = DatasetRecorder(root, "local/libero", 10, features, robot_type="panda", video=video)
    with recorder:
        for task in tasks:
            env = LiberoRolloutEnv(task_key(suite, task), settings)
            try:
                for episode in range(episodes):
                    observation = env.reset(
                        EpisodeSpec(task_key(suite, task), episode, 7, steps, init_state=episode)
                    )
                    for _ in range(steps):
                        action = np.clip(rng.normal(0, 0.3, 7), -1, 1).astype(np.float32)
                        # the frame the policy's input transform reads back, as the LeRobot datasets hold it
                        frame = env.transforms.frame(observation, env.instruction)
                        task = frame.pop("task")
                        recorder.add_frame({**frame, "action": action}, task=task)
                        observation, _, _ = env.step(action)
                    recorder.save_episode()
            finally:
                env.close()
