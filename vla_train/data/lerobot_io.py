"""Read and write LeRobot datasets (format v3.0, lerobot 0.4.x) by hub id or local root.

Reading: ``delta_timestamps`` turns each frame's action into the chunk of the next ``chunk_size``
actions, with ``action_is_pad`` past the episode end, exactly as lerobot's own policies train.
Writing: the recorder used by demonstration generators and converters, in the same format that the
published LIBERO and DROID datasets use, so local and hub data go through one code path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vla_train.data.local_dataset import (
    check_episode_count,
    check_local_episodes,
    check_local_metadata,
    reading_local_dataset,
)

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
    state_key: str | None = None,
    state_history: int = 1,
):
    """A ``LeRobotDataset`` whose ``action_key`` is a ``(chunk_size, A)`` chunk per frame, and, with
    ``state_history`` > 1, whose ``state_key`` is ``(state_history, S)``: the current state last, the
    episode's first state repeated before its start (lerobot clamps to the episode).

    ``root`` set: read that local directory as it is, never the hub; a missing, unreadable or
    inconsistent file is named (:mod:`vla_train.data.local_dataset`). ``root`` unset: the hub id
    ``repo_id``, cached under ``$HF_LEROBOT_HOME``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    _quiet_datasets()
    root = Path(root) if root is not None else None
    if root is not None:
        check_local_metadata(root)
    with reading_local_dataset(root), _fetching_from_hub(repo_id, root):
        meta = LeRobotDatasetMetadata(repo_id, root=root)
    if root is not None:
        check_episode_count(root, meta)
    if episodes is not None:
        outside = [e for e in episodes if not 0 <= e < meta.total_episodes]
        if outside or not episodes:
            raise ValueError(
                f"env.dataset.episodes={list(episodes)}: dataset {root or repo_id} has episodes "
                f"0…{meta.total_episodes - 1}"
            )
    if root is not None:  # lerobot would fetch a missing file from the hub instead of naming it
        check_local_episodes(root, meta, episodes)
    if action_key not in meta.features:
        raise KeyError(f"dataset {repo_id} has no feature {action_key!r}; it has {sorted(meta.features)}")
    delta_timestamps = {action_key: [i / meta.fps for i in range(chunk_size)]}
    if state_history > 1:
        delta_timestamps[state_key] = [(i - state_history + 1) / meta.fps for i in range(state_history)]
    with reading_local_dataset(root), _fetching_from_hub(repo_id, root):
        return LeRobotDataset(
            repo_id,
            root=root,
            episodes=list(episodes) if episodes is not None else None,
            delta_timestamps=delta_timestamps,
            video_backend=VIDEO_BACKEND,
        )


@contextlib.contextmanager
def _fetching_from_hub(repo_id: str, root: Path | None) -> Iterator[None]:
    """A hub dataset that cannot be fetched (offline, no such repository, no network): named with the
    key that chose the hub over a local directory."""
    if root is not None:
        yield
        return
    try:
        yield
    except OSError as error:  # requests' and huggingface_hub's errors are OSErrors
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise OSError(
            f"env.dataset.repo_id={repo_id} cannot be fetched from the hub ({type(error).__name__}: "
            f"{first_line}); env.dataset.root is unset, so the hub dataset is read: set env.dataset.root to "
            "a local dataset directory to train on one"
        ) from error


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
        broken = [name for name, value in stats[key].items() if not value.isfinite().all()]
        if broken:  # lerobot's statistics of a feature that holds NaN or inf somewhere
            raise ValueError(
                f"dataset {dataset.root}: {key} holds non-finite values (its {broken} statistics are not "
                "finite); clean or re-record the dataset"
            )
    return stats


