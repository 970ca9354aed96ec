"""Read DROID's raw recordings: ``trajectory.h5`` + ``recordings/MP4/<serial>.mp4`` per episode.

Layout (droid-dataset/droid): per-step datasets of shape ``(T, …)`` under ``observation/robot_state``
and ``action``; ``observation/camera_type/<serial>`` is 0 for the wrist camera and 1 for exterior
ones; ``<serial>.mp4`` holds the left view, frame ``i`` recorded at control step ``i`` (15 Hz; the
container's frame rate is not trusted). The instruction comes from DROID's aggregated annotations
(keyed by the episode uuid) when given, else the collector's ``current_task``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.droid.spaces import ACTION_SPACES, STATE_SPACES

WRIST, EXTERIOR = 0, 1
#: the instruction read from an episode's entry in DROID's aggregated annotations
INSTRUCTION_KEY = "language_instruction1"


@dataclass
class DroidStep:
    images: dict[str, np.ndarray]  # exterior_1_left, exterior_2_left (when recorded), wrist_left: HWC uint8
    states: dict[str, np.ndarray]  # by state space (envs.droid.spaces): joint (7,), cartesian (6,)
    gripper_position: np.ndarray  # (1,)
    actions: dict[str, np.ndarray]  # by action space: the arm command; the gripper target is separate
    gripper_target: np.ndarray  # (1,)

    @property
    def joint_position(self) -> np.ndarray:
        return self.states["joint"]

    def state(self, space: str) -> np.ndarray:
        """The state vector of ``space``, gripper last."""
        if space not in self.states:
            raise KeyError(f"this recording has no {STATE_SPACES[space][0]} (state space {space!r})")
        return np.concatenate([self.states[space], self.gripper_position])

    def action(self, space: str = "joint_velocity") -> np.ndarray:
        """The action vector of ``space``, gripper target last."""
        if space not in self.actions:
            raise KeyError(f"this recording has no action/{space}; it has {sorted(self.actions)}")
        return np.concatenate([self.actions[space], self.gripper_target])


@dataclass
class DroidEpisode:
    path: Path
    uuid: str
    instruction: str
    success: bool | None
    length: int
    cameras: dict[str, str]  # our camera name → serial

    def steps(self, state_space: str | None = None, action_space: str | None = None) -> Iterator[DroidStep]:
        """The episode's steps; with ``state_space``/``action_space`` given, only those (and the gripper)
        must cover the whole episode, and other spaces recorded shorter are left out."""
        import h5py

        frames = {
            name: _decode(self.path / "recordings" / "MP4" / f"{serial}.mp4")
            for name, serial in self.cameras.items()
        }
        trajectory = self.path / "trajectory.h5"
        with _reading(trajectory), h5py.File(trajectory, "r") as h5:
            states = {space: h5[key][:] for space, (key, _) in STATE_SPACES.items() if key in h5}
            gripper = h5["observation/robot_state/gripper_position"][:]
            actions = {space: h5[f"action/{space}"][:] for space in ACTION_SPACES if f"action/{space}" in h5}
            gripper_target = h5["action/gripper_position"][:]
        arrays = {**states, "gripper_position": gripper, **actions, "gripper_target": gripper_target}
        short = {name: len(values) for name, values in arrays.items() if len(values) < self.length}
        needed: set[str | None] = set()
        if state_space is not None or action_space is not None:
            needed = {"gripper_position", "gripper_target", state_space, action_space}
            states = {space: values for space, values in states.items() if space not in short}
            actions = {space: values for space, values in actions.items() if space not in short}
            short = {name: length for name, length in short.items() if name in needed}
        if short:
            raise ValueError(f"{trajectory}: {short} hold fewer steps than the episode's {self.length}")
        fields = {
            **{space: STATE_SPACES[space][0] for space in states},
            "gripper_position": "observation/robot_state/gripper_position",
            **{space: f"action/{space}" for space in actions},
            "gripper_target": "action/gripper_position",
        }
        checked = needed or set(fields)  # the spaces converted, or every one recorded
        for name, field in fields.items():
            if name in checked:
                _check_finite(trajectory, field, arrays[name][: self.length])
        for index in range(self.length):
            images = {}
            for name, stream in frames.items():
                frame = next(stream, None)
                if frame is None:
                    raise ValueError(
                        f"{self.path}: the {name} video ends before step {index} of {self.length}"
                    )
                images[name] = frame
            yield DroidStep(
                images,
                {space: values[index].astype(np.float32) for space, values in states.items()},
                np.atleast_1d(gripper[index]).astype(np.float32),
                {space: values[index].astype(np.float32) for space, values in actions.items()},
                np.atleast_1d(gripper_target[index]).astype(np.float32),
            )


def read_episode(
    path: str | Path, annotations: Mapping[str, Mapping[str, str]] | None = None
) -> DroidEpisode:
    """An episode directory (holding ``trajectory.h5``); its cameras, length, instruction and outcome."""
    import h5py

    path = Path(path)
    metadata_files = sorted(path.glob("metadata_*.json"))
    metadata = {}
    if metadata_files:
        with _reading(metadata_files[0]):
            metadata = json.loads(metadata_files[0].read_text())
    uuid = metadata.get("uuid") or (metadata_files[0].stem.split("_", 1)[-1] if metadata_files else path.name)
    with _reading(path / "trajectory.h5"), h5py.File(path / "trajectory.h5", "r") as h5:
        length = len(h5["observation/robot_state/joint_positions"])
        types = {
            serial: int(np.asarray(h5[f"observation/camera_type/{serial}"]).reshape(-1)[0])
            for serial in h5["observation/camera_type"]
        }
        current_task = h5.attrs.get("current_task", "")
        success = h5.attrs.get("success")
    wrist = [serial for serial, kind in types.items() if kind == WRIST]
    exterior = sorted(serial for serial, kind in types.items() if kind == EXTERIOR)
    if len(wrist) != 1 or not exterior:
        raise ValueError(
            f"{path}: expected one wrist and at least one exterior camera, got camera types {types}"
        )
    cameras = {"exterior_1_left": exterior[0], "wrist_left": wrist[0]}
    if len(exterior) > 1:
        cameras["exterior_2_left"] = exterior[1]
    instruction = (
        (annotations or {}).get(uuid, {}).get(INSTRUCTION_KEY) or metadata.get("current_task") or current_task
    )
    if isinstance(instruction, bytes):
        instruction = instruction.decode()
    return DroidEpisode(
        path, uuid, str(instruction), None if success is None else bool(success), length, cameras
    )


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Name ``file`` in any failure to read it (h5py and json errors do not)."""
    try:
        yield
    except (OSError, KeyError, ValueError, TypeError) as error:
        if str(file) in str(error):
            raise
        raise ValueError(
            f"{file}: not a readable DROID recording file ({type(error).__name__}: {error})"
        ) from error


