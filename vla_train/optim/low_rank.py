"""LRMuon (Appendix B, Alg. 1): the exact top-k polar factor of the momentum, computed by SVD."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from vla_train.optim.spectral import SpectralMap, SpectralOptimizer, SpectralOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack


def top_k_polar_factor(matrix: torch.Tensor, rank: int, drop_null_directions: bool = True) -> torch.Tensor:
    """``U_k V_kᵀ`` for the top ``k_eff = min(rank, rank(M))`` singular directions of each matrix.

    Args:
        matrix: ``(..., m, n)``. SVD needs fp32 or fp64, so lower precisions are promoted.
        rank: target rank ``k``.
        drop_null_directions: drop directions whose singular value is numerically zero (below
            ``σ_max · max(m, n) · eps``, the tolerance of ``torch.linalg.matrix_rank``), which is
            ``k_eff`` of Alg. 1, line 5. ``False`` keeps ``min(k, m, n)`` directions whatever their
            singular values, as the paper's official ``LowRankMuon`` does.
    """
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    k = min(rank, s.size(-1))
    u, s, vh = u[..., :k], s[..., :k], vh[..., :k, :]
    if not drop_null_directions:
        return (u @ vh).to(matrix.dtype)
    tolerance = s[..., :1] * max(matrix.shape[-2:]) * torch.finfo(work.dtype).eps
    keep = (s > tolerance).to(work.dtype)
    return ((u * keep.unsqueeze(-2)) @ vh).to(matrix.dtype)


class LowRankMuon(SpectralOptimizer):
    """LRMuon: momentum, then its exact rank-``k`` polar factor instead of NS (the paper's Fig. 1, A1).

    A costly baseline: one SVD per matrix per step (about 15× Muon's step time in the paper).
    ``drop_null_directions``: see :func:`top_k_polar_factor` (``False``: the official code's rank).
    """

    # not compute_dtype: the SVD needs fp32, so the momentum is not rounded to bf16 on the way either
    config_options = ("momentum", "nesterov", "lr_scale", "lr_scale_factor", "rank", "drop_null_directions")

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        rank: int = 16,
        drop_null_directions: bool = True,
        **options: Unpack[SpectralOptions],
    ) -> None:
        options.setdefault("compute_dtype", "float32")
        super().__init__(params, lr=lr, rank=rank, drop_null_directions=drop_null_directions, **options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # state saved before the option existed
            group.setdefault("drop_null_directions", True)

    def validate_group(self, group: dict[str, Any]) -> None:
        rank = group["rank"]
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LowRankMuon: rank must be a positive integer, got {rank!r}")

    def spectral_map(self, group: dict[str, Any]) -> SpectralMap:
        return partial(
            top_k_polar_factor, rank=group["rank"], drop_null_directions=group["drop_null_directions"]
        )
