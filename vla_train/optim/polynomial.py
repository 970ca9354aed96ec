"""Muon, Pion and LPMuon: the same optimizer with three different Newton–Schulz schedules."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from vla_train.optim.newton_schulz import (
    DEFAULT_STEPS,
    Schedule,
    lpmuon_schedule,
    muon_schedule,
    newton_schulz,
    pion_schedule,
)
from vla_train.optim.spectral import SpectralMap, SpectralOptimizer, SpectralOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class PolynomialSpectralOptimizer(SpectralOptimizer):
    """A :class:`SpectralOptimizer` whose spectral map is an NS schedule; subclasses name the schedule."""

    def schedule(self, group: dict[str, Any]) -> Schedule:
        raise NotImplementedError

    def validate_group(self, group: dict[str, Any]) -> None:
        self.schedule(group)  # an invalid kp / tau / ns_steps fails when the group is added

    def spectral_map(self, group: dict[str, Any]) -> SpectralMap:
        return partial(newton_schulz, schedule=self.schedule(group), eps=group["eps"])


class Muon(PolynomialSpectralOptimizer):
    """Muon (eq. (1)–(3)): orthogonalize the momentum, every singular value driven towards 1.

    Suits the high-rank gradients of vision and language hidden matrices (Table A6, S4/S6/S8).
    """

    config_options = (*SpectralOptimizer.config_options, "ns_steps")

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        ns_steps: int = DEFAULT_STEPS,
        **options: Unpack[SpectralOptions],
    ) -> None:
        super().__init__(params, lr=lr, ns_steps=ns_steps, **options)

    def schedule(self, group: dict[str, Any]) -> Schedule:
        return muon_schedule(group["ns_steps"])


class Pion(PolynomialSpectralOptimizer):
    """Pion (§5, Alg. 2 and 3): high-pass NS, ``kp`` Promotion then ``ns_steps − kp`` Suppression steps.

    Keeps the leading singular directions at 1 and drives the noisy tail to 0, at Muon's cost. Use it
    for low-rank or low-SNR gradients: VLA action heads (default mode), RLVR (per-head mode).

    Args:
        kp: Promotion steps, the filter cutoff (0 = pure Suppression, ``ns_steps`` = pure Promotion).
            0 is what the paper's official runs use (VLA-Adapter, VLANeXt and π0.5 alike).
        per_head: ``False`` for the default mode, or a :class:`HeadLayout` / mapping
            (``{"head_dim": 64, "axis": 0}``) to run the iteration per attention head (Alg. 3).
    """

    config_options = (*SpectralOptimizer.config_options, "ns_steps", "kp")

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        kp: int = 0,
        ns_steps: int = DEFAULT_STEPS,
        **options: Unpack[SpectralOptions],
    ) -> None:
        super().__init__(params, lr=lr, kp=kp, ns_steps=ns_steps, **options)

    def schedule(self, group: dict[str, Any]) -> Schedule:
        return pion_schedule(group["kp"], group["ns_steps"])


class LowPassMuon(PolynomialSpectralOptimizer):
    """LPMuon (Appendix L): the reverse ablation of Pion, keeping σ ≤ ``tau`` and dropping the head.

    Only the nine fitted cutoffs of Table A7 exist (tau = 0.1 … 0.9); the paper uses 0.5. The table
    prints three decimals, and the 5-step composition amplifies that rounding: the pass band stays
    at 1 but the stop band keeps ripples of up to ~0.6 for tau 0.5 and 0.6 (see plot_filters.py).
    """

    config_options = (*SpectralOptimizer.config_options, "tau")

    def __init__(
        self, params: Params, lr: float = 1e-4, tau: float = 0.5, **options: Unpack[SpectralOptions]
    ) -> None:
        super().__init__(params, lr=lr, tau=tau, **options)

    def schedule(self, group: dict[str, Any]) -> Schedule:
        return lpmuon_schedule(group["tau"])
