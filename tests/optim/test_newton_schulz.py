"""The NS iteration equals its scalar transfer function on the spectrum (Appendix D), and the
Promotion / Suppression polynomials have the properties Appendix E derives them from."""

from __future__ import annotations

import pytest
import torch
from helpers import matrix_with_spectrum

from vla_train.optim import (
    LPMUON_TAUS,
    PROMOTION_COEFFICIENTS,
    SUPPRESSION_COEFFICIENTS,
    lpmuon_schedule,
    muon_schedule,
    newton_schulz,
    pion_schedule,
    scalar_response,
)

SCHEDULES = {
    "muon": muon_schedule(),
    **{f"pion_kp{kp}": pion_schedule(kp) for kp in range(6)},
    "lpmuon_0.5": lpmuon_schedule(0.5),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("shape", [(24, 10), (10, 24), (16, 16)])
def test_newton_schulz_equals_scalar_response_on_singular_values(name: str, shape: tuple[int, int]) -> None:
    sigma = torch.tensor([3.0, 2.0, 1.2, 0.9, 0.5, 0.2, 0.05, 0.01], dtype=torch.float64)
    matrix, u, v = matrix_with_spectrum(*shape, sigma)
    eps = 1e-7
    normalized = sigma / (sigma.norm() + eps)
    expected = u @ torch.diag(scalar_response(normalized, SCHEDULES[name])) @ v.T
    result = newton_schulz(matrix, SCHEDULES[name], eps=eps)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-10)


def test_newton_schulz_normalizes_each_matrix_of_a_batch_separately() -> None:
    a = torch.randn(12, 8, dtype=torch.float64)
    b = 1000.0 * torch.randn(12, 8, dtype=torch.float64)
    batch = newton_schulz(torch.stack([a, b]), muon_schedule())
    torch.testing.assert_close(batch[0], newton_schulz(a, muon_schedule()))
    torch.testing.assert_close(batch[1], newton_schulz(b, muon_schedule()))
    # an extra leading batch dimension is kept
    assert newton_schulz(torch.randn(2, 3, 5, 4), muon_schedule()).shape == (2, 3, 5, 4)


def test_newton_schulz_of_zero_is_zero_and_rejects_vectors() -> None:
    assert torch.equal(newton_schulz(torch.zeros(4, 6), muon_schedule()), torch.zeros(4, 6))
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(5), muon_schedule())


def test_muon_drives_spectrum_towards_one() -> None:
    sigma = torch.linspace(0.05, 1.0, 50, dtype=torch.float64)
    out = scalar_response(sigma, muon_schedule())
    assert out.min() > 0.6 and out.max() < 1.25  # Keller's coefficients oscillate in ~[0.7, 1.2]


def test_promotion_polynomial_properties() -> None:
    a, b, c = PROMOTION_COEFFICIENTS
    sigma = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
    f = scalar_response(sigma, [PROMOTION_COEFFICIENTS])
    assert float(
        scalar_response(torch.tensor(1.0, dtype=torch.float64), [PROMOTION_COEFFICIENTS])
    ) == pytest.approx(1.0)
    assert torch.all(f.diff() >= 0), "Promotion must preserve the order of singular values"
    assert torch.all(f >= sigma - 1e-12), "Promotion amplifies every singular value in [0, 1]"
    derivative = a + 3 * b * sigma**2 + 5 * c * sigma**4
    torch.testing.assert_close(derivative, 1.875 * (1 - sigma**2) ** 2)  # eq. (A43)
    assert 6 * b + 20 * c == pytest.approx(0.0)  # f''(1) = 0: the boundary case of (P3)


def test_suppression_polynomial_properties() -> None:
    a, b, c = SUPPRESSION_COEFFICIENTS
    sigma = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
    f = scalar_response(sigma, [SUPPRESSION_COEFFICIENTS])
    assert a + b + c == pytest.approx(1.0)  # fixed point at 1
    assert a + 3 * b + 5 * c == pytest.approx(0.0)  # stationary at 1
    assert a == 0.0  # f_s'(0) = 0: no linear term near the origin
    assert torch.all(f.diff() >= 0)
    # small singular values are driven towards 0, large ones stay near 1
    assert float(scalar_response(torch.tensor(0.1), [SUPPRESSION_COEFFICIENTS] * 3)) < 1e-6
    assert float(scalar_response(torch.tensor(0.95), [SUPPRESSION_COEFFICIENTS] * 3)) > 0.99
    h = 1e-4
    slope_at_zero = (
        float(scalar_response(torch.tensor(h, dtype=torch.float64), [SUPPRESSION_COEFFICIENTS])) / h
    )
    assert abs(slope_at_zero) < 1e-6


@pytest.mark.parametrize("kp", range(6))
def test_pion_schedule_is_monotone_high_pass(kp: int) -> None:
    sigma = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    f = scalar_response(sigma, pion_schedule(kp))
    assert torch.all(f.diff() >= -1e-12)
    assert float(f[-1]) == pytest.approx(1.0)
    assert float(f[0]) == 0.0


def test_more_promotion_lowers_the_cutoff() -> None:
    sigma = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    cutoffs = []
    for kp in range(6):
        f = scalar_response(sigma, pion_schedule(kp))
        cutoffs.append(float(sigma[torch.nonzero(f >= 0.5)[0]]))
    assert cutoffs == sorted(cutoffs, reverse=True) and cutoffs[0] > cutoffs[-1]


def test_pion_extremes_are_pure_promotion_and_pure_suppression() -> None:
    assert pion_schedule(5) == (PROMOTION_COEFFICIENTS,) * 5
    assert pion_schedule(0) == (SUPPRESSION_COEFFICIENTS,) * 5
    assert pion_schedule(2) == (PROMOTION_COEFFICIENTS,) * 2 + (SUPPRESSION_COEFFICIENTS,) * 3


@pytest.mark.parametrize("kp", [-1, 6, 2.0, True])
def test_pion_schedule_rejects_bad_kp(kp: object) -> None:
    with pytest.raises(ValueError, match="kp"):
        pion_schedule(kp)  # type: ignore[arg-type]


def test_lpmuon_is_low_pass_for_every_fitted_cutoff() -> None:
    sigma = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    for tau in LPMUON_TAUS:
        f = scalar_response(sigma, lpmuon_schedule(tau))
        passband = (sigma > 0.1 * tau + 0.02) & (sigma < tau - 0.05)
        stopband = sigma > tau + 0.1
        assert f[passband].mean() > 0.95, tau
        if stopband.any():
            # Table A7 prints 3 decimals; the rounding leaves stop-band ripple (up to ~0.6 at tau 0.5/0.6)
            assert f[stopband].abs().mean() < 0.4, tau
    with pytest.raises(ValueError, match="Table A7"):
        lpmuon_schedule(0.55)
