"""Spectral optimizers of the Pion paper, usable in any PyTorch project.

>>> from vla_train.optim import Pion
>>> matrices = [p for p in model.action_head.parameters() if p.ndim == 2]  # doctest: +SKIP
>>> optimizer = Pion(matrices, lr=1e-4, kp=2)  # doctest: +SKIP

Biases, norms and embeddings belong to AdamW: :func:`build_modality_optimizer` routes every parameter
of a model by modality (Table A1) and builds one optimizer over all of them.
"""

from vla_train.optim.assignment import (
    ModalityRule,
    ParameterAssignment,
    PerHeadRule,
    assign_parameters,
    build_modality_optimizer,
    summarize_assignments,
)
from vla_train.optim.diagnostics import (
    DIAGNOSTIC_CHUNKS,
    DIAGNOSTIC_MATRICES_PER_MODULE,
    GradientSNRMeter,
    chunked_gradient_diagnostics,
    effective_rank,
    gradient_snr,
    module_effective_ranks,
)
from vla_train.optim.low_rank import LowRankMuon, top_k_polar_factor
from vla_train.optim.modality_optimizer import ModalityOptimizer
from vla_train.optim.newton_schulz import (
    LPMUON_TAUS,
    MUON_COEFFICIENTS,
    PROMOTION_COEFFICIENTS,
    SUPPRESSION_COEFFICIENTS,
    lpmuon_schedule,
    muon_schedule,
    newton_schulz,
    pion_schedule,
    scalar_response,
)
from vla_train.optim.options import ModalityOptimizerOptions
from vla_train.optim.polynomial import LowPassMuon, Muon, Pion
from vla_train.optim.spectral import HeadLayout, SpectralOptimizer, SpectralOptions, spectral_lr_scale

LRMuon = LowRankMuon
LPMuon = LowPassMuon

__all__ = [
    "DIAGNOSTIC_CHUNKS",
    "DIAGNOSTIC_MATRICES_PER_MODULE",
    "LPMUON_TAUS",
    "MUON_COEFFICIENTS",
    "PROMOTION_COEFFICIENTS",
    "SUPPRESSION_COEFFICIENTS",
    "GradientSNRMeter",
    "HeadLayout",
    "LPMuon",
    "LRMuon",
    "LowPassMuon",
    "LowRankMuon",
    "ModalityOptimizer",
    "ModalityOptimizerOptions",
    "ModalityRule",
    "Muon",
    "ParameterAssignment",
    "PerHeadRule",
    "Pion",
    "SpectralOptimizer",
    "SpectralOptions",
    "assign_parameters",
    "build_modality_optimizer",
    "chunked_gradient_diagnostics",
    "effective_rank",
    "gradient_snr",
    "lpmuon_schedule",
    "module_effective_ranks",
    "muon_schedule",
    "newton_schulz",
    "pion_schedule",
    "scalar_response",
    "spectral_lr_scale",
    "summarize_assignments",
    "top_k_polar_factor",
]
