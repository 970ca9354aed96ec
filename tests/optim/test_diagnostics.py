"""Effective rank (eq. 4) and gradient SNR (eq. 5), alone and averaged per module."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import matrix_with_spectrum

from vla_train.optim import GradientSNRMeter, effective_rank, gradient_snr, module_effective_ranks


def test_effective_rank_of_known_spectra() -> None:
    flat, _, _ = matrix_with_spectrum(40, 30, torch.ones(10))
    assert effective_rank(flat) == pytest.approx(10.0, rel=1e-9)  # k equal singular values → k
    sigma = torch.tensor([3.0, 1.0], dtype=torch.float64)
    p = sigma / sigma.sum()
    skewed, _, _ = matrix_with_spectrum(20, 20, sigma)
    assert effective_rank(skewed) == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-9)
    assert effective_rank(torch.zeros(5, 5)) == 0.0
    assert effective_rank(torch.randn(4, 2, 3, 3)) <= 4.0  # conv kernels are flattened
    with pytest.raises(ValueError):
        effective_rank(torch.randn(7))


def test_effective_rank_separates_low_rank_from_isotropic_gradients() -> None:
    low_rank = torch.randn(64, 2) @ torch.randn(2, 48) + 1e-3 * torch.randn(64, 48)
    assert effective_rank(low_rank) < 4 < 30 < effective_rank(torch.randn(64, 48))


def test_gradient_snr_matches_definition() -> None:
    mean = torch.full((6, 5), 2.0)
    noise = torch.randn(8, 6, 5)
    noise = noise - noise.mean(0)  # zero-mean noise: the sample mean is exactly `mean`
    samples = mean + noise
    expected = mean.pow(2).sum() / noise.pow(2).sum(dim=(1, 2)).mean()
    assert gradient_snr(samples) == pytest.approx(float(expected), rel=1e-6)
    assert gradient_snr(torch.ones(3, 4)) == float("inf")
    with pytest.raises(ValueError, match="2 gradient samples"):
        gradient_snr(torch.randn(1, 4))


def test_snr_meter_equals_batch_formula_and_averages_per_module() -> None:
    grads = {
        "a.weight": torch.randn(5, 3, 4) + 1.0,
        "b.weight": torch.randn(5, 6) * 3.0,
        "c.bias": torch.randn(5, 2),
    }
    meter = GradientSNRMeter({"a.weight": "action", "b.weight": "vision", "c.bias": "action"})
    with pytest.raises(RuntimeError, match="at least 2"):
        meter.compute()
    for i in range(5):
        meter.observe((name, g[i]) for name, g in grads.items())
    result = meter.compute()
    assert result["vision"] == pytest.approx(gradient_snr(grads["b.weight"]), rel=1e-9)
    expected_action = (gradient_snr(grads["a.weight"]) + gradient_snr(grads["c.bias"])) / 2
    assert result["action"] == pytest.approx(expected_action, rel=1e-9)
    meter.reset()
    assert meter.count == 0


def test_module_effective_ranks_average_and_cap() -> None:
    named = [
        ("v1", torch.randn(32, 32)),
        ("v2", torch.randn(32, 32)),
        ("a1", torch.randn(32, 1) @ torch.randn(1, 32)),
        ("a_bias", torch.randn(32)),
        ("unlabelled", torch.randn(8, 8)),
        ("no_grad", None),
    ]
    modules = {"v1": "vision", "v2": "vision", "a1": "action", "a_bias": "action", "no_grad": "action"}
    result = module_effective_ranks(named, modules)
    assert set(result) == {"vision", "action"}
    assert result["action"] == pytest.approx(1.0, abs=1e-4)  # rank 1 up to fp32 round-off
    assert result["vision"] == pytest.approx((effective_rank(named[0][1]) + effective_rank(named[1][1])) / 2)
    capped = module_effective_ranks(named, modules, max_matrices_per_module=1)
    assert capped["vision"] == pytest.approx(effective_rank(named[0][1]))
