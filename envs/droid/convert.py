"""DROID raw episodes → a LeRobot dataset in the layout ``env=droid`` trains on.

Features (15 fps): ``observation.images.{exterior_1_left, exterior_2_left, wrist_left}`` resized to
320×180 as DROID's LeRobot ports store them, ``observation.state`` (joint positions 7 + gripper by
default, or the end-effector pose 6 + gripper), ``action`` (joint velocities 7 + gripper position by
default: the action space π0.5-DROID was trained in; or joint positions, or cartesian velocities or
positions: :mod:`envs.droid.spaces`), and the instruction as the task. Only successful episodes are
kept unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from envs.droid import spaces
from envs.droid.raw import find_episodes, find_incomplete_episodes, read_annotations, read_episode
from vla_train.data.lerobot_io import (
    DatasetRecorder,
    dataset_lock,
    image_feature,
    refuse_existing,
    vector_feature,
)
from vla_train.progress import progress_bar

FPS = 15
IMAGE_WIDTH, IMAGE_HEIGHT = 320, 180
CAMERAS = ("exterior_1_left", "exterior_2_left", "wrist_left")


def convert(
    raw_root: str | Path,
    output: str | Path,
    repo_id: str = "local/droid",
    annotations: str | Path | None = None,
    include_failures: bool = False,
    cameras: Sequence[str] = CAMERAS,
    state_space: str = "joint",
    action_space: str = "joint_velocity",
) -> int:
    """Convert every episode below ``raw_root``; returns how many were written.

    ``output`` must not exist yet (or be an empty directory); it appears only once every episode is
    converted, so a failed or interrupted conversion leaves nothing that looks like a dataset. An
    episode directory that lost its ``trajectory.h5`` is refused rather than left out unnoticed, and so
    are non-finite states or actions (:mod:`envs.droid.raw`).
    """
    spaces.check(state_space, action_space)
    refuse_existing(Path(output), key="output")
    labels = read_annotations(annotations) if annotations else None
    incomplete = [
        path for path in find_incomplete_episodes(raw_root) if include_failures or "failure" not in path.parts
    ]
    found = find_episodes(raw_root)
    if incomplete:  # converting the others silently would drop these episodes from the dataset
        raise FileNotFoundError(
            f"{incomplete[0]} holds a DROID episode's files but no trajectory.h5"
            + (f" (and {len(incomplete) - 1} more such directories)" if len(incomplete) > 1 else "")
            + f"; restore it, or move the directory out of {raw_root} to convert the other episodes"
            + ("" if found else f" ({raw_root} holds no complete episode)")
        )
    episodes = [read_episode(path, labels) for path in found]
    if not include_failures:
        episodes = [e for e in episodes if e.success is not False and "failure" not in e.path.parts]
    if not episodes:
        raise FileNotFoundError(
            f"no {'' if include_failures else 'successful '}DROID episode below {raw_root}"
        )
    recorded = [c for c in cameras if all(c in e.cameras for e in episodes)]
    features = {f"observation.images.{c}": image_feature(IMAGE_HEIGHT, IMAGE_WIDTH) for c in recorded}
    features["observation.state"] = vector_feature(spaces.state_names(state_space))
    features["action"] = vector_feature(spaces.action_names(action_space))
    # locked: two conversions into one output never share its staging directory
    with (
        dataset_lock(output),
        DatasetRecorder(output, repo_id, FPS, features, robot_type="panda") as recorder,
        progress_bar(len(episodes), f"DROID → {output}", unit="episode") as progress,
    ):
        for episode in episodes:
            for step in episode.steps(state_space, action_space):
                frame = {f"observation.images.{c}": _resize(step.images[c]) for c in recorded}
                frame["observation.state"] = step.state(state_space)
                frame["action"] = step.action(action_space)
                recorder.add_frame(frame, task=episode.instruction or "do something")
            recorder.save_episode()
            progress.update(1)
    return len(episodes)


def _resize(image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == (IMAGE_HEIGHT, IMAGE_WIDTH):
        return image
    return np.asarray(Image.fromarray(image).resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.BICUBIC))
