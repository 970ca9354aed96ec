"""Writing and reading real LeRobot datasets locally: chunks, padding, statistics, completeness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vla_train.data.cache import InMemoryDataset
from vla_train.data.lerobot_io import (
    DatasetRecorder,
    TransformedDataset,
    dataset_statistics,
    image_feature,
    is_complete,
    load_lerobot_dataset,
    vector_feature,
)

FEATURES = {
    "observation.images.front": image_feature(8, 8),
    "observation.state": vector_feature(["a", "b"]),
    "action": vector_feature(["x", "y", "z"]),
}


def record(root: Path, episode_lengths: list[int]) -> None:
    rng = np.random.default_rng(0)
    with DatasetRecorder(root, "local/unit", fps=10, features=FEATURES) as recorder:
        for episode, length in enumerate(episode_lengths):
            for t in range(length):
                recorder.add_frame(
                    {
                        "observation.images.front": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                        "observation.state": np.array([episode, t], dtype=np.float32),
                        "action": np.array([episode, t, 1.0], dtype=np.float32),
                    },
                    task=f"task {episode}",
                )
            recorder.save_episode()


def test_round_trip_with_action_chunks_and_padding(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    record(root, [5, 7])
    assert is_complete(root)
    dataset = load_lerobot_dataset("local/unit", root, "action", chunk_size=4)
    assert len(dataset) == 12
    last_of_first = dataset[3]  # frame 3 of a 5-frame episode: steps 3, 4, then padding
    assert last_of_first["action"].shape == (4, 3)
    assert last_of_first["action"][:, 1].tolist() == [3.0, 4.0, 4.0, 4.0]
    assert last_of_first["action_is_pad"].tolist() == [False, False, True, True]
    assert last_of_first["task"] == "task 0"
    image = dataset[0]["observation.images.front"]
    assert image.shape == (3, 8, 8) and image.min() >= 0.0 and image.max() <= 1.0
    stats = dataset_statistics(dataset, ["observation.state", "action"])
    assert torch.allclose(stats["action"]["max"], torch.tensor([1.0, 6.0, 1.0]))
    assert stats["observation.state"]["mean"].shape == (2,)
    with pytest.raises(KeyError, match=r"observation\.velocity"):
        dataset_statistics(dataset, ["observation.velocity"])
    with pytest.raises(KeyError, match="has no feature 'actions'"):
        load_lerobot_dataset("local/unit", root, "actions", chunk_size=4)


def test_episode_selection_and_in_memory_cache(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    record(root, [3, 4])
    second = load_lerobot_dataset("local/unit", root, "action", chunk_size=2, episodes=[1])
    assert len(second) == 4 and int(second[0]["episode_index"]) == 1

    def to_policy(frame):
        return {"images": frame["observation.images.front"].unsqueeze(0), "state": frame["observation.state"]}

    transformed = TransformedDataset(second, to_policy)
    cached = InMemoryDataset(transformed)
    for i in range(len(cached)):
        # PNG is lossless and the cache stores uint8: exact
        assert torch.equal(cached[i]["images"], transformed[i]["images"])
        assert torch.equal(cached[i]["state"], transformed[i]["state"])


def test_recorder_refuses_to_overwrite_and_marks_incomplete_data(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    record(root, [2])
    with pytest.raises(FileExistsError, match="overwrite"):
        DatasetRecorder(root, "local/unit", fps=10, features=FEATURES)
    empty = tmp_path / "empty"
    with DatasetRecorder(empty, "local/unit", fps=10, features=FEATURES):
        pass
    assert not is_complete(empty)
