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
    check_finite_values,
    dataset_lock,
    dataset_statistics,
    image_feature,
    is_complete,
    load_lerobot_dataset,
    vector_feature,
)
from vla_train.data.local_dataset import LocalDatasetError, reading_local_dataset

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


def test_state_history_repeats_the_first_state_before_an_episode_start(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    record(root, [5, 7])
    dataset = load_lerobot_dataset(
        "local/unit", root, "action", chunk_size=4, state_key="observation.state", state_history=3
    )
    start, later, second_episode = dataset[1], dataset[4], dataset[5]
    assert start["observation.state"].shape == (3, 2)
    assert start["observation.state"][:, 1].tolist() == [0.0, 0.0, 1.0]  # t−2, t−1 clamped to t = 0
    assert later["observation.state"][:, 1].tolist() == [2.0, 3.0, 4.0]  # the current state last
    assert second_episode["observation.state"].tolist() == [[1.0, 0.0]] * 3  # never the last episode's
    assert later["action"][:, 1].tolist() == [4.0, 4.0, 4.0, 4.0]  # the action chunk as without history


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


def test_recorder_never_touches_an_existing_directory(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    record(root, [2])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(FileExistsError, match=r"is a complete dataset.*nothing was changed"):
        DatasetRecorder(root, "local/unit", fps=10, features=FEATURES)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before

    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not an empty directory.*nothing was changed"):
        DatasetRecorder(users, "local/unit", fps=10, features=FEATURES)
    assert [p.name for p in users.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"  # an empty directory holds nothing to lose: it becomes the dataset
    empty.mkdir()
    record(empty, [2])
    assert is_complete(empty)


def test_an_interrupted_or_empty_recording_never_looks_complete(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    frame = {
        "observation.images.front": np.zeros((8, 8, 3), np.uint8),
        "observation.state": np.zeros(2, np.float32),
        "action": np.zeros(3, np.float32),
    }
    with pytest.raises(KeyboardInterrupt), DatasetRecorder(root, "local/unit", 10, FEATURES) as recorder:
        for _ in range(3):
            recorder.add_frame(frame, task="t")
        recorder.save_episode()  # one episode saved, then Ctrl-C
        raise KeyboardInterrupt
    assert not root.exists()  # the saved episode stays in the staging directory, which is ours
    staging = tmp_path / ".ds.recording"
    assert staging.is_dir()
    record(root, [2, 3])  # the next recording clears it and finishes
    assert is_complete(root) and not staging.exists()
    assert len(load_lerobot_dataset("local/unit", root, "action", chunk_size=2)) == 5

    with DatasetRecorder(tmp_path / "none", "local/unit", fps=10, features=FEATURES):
        pass  # no episode
    assert not (tmp_path / "none").exists()


def test_a_staging_directory_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / ".ds.recording"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not made by vla-train"):
        DatasetRecorder(tmp_path / "ds", "local/unit", fps=10, features=FEATURES)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_damaged_local_dataset_is_named_and_never_completed_from_the_hub(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ds"
    record(root, [3, 4])
    with pytest.raises(ValueError, match=r"env\.dataset\.episodes=\[0, 7\]: dataset .*has episodes 0…1"):
        load_lerobot_dataset("local/unit", root, "action", chunk_size=2, episodes=[0, 7])
    data_file = next((root / "data").rglob("*.parquet"))
    data_file.unlink()
    with pytest.raises(FileNotFoundError, match=rf"lacks {data_file}.*never completed from the hub"):
        load_lerobot_dataset("local/unit", root, "action", chunk_size=2)
    shutil.rmtree(root / "meta" / "episodes")
    with pytest.raises(FileNotFoundError, match=r"lacks .*meta/episodes"):
        load_lerobot_dataset("local/unit", root, "action", chunk_size=2)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_lerobot_dataset("local/unit", tmp_path / "nope", "action", chunk_size=2)


def test_a_symlinked_target_is_refused_and_concurrent_recorders_are_serialized(tmp_path: Path) -> None:
    import fcntl

    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "ds"
    link.symlink_to(target)
    with pytest.raises(FileExistsError, match="symbolic link"):
        DatasetRecorder(link, "local/unit", fps=10, features=FEATURES)
    assert link.is_symlink() and not any(target.iterdir())

    root = tmp_path / "shared"
    # another job's attempt waits while the lock is held (here, non-blocking: it fails at once)
    with (
        dataset_lock(root),
        (tmp_path / ".shared.lock").open("a") as other_process,
        pytest.raises(BlockingIOError),
    ):
        fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with (tmp_path / ".shared.lock").open("a") as after:
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_non_finite_values_in_a_dataset_are_named(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetRecorder(root, "local/unit", fps=10, features=FEATURES) as recorder:
        for t in range(3):
            action = np.array([0.0, float("nan") if t == 1 else 0.0, 1.0], np.float32)
            recorder.add_frame(
                {
                    "observation.images.front": np.zeros((8, 8, 3), np.uint8),
                    "observation.state": np.zeros(2, np.float32),
                    "action": action,
                },
                task="t",
            )
        recorder.save_episode()
    dataset = load_lerobot_dataset("local/unit", root, "action", chunk_size=2)
    assert dataset_statistics(dataset, ["observation.state"])  # finite
    with pytest.raises(ValueError, match=r"action holds non-finite values"):
        dataset_statistics(dataset, ["action"])
    check_finite_values(dataset, ["observation.state"])
    with pytest.raises(ValueError, match=r"action holds non-finite values .* first in episode 0, frame 1"):
        check_finite_values(dataset, ["action"])

    # statistics written before the NaN (or by a tool that skips them): the data itself is read
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_file = next((root / "data").rglob("*.parquet"))
    table = pq.read_table(data_file)
    clean = pa.array([[0.0, 0.0, 1.0]] * table.num_rows, type=table.schema.field("action").type)
    table = table.set_column(table.schema.get_field_index("action"), "action", clean)
    pq.write_table(table, data_file)
    check_finite_values(load_lerobot_dataset("local/unit", root, "action", chunk_size=2), ["action"])
    state = table.column("observation.state").to_pylist()
    state[2][1] = float("inf")
    column = pa.array(state, type=table.schema.field("observation.state").type)
    pq.write_table(
        table.set_column(table.schema.get_field_index("observation.state"), "observation.state", column),
        data_file,
    )
    dataset = load_lerobot_dataset("local/unit", root, "action", chunk_size=2)
    assert dataset_statistics(dataset, ["observation.state"])  # stats.json still says finite
    with pytest.raises(ValueError, match=r"observation\.state holds non-finite values .* episode 0, frame 2"):
        check_finite_values(dataset, ["observation.state"])


def test_a_corrupted_local_dataset_names_its_file_and_never_reaches_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil
    import socket

    connections: list[object] = []  # lerobot falls back to the hub for what it cannot read locally
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connections.append(address))
    original = tmp_path / "original"
    record(original, [3, 4])

    def corrupted(name: str, corrupt) -> Path:
        root = tmp_path / name
        shutil.copytree(original, root)
        corrupt(root)
        return root

    def edit_info(edit):
        def corrupt(root: Path) -> None:
            info = json.loads((root / "meta/info.json").read_text())
            edit(info)
            (root / "meta/info.json").write_text(json.dumps(info))

        return corrupt

    data_file = "data/chunk-000/file-000.parquet"
    episodes_file = "meta/episodes/chunk-000/file-000.parquet"
    cases = [
        (
            "truncated_data",
            lambda root: (root / data_file).write_bytes((root / data_file).read_bytes()[:300]),
            LocalDatasetError,
            rf"{data_file} is not a readable parquet file",
        ),
        (
            "truncated_episodes",
            lambda root: (root / episodes_file).write_bytes((root / episodes_file).read_bytes()[:300]),
            LocalDatasetError,
            rf"{episodes_file} is not a readable parquet file",
        ),
        (
            "no_episodes_metadata",
            lambda root: (root / episodes_file).unlink(),
            FileNotFoundError,
            r"lacks its episodes metadata: .*meta/episodes holds no chunk-\*/file-\*\.parquet",
        ),
        (
            "info_not_json",
            lambda root: (root / "meta/info.json").write_text("{fps: 20"),
            LocalDatasetError,
            r"meta/info\.json is not a readable JSON file",
        ),
        (
            "info_without_features",
            edit_info(lambda info: info.pop("features")),
            LocalDatasetError,
            r"meta/info\.json lacks the keys \['features'\]",
        ),
        (
            "state_shape",
            edit_info(lambda info: info["features"]["observation.state"].update(shape=[3])),
            LocalDatasetError,
            rf"info\.json declares 'observation\.state' with shape \[3\] .*but .*{data_file} stores",
        ),
        (
            "no_camera",
            edit_info(lambda info: info["features"].pop("observation.images.front")),
            LocalDatasetError,
            rf"info\.json does not describe .*{data_file}: columns \['observation\.images\.front'\] "
            "are stored but not declared",
        ),
        (
            "total_episodes",
            edit_info(lambda info: info.update(total_episodes=5)),
            LocalDatasetError,
            r"info\.json: total_episodes=5, but .*meta/episodes describes 2 episodes",
        ),
    ]
    for name, corrupt, error, message in cases:
        root = corrupted(name, corrupt)
        with pytest.raises(error, match=rf"{tmp_path / name}.*{message}"):
            load_lerobot_dataset("local/unit", root, "action", chunk_size=2)
    assert connections == []
    assert len(load_lerobot_dataset("local/unit", original, "action", chunk_size=2)) == 7


def test_lerobot_failures_on_a_local_dataset_are_named_and_offline(tmp_path: Path) -> None:
    from huggingface_hub import HfApi, constants

    before = constants.HF_HUB_OFFLINE
    with (
        pytest.raises(
            LocalDatasetError, match=rf"local dataset {tmp_path} cannot be read \(OfflineModeIsEnabled"
        ),
        reading_local_dataset(tmp_path),
    ):
        HfApi().list_repo_refs("local/unit", repo_type="dataset")  # what lerobot calls before a download
    assert before == constants.HF_HUB_OFFLINE


def test_a_hub_dataset_that_cannot_be_fetched_names_the_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants
    from lerobot.datasets import lerobot_dataset

    monkeypatch.setattr(lerobot_dataset, "HF_LEROBOT_HOME", tmp_path)  # its cache, empty
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        OSError, match=r"env\.dataset\.repo_id=local/absent cannot be fetched .*env\.dataset\.root is unset"
    ):
        load_lerobot_dataset("local/absent", None, "action", chunk_size=2)
