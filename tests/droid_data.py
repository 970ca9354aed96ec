"""Synthetic DROID raw recordings, written in DROID's own layout (trajectory.h5 + per-camera MP4s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SERIALS = {"exterior_1": "11111111", "exterior_2": "22222222", "wrist": "33333333"}


def frame(step: int, camera: int, height: int, width: int) -> np.ndarray:
    """A smooth, step- and camera-dependent image (video codecs keep it close)."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 255 // max(width - 1, 1) + 20 * step + 60 * camera) % 256
    return np.stack([base, (y * 255 // max(height - 1, 1)), np.full_like(base, 40 * camera)], -1).astype(
        np.uint8
    )


def write_raw_episode(
    root: Path, name: str, steps: int, task: str, success: bool, seed: int, size=(72, 128)
) -> Path:
    import av
    import h5py

    episode = root / ("success" if success else "failure") / "2026-11-25" / name
    (episode / "recordings" / "MP4").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    uuid = f"LAB+user+2026-11-25-10h-00m-{seed:02d}s"
    with h5py.File(episode / "trajectory.h5", "w") as h5:
        h5["observation/robot_state/joint_positions"] = rng.normal(size=(steps, 7))
        h5["observation/robot_state/cartesian_position"] = rng.normal(size=(steps, 6))
        h5["observation/robot_state/gripper_position"] = rng.uniform(0, 1, steps)
        h5["action/joint_velocity"] = rng.uniform(-1, 1, (steps, 7))
        h5["action/joint_position"] = rng.normal(size=(steps, 7))
        h5["action/cartesian_velocity"] = rng.uniform(-1, 1, (steps, 6))
        h5["action/cartesian_position"] = rng.normal(size=(steps, 6))
        h5["action/gripper_position"] = rng.uniform(0, 1, steps)
        for camera, serial in SERIALS.items():
            h5[f"observation/camera_type/{serial}"] = np.full(steps, 0 if camera == "wrist" else 1)
        h5.attrs["current_task"] = "collector's note"
        h5.attrs["success"] = success
    (episode / f"metadata_{uuid}.json").write_text(
        json.dumps({"uuid": uuid, "current_task": task, "success": success})
    )
    for index, serial in enumerate(SERIALS.values()):
        with av.open(str(episode / "recordings" / "MP4" / f"{serial}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=15)
            stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
            stream.options = {"qscale": "2"}
            for step in range(steps):
                image = av.VideoFrame.from_ndarray(frame(step, index, *size), format="rgb24")
                for packet in stream.encode(image):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return episode
