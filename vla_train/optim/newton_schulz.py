"""Odd-polynomial Newton–Schulz iterations and the coefficient schedules of Muon, Pion and LPMuon.

Every optimizer in this package differs from Muon only in the spectral map it applies to the
momentum matrix. One odd quintic step ``X ← aX + b XXᵀX + c X(XᵀX)²`` acts on each singular value
independently through ``f(σ) = aσ + bσ³ + cσ⁵`` (paper eq. (6), Appendix D), so a *schedule* — an
ordered list of ``(a, b, c)`` triples — is the whole definition of a spectral filter. The same
schedule drives the matrix iteration (:func:`newton_schulz`) and its scalar twin
(:func:`scalar_response`), which is what the filter plots and the tests compare against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Coefficients = tuple[float, float, float]
Schedule = tuple[Coefficients, ...]

#: Muon's quintic step, paper eq. (3): pushes every normalized singular value towards ~1.
MUON_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.0315)
#: Pion's Promotion polynomial, eq. (7): f(1)=1, f'(1)=0, f''(1)=0 and the largest slope at 0.
PROMOTION_COEFFICIENTS: Coefficients = (1.875, -1.25, 0.375)
#: Pion's Suppression polynomial, eq. (8): f(1)=1, f'(1)=0, f'(0)=0.
SUPPRESSION_COEFFICIENTS: Coefficients = (0.0, 2.5, -1.5)
#: Pion and Muon both spend five polynomial steps per optimizer step (Alg. 2 fixes k = 5).
DEFAULT_STEPS = 5

# Table A7: LPMuon's fitted five-step compositions, one row per cutoff tau, read step by step as
# (a1, a3, a5) for k = 1..5. They approximate sign(σ)·1[|σ| ≤ tau], the mirror image of Pion.
# fmt: off
_LPMUON_TABLE_A7: dict[float, tuple[float, ...]] = {
    # tau: (step 1, step 2, step 3,
    #       step 4, step 5), each step (a1, a3, a5)
    0.1: (4.753, -10.636, 7.172,   2.414, -2.282, 0.877,   2.589, -1.202, 0.245,
          1.999, -1.774, 0.525,   2.131, -1.530, 0.274),
    0.2: (3.104, -3.578, 1.639,   2.844, -2.041, 0.616,   2.577, -2.567, 0.639,
          2.807, -1.811, 0.113,   1.877, -1.153, 0.292),
    0.3: (2.547, -1.190, 0.122,   3.202, -1.581, 0.326,   3.100, -1.684, 0.229,
          2.289, -1.547, 0.342,   2.185, -1.841, 0.645),
    0.4: (2.624, -1.021, -0.555,   2.762, -1.221, 0.238,   2.682, -1.486, 0.293,
          2.021, -1.724, 0.483,   2.154, -1.565, 0.283),
    0.5: (2.461, -0.443, -0.811,   3.084, -1.139, 0.188,   2.612, -1.453, 0.220,
          2.057, -1.837, 0.558,   2.043, -1.355, 0.224),
    0.6: (2.313, -0.434, -0.335,   2.913, -0.920, 0.130,   2.751, -1.493, 0.217,
          1.939, -1.683, 0.470,   2.253, -1.784, 0.353),
    0.7: (1.636, -0.310, -0.039,   3.286, -1.566, 0.333,   3.036, -1.962, 0.338,
          2.004, -1.730, 0.476,   2.204, -1.663, 0.313),
    0.8: (1.743, -0.247, 0.015,   2.990, -0.933, 0.130,   2.656, -1.371, 0.189,
          2.069, -1.663, 0.423,   2.054, -1.345, 0.220),
    0.9: (3.009, -1.041, -0.021,   2.796, -2.170, 0.433,   3.051, -2.487, 0.507,
          2.128, -2.166, 0.772,   2.174, -1.889, 0.709),
}
# fmt: on
LPMUON_TAUS: tuple[float, ...] = tuple(sorted(_LPMUON_TABLE_A7))


def muon_schedule(steps: int = DEFAULT_STEPS) -> Schedule:
    """Muon's NS iteration: ``steps`` repetitions of eq. (3)."""
    _check_steps(steps)
    return (MUON_COEFFICIENTS,) * steps


