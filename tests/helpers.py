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
