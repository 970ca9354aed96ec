"""Checks of a local LeRobot dataset (``env.dataset.root``) before lerobot reads it.

lerobot treats a local directory as a cache of the hub: a file it cannot find (or an episode its data
lacks) is fetched from the hub under the dataset's id, and a file it cannot parse fails deep inside
``datasets`` or ``pyarrow`` without the file's name. A local dataset is read as it is: these checks name
the missing, unreadable or inconsistent file and what was expected, and :func:`reading_local_dataset`
keeps the hub out of reach while lerobot reads it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

INFO_FILE = "meta/info.json"
TASKS_FILE = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
#: what lerobot reads from ``meta/info.json`` before anything else
INFO_KEYS = ("codebase_version", "fps", "total_episodes", "features", "data_path")
REMEDY = "re-record or re-convert it, or unset its root to use the hub id"


class LocalDatasetError(ValueError):
    """A local dataset is incomplete, unreadable or inconsistent with its own metadata."""


def check_local_files(root: Path, relative_paths: Sequence[str]) -> None:
    """Raise naming the first missing file of a local dataset (one is never completed from the hub)."""
    if not root.is_dir():
        raise FileNotFoundError(f"local dataset {root}: no such directory")
    for relative in relative_paths:
        if not (root / relative).exists():
            raise FileNotFoundError(
                f"local dataset {root} lacks {root / relative}; a local dataset is read as it is, never "
                f"completed from the hub ({REMEDY})"
            )


def check_local_metadata(root: Path) -> dict[str, Any]:
    """Everything under ``root/meta`` that lerobot reads is there and parses; returns ``info.json``.

    Raises :class:`FileNotFoundError` naming a missing file, :class:`LocalDatasetError` naming an
    unreadable one.
    """
    check_local_files(root, (INFO_FILE, TASKS_FILE, EPISODES_DIR))
    info_file = root / INFO_FILE
    try:
        info = json.loads(info_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LocalDatasetError(f"{info_file} is not a readable JSON file ({error}); {REMEDY}") from error
    if not isinstance(info, dict):
        raise LocalDatasetError(f"{info_file} holds a JSON {type(info).__name__}, not an object; {REMEDY}")
    absent = [key for key in INFO_KEYS if key not in info]
    if absent:
        raise LocalDatasetError(f"{info_file} lacks the keys {absent} of a LeRobot dataset; {REMEDY}")
    features = info["features"]
    malformed = (
        [key for key, spec in features.items() if not _is_feature_spec(spec)]
        if isinstance(features, dict)
        else ["features"]
    )
    if malformed:
        raise LocalDatasetError(
            f"{info_file}: features {malformed} are not of the form "
            '{"dtype": <str>, "shape": [<int>, ...]}; ' + REMEDY
        )
    if not isinstance(info["total_episodes"], int) or isinstance(info["total_episodes"], bool):
        raise LocalDatasetError(f"{info_file}: total_episodes={info['total_episodes']!r} is not an integer")
    episodes_files = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not episodes_files:
        raise FileNotFoundError(
            f"local dataset {root} lacks its episodes metadata: {root / EPISODES_DIR} holds no "
            f"chunk-*/file-*.parquet (e.g. {root / EPISODES_DIR / 'chunk-000' / 'file-000.parquet'}); a "
            f"local dataset is read as it is, never completed from the hub ({REMEDY})"
        )
    for parquet in [root / TASKS_FILE, *episodes_files]:
        parquet_schema(parquet)
    return info


def check_episode_count(root: Path, meta: Any) -> None:
    """``total_episodes`` of ``meta/info.json`` is the number of episodes the episodes metadata
    describes (lerobot would fetch the ones its data lacks). ``meta``: lerobot's
    ``LeRobotDatasetMetadata`` of ``root``."""
    listed = len(meta.episodes)
    if meta.total_episodes != listed:
        raise LocalDatasetError(
            f"{root / INFO_FILE}: total_episodes={meta.total_episodes}, but {root / EPISODES_DIR} "
            f"describes {listed} episodes; {REMEDY}"
        )


def check_local_episodes(root: Path, meta: Any, episodes: Sequence[int] | None) -> None:
    """The data and video files of ``episodes`` (all when None) exist, and the data files hold the
    columns ``meta/info.json`` declares, with its vector lengths. ``meta``: lerobot's
    ``LeRobotDatasetMetadata`` of ``root``."""
    info_file = root / INFO_FILE
    chosen = range(meta.total_episodes) if episodes is None else episodes
    data_files = sorted({str(meta.get_data_file_path(e)) for e in chosen})
    videos = {str(meta.get_video_file_path(e, key)) for e in chosen for key in meta.video_keys}
    check_local_files(root, [*data_files, *sorted(videos)])
    expected = _expected_schema(meta.features)
    for relative in data_files:
        data_file = root / relative
        stored = parquet_schema(data_file)
        missing = [name for name in expected.names if name not in stored.names]
        extra = [name for name in stored.names if name not in expected.names]
        differences = [f"features {missing} are declared but not stored"] if missing else []
        differences += [f"columns {extra} are stored but not declared"] if extra else []
        if differences:
            raise LocalDatasetError(
                f"{info_file} does not describe {data_file}: {'; '.join(differences)}; {REMEDY}"
            )
        for name in expected.names:  # other type differences (float64 for float32, …) lerobot casts
            declared, found = expected.field(name).type, stored.field(name).type
            lengths = {_vector_length(declared), _vector_length(found)}
            if None not in lengths and len(lengths) > 1:
                raise LocalDatasetError(
                    f"{info_file} declares {name!r} with shape {list(meta.features[name]['shape'])} "
                    f"({declared}), but {data_file} stores {found}; {REMEDY}"
                )


def parquet_schema(path: Path) -> Any:
    """The Arrow schema of a parquet file, read from its footer (a truncated file fails here)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise LocalDatasetError(
            f"{path} is not a readable parquet file ({error}); the local dataset is damaged: {REMEDY}"
        ) from error


@contextlib.contextmanager
def reading_local_dataset(root: Path | None) -> Iterator[None]:
    """While lerobot reads the local dataset ``root``: the hub is out of reach (lerobot would fetch
    what it finds missing), and any failure is re-raised naming ``root``. Nothing when ``root`` is None
    (a hub dataset)."""
    if root is None:
        yield
        return
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read by every hub request; the env variable only at import
    try:
        yield
    except LocalDatasetError:
        raise
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise LocalDatasetError(
            f"local dataset {root} cannot be read ({type(error).__name__}: {first_line}); it was read as "
            f"it is, never completed from the hub: {REMEDY}"
        ) from error
    finally:
        constants.HF_HUB_OFFLINE = offline


def _is_feature_spec(spec: Any) -> bool:
    return (
        isinstance(spec, dict)
        and isinstance(spec.get("dtype"), str)
        and isinstance(spec.get("shape"), list | tuple)
        and all(isinstance(size, int) and not isinstance(size, bool) for size in spec["shape"])
    )


def _vector_length(arrow_type: Any) -> int | None:
    """The length of a fixed-size vector column (a 1-D feature's shape), None for other types."""
    import pyarrow as pa

    return arrow_type.list_size if pa.types.is_fixed_size_list(arrow_type) else None


def _expected_schema(features: dict[str, Any]) -> Any:
    """The Arrow schema lerobot reads the data files with (video features live in video files)."""
    from lerobot.datasets.utils import get_hf_features_from_features

    return get_hf_features_from_features(features).arrow_schema
