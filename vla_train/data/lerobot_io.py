"""Read and write LeRobot datasets (format v3.0, lerobot 0.4.x) by hub id or local root.

Reading: ``delta_timestamps`` turns each frame's action into the chunk of the next ``chunk_size``
actions, with ``action_is_pad`` past the episode end, exactly as lerobot's own policies train.
Writing: the recorder used by demonstration generators and converters, in the same format that the
published LIBERO and DROID datasets use, so local and hub data go through one code path.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

# torchcodec needs system FFmpeg libraries that a plain pip install does not bring; PyAV ships its own.
VIDEO_BACKEND = "pyav"


def _quiet_datasets() -> None:
    """`datasets` draws a progress bar per saved episode; ours (per episode, per epoch) is enough."""
    import datasets

    datasets.disable_progress_bars()


def load_lerobot_dataset(
    repo_id: str,
    root: str | Path | None,
    action_key: str,
    chunk_size: int,
    episodes: Sequence[int] | None = None,
):
    """A ``LeRobotDataset`` whose ``action_key`` is a ``(chunk_size, A)`` chunk per frame.

    ``root`` set: read that local directory (no hub access when it is complete). ``root`` unset:
    the hub id ``repo_id``, cached under ``$HF_LEROBOT_HOME``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    _quiet_datasets()
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    if action_key not in meta.features:
        raise KeyError(f"dataset {repo_id} has no feature {action_key!r}; it has {sorted(meta.features)}")
    delta_timestamps = {action_key: [i / meta.fps for i in range(chunk_size)]}
    return LeRobotDataset(
        repo_id,
        root=root,
        episodes=list(episodes) if episodes is not None else None,
        delta_timestamps=delta_timestamps,
        video_backend=VIDEO_BACKEND,
    )


def dataset_statistics(dataset, keys: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """``{key: {"mean", "std", "min", "max", "q01", "q99", …}}`` as float tensors, from ``meta.stats``."""
    stats = {}
    for key in keys:
        if key not in dataset.meta.stats:
            raise KeyError(f"dataset statistics lack {key!r}; available: {sorted(dataset.meta.stats)}")
        stats[key] = {
            name: torch.as_tensor(np.asarray(value), dtype=torch.float32)
            for name, value in dataset.meta.stats[key].items()
        }
    return stats


class TransformedDataset(Dataset):
    """Frames of a dataset mapped through an environment's training transform."""

    def __init__(self, frames: Dataset, transform: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        self.frames, self.transform = frames, transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(self.frames[index])


def image_feature(height: int, width: int, video: bool = False) -> dict[str, Any]:
    """Feature spec of an HWC uint8 camera (lerobot needs the ``channels`` name to convert to CHW)."""
    return {
        "dtype": "video" if video else "image",
        "shape": (height, width, 3),
        "names": ["height", "width", "channels"],
    }


def vector_feature(names: Sequence[str]) -> dict[str, Any]:
    return {"dtype": "float32", "shape": (len(names),), "names": list(names)}


class DatasetRecorder:
    """Writes episodes to a new local LeRobot dataset; ``with`` closes it (finalize) even on error.

    An interrupted recording keeps its saved episodes, and the dataset is only marked complete (a
    ``.complete`` file) once :meth:`close` ran, so a half-written dataset is never mistaken for a
    finished one.
    """

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        fps: int,
        features: Mapping[str, Any],
        robot_type: str | None = None,
        video: bool = False,
        overwrite: bool = False,
    ) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        _quiet_datasets()
        self.root = Path(root)
        if self.root.exists():
            if not overwrite:
                raise FileExistsError(f"{self.root} exists; choose another root or pass overwrite=True")
            shutil.rmtree(self.root)
        self.dataset = LeRobotDataset.create(
            repo_id=repo_id,
            fps=fps,
            features=dict(features),
            root=self.root,
            robot_type=robot_type,
            use_videos=video,
            image_writer_threads=0,
        )
        self.episodes = 0

    def add_frame(self, frame: Mapping[str, Any], task: str) -> None:
        self.dataset.add_frame({**frame, "task": task})

    def save_episode(self) -> None:
        self.dataset.save_episode()
        self.episodes += 1

    def discard_episode(self) -> None:
        self.dataset.clear_episode_buffer()

    def close(self) -> None:
        self.dataset.finalize()
        if self.episodes:
            (self.root / ".complete").touch()

    def __enter__(self) -> DatasetRecorder:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def is_complete(root: str | Path) -> bool:
    return (Path(root) / ".complete").is_file()