def find_episodes(root: str | Path) -> list[Path]:
    """Every episode directory below ``root`` (those holding a ``trajectory.h5``), sorted."""
    return sorted(p.parent for p in Path(root).rglob("trajectory.h5"))


def find_incomplete_episodes(root: str | Path) -> list[Path]:
    """Directories below ``root`` that hold an episode's other files (``metadata_*.json``,
    ``recordings/``) but no ``trajectory.h5``: episodes whose recording was lost or not copied."""
    candidates = {p.parent for p in Path(root).rglob("metadata_*.json")}
    candidates |= {p.parent for p in Path(root).rglob("recordings") if p.is_dir()}
    return sorted(p for p in candidates if not (p / "trajectory.h5").exists())


def read_annotations(file: str | Path) -> dict[str, dict[str, str]]:
    """DROID's aggregated language annotations: a JSON object mapping each episode uuid to an object
    of instructions, ``{"<uuid>": {"language_instruction1": "<instruction>", ...}, ...}``."""
    expected = f'a JSON object {{"<episode uuid>": {{"{INSTRUCTION_KEY}": "<instruction>", ...}}, ...}}'
    try:
        labels = json.loads(Path(file).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"annotations {file}: not a readable JSON file ({error})") from error
    if not isinstance(labels, dict):
        raise ValueError(f"annotations {file}: holds a JSON {type(labels).__name__}; expected {expected}")
    for uuid, entry in labels.items():
        if not isinstance(entry, dict):
            raise ValueError(
                f"annotations {file}: the entry of {uuid!r} is a JSON {type(entry).__name__}; "
                f"expected {expected}"
            )
        instruction = entry.get(INSTRUCTION_KEY)
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError(
                f"annotations {file}: {uuid!r}'s {INSTRUCTION_KEY} is a JSON {type(instruction).__name__}, "
                "not a string"
            )
    return labels


def _check_finite(file: Path, field: str, values: np.ndarray) -> None:
    """Refuse a recorded field holding NaN or infinity: a dataset holding them trains on garbage."""
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if bad.any():
        steps = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
        raise ValueError(
            f"{file}: {field} holds non-finite values (NaN or infinity) at {len(steps)} of {len(values)} "
            f"steps, first at step {steps[0]}; re-record the episode or move its directory away"
        )


def _decode(video: Path) -> Iterator[np.ndarray]:
    import av

    if not video.is_file():
        raise FileNotFoundError(f"{video} is missing (DROID's left-view MP4 of this camera)")
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