def check_finite_values(dataset, keys: Sequence[str]) -> None:
    """Every value of ``keys`` (state, action) is finite, named by episode and frame where one is not.

    lerobot's statistics are read from ``meta/stats.json``, so a NaN written into the data after they
    were computed (or by a tool that skips them) would be trained on: a NaN loss each time its chunk is
    drawn, reported as divergence. Read column-wise from the memory-mapped Arrow table: about a second
    for DROID's 27 M frames, without copying it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.hf_dataset.data.table  # the frames of the chosen episodes only
    for key in keys:
        start = 0
        for chunk in table.column(key).chunks:
            nested = pa.types.is_list(chunk.type) or pa.types.is_fixed_size_list(chunk.type)
            finite = pc.is_finite(pc.list_flatten(chunk) if nested else chunk)
            if not pc.all(finite).as_py():
                first = pc.index(finite, False).as_py()
                row = start + (pc.list_parent_indices(chunk)[first].as_py() if nested else first)
                episode, frame = (
                    table.column(name)[row].as_py() for name in ("episode_index", "frame_index")
                )
                raise ValueError(
                    f"dataset {dataset.root}: {key} holds non-finite values (NaN or infinity), first in "
                    f"episode {episode}, frame {frame}; clean or re-record the dataset, or leave that "
                    "episode out (env.dataset.episodes)"
                )
            start += len(chunk)


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


#: marks a finished dataset of ours; written last, just before the dataset is moved into place
COMPLETE_MARKER = ".complete"
#: marks a staging directory as the recorder's own, so a stale one may be removed
STAGING_MARKER = ".vla-train-staging"


class DatasetRecorder:
    """Writes episodes to a new local LeRobot dataset at ``root``; ``with`` finishes it.

    Nothing at ``root`` is ever removed or overwritten: a ``root`` that exists and is not an empty
    directory is refused before anything is written. Episodes go to a staging directory beside it
    (``.<name>.recording``); only a recording that ends without an error, with at least one episode,
    is marked complete and renamed to ``root``. An interrupted or failed recording therefore never
    looks finished; its staging directory is ours and is cleared by the next recording. Callers that
    may run at the same time as another recording of ``root`` hold :func:`dataset_lock` around it.
    """

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        fps: int,
        features: Mapping[str, Any],
        robot_type: str | None = None,
        video: bool = False,
    ) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        _quiet_datasets()
        self.root = Path(root)
        refuse_existing(self.root)
        self.staging = self.root.parent / f".{self.root.name}.recording"
        if self.staging.exists():
            if not (self.staging / STAGING_MARKER).is_file():
                raise FileExistsError(
                    f"{self.staging} exists and was not made by vla-train; nothing was changed. Move it "
                    f"away to record a dataset at {self.root}"
                )
            shutil.rmtree(self.staging)  # an interrupted recording of ours
        self.staging.mkdir(parents=True)
        (self.staging / STAGING_MARKER).touch()
        self.dataset = LeRobotDataset.create(
            repo_id=repo_id,
            fps=fps,
            features=dict(features),
            root=self.staging / "dataset",
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

    def close(self, succeeded: bool = True) -> bool:
        """Finish the files; move a successful, non-empty recording to ``root``. Returns whether it did."""
        try:
            self.dataset.finalize()
        except Exception:
            if succeeded:
                raise  # otherwise the error that stopped the recording is the one to report
        if not (succeeded and self.episodes):
            return False
        recorded = self.staging / "dataset"
        (recorded / COMPLETE_MARKER).touch()
        refuse_existing(self.root)  # nothing may have appeared there while recording
        if self.root.is_dir():
            self.root.rmdir()  # empty, checked above
        recorded.rename(self.root)
        shutil.rmtree(self.staging)  # now only our marker
        return True

    def __enter__(self) -> DatasetRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: Any) -> None:
        self.close(succeeded=exc_type is None)


@contextlib.contextmanager
def dataset_lock(root: str | Path) -> Iterator[None]:
    """The exclusive right to check and record ``root`` among processes (the jobs of a joblib sweep
    share one dataset root): an advisory ``flock`` on ``.<name>.lock`` beside it, a file of ours."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{root.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_existing(root: Path, key: str | None = None) -> None:
    """Raise unless ``root`` is free for a new dataset: absent, or an empty directory.

    ``key`` names the config field or argument that chose ``root``, for the message.
    """
    where = f"{key}={root}" if key else str(root)
    if root.is_symlink():  # the recording is staged beside the link, then renamed over it: refuse
        raise FileExistsError(f"{where} is a symbolic link; nothing was changed. Point at its target instead")
    if os.path.ismount(root):
        raise FileExistsError(f"{where} is a mount point; nothing was changed. Choose a directory inside it")
    if root.is_dir() and not any(root.iterdir()):
        return
    if root.exists() or root.is_symlink():
        what = (
            "a complete dataset"
            if is_complete(root)
            else f"not an empty directory nor a dataset recorded by vla-train (no {COMPLETE_MARKER} file)"
        )
        raise FileExistsError(
            f"{where} exists and is {what}, so no dataset is recorded there; "
            "nothing was changed. Choose a new directory"
        )


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` is a dataset that a :class:`DatasetRecorder` finished."""
    return (Path(root) / COMPLETE_MARKER).is_file()