def pion_schedule(kp: int, steps: int = DEFAULT_STEPS) -> Schedule:
    """Pion's high-pass NS (Alg. 2): ``kp`` Promotion steps, then ``steps - kp`` Suppression steps.

    ``kp`` sets the cutoff: more Promotion lifts more of the tail above the Suppression threshold.
    The paper finds Suppression-dominant schedules (kp ≤ 2) best for VLA and RLVR.
    """
    _check_steps(steps)
    if isinstance(kp, bool) or not isinstance(kp, int) or not 0 <= kp <= steps:
        raise ValueError(f"pion_schedule: kp must be an integer in [0, {steps}] (steps={steps}), got {kp!r}")
    return (PROMOTION_COEFFICIENTS,) * kp + (SUPPRESSION_COEFFICIENTS,) * (steps - kp)


def lpmuon_schedule(tau: float) -> Schedule:
    """LPMuon's low-pass composition for cutoff ``tau`` (Table A7, Appendix L)."""
    for known in LPMUON_TAUS:
        if abs(float(tau) - known) < 1e-9:
            row = _LPMUON_TABLE_A7[known]
            return tuple((row[i], row[i + 1], row[i + 2]) for i in range(0, 15, 3))
    allowed = ", ".join(f"{t:g}" for t in LPMUON_TAUS)
    raise ValueError(
        f"lpmuon_schedule: tau must be one of the fitted cutoffs of Table A7 ({allowed}), got {tau!r}"
    )


def scalar_response(sigma: torch.Tensor | float, schedule: Sequence[Coefficients]) -> torch.Tensor:
    """Apply a schedule's polynomials to scalars: the curves of Fig. 3 and Fig. A2.

    By Appendix D, ``newton_schulz(U Σ Vᵀ) = U f(Σ̂) Vᵀ`` with Σ̂ the Frobenius-normalized singular
    values and ``f`` this function, so it is the exact spectral transfer function of the iteration.
    """
    x = torch.as_tensor(sigma, dtype=torch.get_default_dtype() if not torch.is_tensor(sigma) else None)
    for a, b, c in schedule:
        x2 = x * x
        x = x * (a + x2 * (b + c * x2))
    return x


def newton_schulz(matrix: torch.Tensor, schedule: Sequence[Coefficients], eps: float = 1e-7) -> torch.Tensor:
    """Frobenius pre-normalization, then one odd quintic step per ``(a, b, c)`` in ``schedule``.

    Args:
        matrix: ``(..., m, n)``; leading dimensions are a batch, each matrix is normalized on its own.
        schedule: the polynomial steps, e.g. :func:`muon_schedule` or :func:`pion_schedule`.
        eps: added to the Frobenius norm so that a zero matrix maps to zero.

    Returns:
        ``(..., m, n)`` in the input dtype. The iteration runs on the smaller Gram matrix
        (``min(m, n)`` squared), so tall and wide matrices cost the same.
    """
    if matrix.ndim < 2:
        raise ValueError(
            f"newton_schulz expects a matrix or a batch (..., m, n), got shape {tuple(matrix.shape)}"
        )
    transposed = matrix.size(-2) > matrix.size(-1)
    x = matrix.mT if transposed else matrix
    batch_shape = x.shape[:-2]
    x = x.reshape(-1, *x.shape[-2:])  # one 3-D batch so every product is a fused baddbmm
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)
    for a, b, c in schedule:
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b·G + c·G², G = XXᵀ
        x = torch.baddbmm(x, poly, x, beta=a, alpha=1.0)  # a·X + (b·G + c·G²)·X
    x = x.reshape(*batch_shape, *x.shape[-2:])
    return x.mT if transposed else x


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
