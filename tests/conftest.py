"""Shared fixtures: deterministic seeds, the real config tree composed on CPU, a small robosuite dataset."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports `datasets` or lerobot (they read these at import time): no test writes caches
# into the home directory.
_CACHE = Path(tempfile.mkdtemp(prefix="vla-train-test-cache-"))
for _variable, _sub in (
    ("HF_HOME", "huggingface"),
    ("HF_LEROBOT_HOME", "lerobot"),
    ("MPLCONFIGDIR", "matplotlib"),
    ("NUMBA_CACHE_DIR", "numba"),
):
    os.environ.setdefault(_variable, str(_CACHE / _sub))
os.environ.setdefault("MESA_SHADER_CACHE_DISABLE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from helpers import compose_train

from vla_train.config import register_configs

register_configs()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _run_caches_in_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLA_TRAIN_CACHE", str(_CACHE / "runs"))


@pytest.fixture(scope="session")
def lift_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three expert demonstrations of robosuite Lift in a real LeRobot dataset, recorded once per session."""
    from vla_train.training import build_env_adapter

    root = tmp_path_factory.mktemp("data") / "lift"
    cfg = compose_train(
        [f"env.dataset.root={root}", "env.dataset.num_demos=3"], output_dir=root.parent / "unused"
    )
    build_env_adapter(cfg.env).generate_demonstrations(root, num_demos=3)
    return root


@pytest.fixture(scope="session")
def libero_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two libero_object tasks × 2 random-walk episodes × 12 frames at 64 px as PNG frames, recorded once
    per session."""
    from libero_data import libero_assets, record_libero_dataset

    from envs.libero.env import LiberoSettings

    settings = LiberoSettings(camera_size=64, hard_reset=False, assets_dir=str(libero_assets()))
    root = tmp_path_factory.mktemp("data") / "libero"
    record_libero_dataset(root, settings, "libero_object", tasks=[0, 1], episodes=2, steps=12)
    return root


@pytest.fixture(scope="session")
def libero_video_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same recording as ``libero_dataset`` with MP4 cameras, as the default copy (``lerobot/libero``)."""
    from libero_data import libero_assets, record_libero_dataset

    from envs.libero.env import LiberoSettings

    settings = LiberoSettings(camera_size=64, hard_reset=False, assets_dir=str(libero_assets()))
    root = tmp_path_factory.mktemp("data") / "libero_video"
    record_libero_dataset(root, settings, "libero_object", tasks=[0, 1], episodes=2, steps=12, video=True)
    return root
