"""Matrices with a known spectrum, for tests of spectral maps."""

from __future__ import annotations

import torch


def random_orthonormal(rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``rows × cols`` matrix with orthonormal columns (fp64)."""
    q, _ = torch.linalg.qr(torch.randn(rows, cols, dtype=torch.float64, generator=generator))
    return q


def matrix_with_spectrum(rows: int, cols: int, singular_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``U diag(σ) Vᵀ`` with random orthonormal ``U``, ``V``; returns ``(matrix, U, V)``."""
    k = singular_values.numel()
    u = random_orthonormal(rows, k)
    v = random_orthonormal(cols, k)
    return u @ torch.diag(singular_values.double()) @ v.T, u, v


def configs_dir() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "configs")


def compose_train(overrides: list[str], output_dir=None):
    """The real ``configs/train.yaml`` composed as ``python train.py <overrides>`` would, on CPU.

    Hydra's runtime resolvers (``${hydra:runtime.choices...}``) are made available, and the run goes
    to ``output_dir``.
    """
    return _compose(configs_dir(), "train", overrides, output_dir)


def compose_rlvr(overrides: list[str], output_dir=None):
    """The real ``configs/rlvr/rlvr.yaml`` composed as ``python train_rlvr.py <overrides>`` would."""
    from vla_train.config import register_configs
    from vla_train.rlvr.schema import register_rlvr_configs

    register_configs()
    register_rlvr_configs()
    return _compose(f"{configs_dir()}/rlvr", "rlvr", overrides, output_dir)


def _compose(config_dir: str, name: str, overrides: list[str], output_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=config_dir):
        cfg = compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.output_dir = str(output_dir)
    return cfg
