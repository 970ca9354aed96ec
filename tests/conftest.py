"""Shared fixtures: deterministic seeds, the real config tree composed on CPU, a small robosuite dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_train

from vla_train.config import register_configs

register_configs()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _caches_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes caches (HF, wandb, Mesa, numba) into the home directory."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("VLA_TRAIN_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def lift_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three expert demonstrations of robosuite Lift in a real LeRobot dataset, recorded once per session."""
    from vla_train.training import build_env_adapter

    root = tmp_path_factory.mktemp("data") / "lift"
    cfg = compose_train([f"env.dataset.root={root}", "env.dataset.num_demos=3"], output_dir=root.parent / "unused")
    build_env_adapter(cfg.env).generate_demonstrations(root, num_demos=3)
    return root

