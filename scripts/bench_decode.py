"""Training-sample throughput of one data worker: LeRobot LIBERO data as PNG frames vs as MP4 video.

The two LeRobot copies of the LIBERO demonstrations store the same frames differently:
``HuggingFaceVLA/libero`` as PNG images inside parquet (~70 GB), the video layout as MP4 files (~2 GB).
Which one can feed the paper's batch at a GPU's step rate depends on how fast one data worker turns a
random index into a training sample (two 256×256 cameras and an action chunk). This script writes the
same synthetic episodes in both layouts with our recorder (lerobot's own writer and codec), then times
random-index reads in this process, as one ``DataLoader`` worker does:

    python scripts/bench_decode.py                              # 4 episodes × 100 frames, 2 × 256² cameras
    python scripts/bench_decode.py --step-seconds 1.2 --batch 8  # + the workers a GPU needs at that pace

It prints samples/s per worker for each layout, their ratio and the bytes on disk, measured in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vla_train.data.lerobot_io import DatasetRecorder, image_feature, load_lerobot_dataset, vector_feature

CAMERAS = ("image", "image2")


def frame(step: int, camera: int, size: int) -> np.ndarray:
    """A smooth scene that moves a little every step, as a robot camera's does (noise would defeat any
    codec and misstate both layouts)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = 0.05 * step + camera
    channels = [
        0.5 + 0.5 * np.sin(6 * x + phase),
        0.5 + 0.5 * np.cos(5 * y - phase),
        0.5 + 0.5 * np.sin(4 * (x + y) + 2 * phase),
    ]
    return (np.stack(channels, -1) * 255).astype(np.uint8)


def record(root: Path, video: bool, episodes: int, frames: int, size: int) -> None:
    features = {f"observation.images.{c}": image_feature(size, size, video=video) for c in CAMERAS}
    features["observation.state"] = vector_feature([f"s{i}" for i in range(8)])
    features["action"] = vector_feature([f"a{i}" for i in range(7)])
    with DatasetRecorder(root, "local/bench", 10, features, robot_type="panda", video=video) as recorder:
        for episode in range(episodes):
            for step in range(frames):
                recorder.add_frame(
                    {
                        **{f"observation.images.{c}": frame(step, i, size) for i, c in enumerate(CAMERAS)},
                        "observation.state": np.full(8, episode + step / frames, np.float32),
                        "action": np.full(7, step / frames, np.float32),
                    },
                    task=f"task {episode}",
                )
            recorder.save_episode()


def samples_per_second(root: Path, samples: int, chunk: int, seed: int = 0) -> float:
    dataset = load_lerobot_dataset("local/bench", root, "action", chunk)
    order = np.random.default_rng(seed).integers(0, len(dataset), samples + 5)
    for index in order[:5]:  # open files and decoders once, as a long-lived worker has
        dataset[int(index)]
    start = time.perf_counter()
    for index in order[5:]:
        dataset[int(index)]
    return samples / (time.perf_counter() - start)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100, help="frames per episode")
    parser.add_argument("--size", type=int, default=256, help="camera side (LIBERO's LeRobot data: 256)")
    parser.add_argument("--samples", type=int, default=200, help="random reads timed per layout")
    parser.add_argument("--chunk", type=int, default=8, help="action chunk per sample")
    parser.add_argument("--step-seconds", type=float, help="a GPU's seconds per training step, if known")
    parser.add_argument("--batch", type=int, default=8, help="samples per GPU per step (VLA-Adapter: 8)")
    parser.add_argument("--workdir", type=Path, help="where to write the two datasets (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        rates, sizes = {}, {}
        for layout, video in (("png", False), ("mp4", True)):
            root = Path(work) / layout
            record(root, video, args.episodes, args.frames, args.size)
            rates[layout] = samples_per_second(root, args.samples, args.chunk)
            sizes[layout] = disk_bytes(root)
    cameras = f"{len(CAMERAS)} cameras of {args.size}²"
    print(f"{args.episodes} episodes × {args.frames} frames, {cameras}, chunk {args.chunk}")
    for layout in rates:
        print(
            f"  {layout}: {rates[layout]:8.1f} samples/s per worker, {sizes[layout] / 2**20:8.1f} MiB on disk"
        )
    speed, size = rates["mp4"] / rates["png"], sizes["mp4"] / sizes["png"]
    print(f"  mp4 ÷ png: {speed:.2f}× the samples/s, {size:.2f}× the bytes")
    if args.step_seconds:
        need = args.batch / args.step_seconds
        for layout, rate in rates.items():
            workers = need / rate
            print(
                f"  {layout}: {workers:.1f} workers per GPU for {args.batch} samples / {args.step_seconds} s"
            )
    return {"png": rates["png"], "mp4": rates["mp4"], "png_bytes": sizes["png"], "mp4_bytes": sizes["mp4"]}


if __name__ == "__main__":
    main()
