"""Muon, Pion, LPMuon and LRMuon as torch optimizers: update rule, modes, batching, checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import matrix_with_spectrum, random_orthonormal

from vla_train.optim import (
    HeadLayout,
    LowPassMuon,
    LowRankMuon,
    Muon,
    Pion,
    lpmuon_schedule,
    muon_schedule,
    newton_schulz,
    pion_schedule,
    spectral_lr_scale,
    top_k_polar_factor,
)

# fp32 so that results compare exactly with the fp32 reference iteration
PLAIN = dict(momentum=0.0, nesterov=False, lr_scale="none", lr=1.0, compute_dtype="float32")


def one_step(optimizer_cls, weight: torch.Tensor, grad: torch.Tensor, **options) -> torch.Tensor:
    """The change one step makes to ``weight`` given ``grad``."""
    param = torch.nn.Parameter(weight.clone())
    param.grad = grad.clone()
    optimizer_cls([param], **options).step()
    return weight - param.detach()


@pytest.mark.parametrize(
    ("kp", "schedule"), [(5, pion_schedule(5)), (0, pion_schedule(0)), (2, pion_schedule(2))]
)
def test_pion_step_applies_its_schedule(kp: int, schedule) -> None:
    grad = torch.randn(32, 48)
    delta = one_step(Pion, torch.zeros(32, 48), grad, kp=kp, **PLAIN)
    torch.testing.assert_close(delta, newton_schulz(grad, schedule))


def test_pion_kp5_is_pure_promotion_and_kp0_pure_suppression() -> None:
    grad = torch.randn(20, 30)
    promotion = newton_schulz(grad, [(1.875, -1.25, 0.375)] * 5)
    suppression = newton_schulz(grad, [(0.0, 2.5, -1.5)] * 5)
    torch.testing.assert_close(one_step(Pion, torch.zeros(20, 30), grad, kp=5, **PLAIN), promotion)
    torch.testing.assert_close(one_step(Pion, torch.zeros(20, 30), grad, kp=0, **PLAIN), suppression)


def test_muon_and_lpmuon_apply_their_schedules() -> None:
    grad = torch.randn(16, 40)
    torch.testing.assert_close(
        one_step(Muon, torch.zeros(16, 40), grad, **PLAIN), newton_schulz(grad, muon_schedule())
    )
    torch.testing.assert_close(
        one_step(LowPassMuon, torch.zeros(16, 40), grad, tau=0.3, **PLAIN),
        newton_schulz(grad, lpmuon_schedule(0.3)),
    )


def test_momentum_nesterov_weight_decay_and_lr_scale() -> None:
    torch.manual_seed(1)
    weight, g1, g2 = torch.randn(8, 12), torch.randn(8, 12), torch.randn(8, 12)
    param = torch.nn.Parameter(weight.clone())
    opt = Muon(
        [param],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.5,
        lr_scale="moonlight",
        compute_dtype="float32",
    )
    for grad in (g1, g2):
        param.grad = grad.clone()
        opt.step()
    scale = 0.2 * 12**0.5
    m1 = g1
    w1 = weight * (1 - 0.1 * 0.5) - 0.1 * scale * newton_schulz(g1 + 0.9 * m1, muon_schedule())
    m2 = 0.9 * m1 + g2
    w2 = w1 * (1 - 0.1 * 0.5) - 0.1 * scale * newton_schulz(g2 + 0.9 * m2, muon_schedule())
    torch.testing.assert_close(param.detach(), w2)


def test_lr_scale_rules() -> None:
    assert spectral_lr_scale("moonlight", 896, 4864) == pytest.approx(0.2 * 4864**0.5)
    assert spectral_lr_scale("keller", 4864, 896) == pytest.approx((4864 / 896) ** 0.5)
    assert spectral_lr_scale("keller", 896, 4864) == 1.0
    assert spectral_lr_scale("none", 3, 5) == 1.0
    with pytest.raises(ValueError, match="lr_scale"):
        Muon([torch.nn.Parameter(torch.randn(3, 3))], lr_scale="adam")


def test_lr_scale_factor_is_a_number_that_multiplies_the_rule() -> None:
    """π0.5's official run steps with 2.0·sqrt(max(m, n)), VLA-Adapter's and VLANeXt's with 0.2·…."""
    assert spectral_lr_scale("moonlight", 896, 4864, 2.0) == pytest.approx(2.0 * 4864**0.5)
    assert spectral_lr_scale("keller", 4864, 896, 3.0) == pytest.approx(3.0 * (4864 / 896) ** 0.5)
    grad = torch.randn(8, 12)
    moved = {}
    for factor in (None, 2.0):
        param = torch.nn.Parameter(torch.zeros(8, 12))
        opt = Pion([param], lr=0.1, momentum=0.0, lr_scale_factor=factor, compute_dtype="float32")
        param.grad = grad.clone()
        opt.step()
        moved[factor] = param.detach().clone()
    torch.testing.assert_close(moved[2.0], 10 * moved[None])
    with pytest.raises(ValueError, match="lr_scale_factor"):
        Muon([torch.nn.Parameter(torch.randn(3, 3))], lr_scale_factor=-1.0)


def test_same_shape_parameters_are_batched_without_changing_the_result() -> None:
    shapes = [(16, 24), (16, 24), (24, 16), (16, 24), (7, 5)]
    grads = [torch.randn(*s) for s in shapes]
    together = [torch.nn.Parameter(torch.zeros(*s)) for s in shapes]
    for p, g in zip(together, grads, strict=True):
        p.grad = g.clone()
    Pion(together, kp=1, **PLAIN).step()
    for p, g in zip(together, grads, strict=True):
        alone = one_step(Pion, torch.zeros_like(g), g, kp=1, **PLAIN)
        torch.testing.assert_close(-p.detach(), alone, rtol=1e-5, atol=1e-6)


def test_conv_weights_are_flattened_and_vectors_rejected() -> None:
    grad = torch.randn(8, 3, 3, 3)
    delta = one_step(Muon, torch.zeros(8, 3, 3, 3), grad, **PLAIN)
    torch.testing.assert_close(delta, newton_schulz(grad.reshape(8, 27), muon_schedule()).reshape(8, 3, 3, 3))
    with pytest.raises(ValueError, match="AdamW"):
        Pion([torch.nn.Parameter(torch.zeros(10))])


def per_head_reference(grad: torch.Tensor, head_dim: int, axis: int, schedule) -> torch.Tensor:
    blocks = grad.split(head_dim, dim=axis)
    return torch.cat([newton_schulz(block, schedule) for block in blocks], dim=axis)


@pytest.mark.parametrize(
    ("name", "shape", "head_dim", "axis"),
    [
        ("mha_q", (4 * 16, 48), 16, 0),
        ("mha_o", (48, 4 * 16), 16, 1),
        ("gqa_q", (8 * 16, 64), 16, 0),  # 8 query heads
        ("gqa_kv", (2 * 16, 64), 16, 0),  # 2 key/value heads, same head_dim
        ("gqa_o", (64, 8 * 16), 16, 1),
    ],
)
def test_per_head_equals_each_head_separately(name: str, shape, head_dim: int, axis: int) -> None:
    grad = torch.randn(*shape)
    layout = {"head_dim": head_dim, "axis": axis}
    delta = one_step(Pion, torch.zeros(*shape), grad, kp=2, per_head=layout, **PLAIN)
    torch.testing.assert_close(
        delta, per_head_reference(grad, head_dim, axis, pion_schedule(2)), rtol=1e-5, atol=1e-6
    )
    # per-head differs from the whole-matrix (default) mode
    assert not torch.allclose(delta, one_step(Pion, torch.zeros(*shape), grad, kp=2, **PLAIN), atol=1e-3)


def test_per_head_mixed_gqa_group_batches_q_k_v_and_o_together() -> None:
    hidden, head_dim, q_heads, kv_heads = 64, 16, 8, 2
    shapes = {
        "q": (q_heads * head_dim, hidden),
        "k": (kv_heads * head_dim, hidden),
        "v": (kv_heads * head_dim, hidden),
    }
    params = {k: torch.nn.Parameter(torch.zeros(*s)) for k, s in shapes.items()}
    o_proj = torch.nn.Parameter(torch.zeros(hidden, q_heads * head_dim))
    grads = {k: torch.randn(*s) for k, s in shapes.items()}
    grads["o"] = torch.randn(hidden, q_heads * head_dim)
    for k, p in params.items():
        p.grad = grads[k].clone()
    o_proj.grad = grads["o"].clone()
    opt = Pion(
        [
            {"params": list(params.values()), "per_head": HeadLayout(head_dim=head_dim, axis=0)},
            {"params": [o_proj], "per_head": HeadLayout(num_heads=q_heads, axis=1)},
        ],
        kp=1,
        **PLAIN,
    )
    opt.step()
    for k, p in params.items():
        torch.testing.assert_close(
            -p.detach(), per_head_reference(grads[k], head_dim, 0, pion_schedule(1)), rtol=1e-5, atol=1e-6
        )
    torch.testing.assert_close(
        -o_proj.detach(), per_head_reference(grads["o"], head_dim, 1, pion_schedule(1)), rtol=1e-5, atol=1e-6
    )


def test_per_head_layout_must_divide_the_matrix() -> None:
    with pytest.raises(ValueError, match="head_dim=10"):
        Pion([torch.nn.Parameter(torch.zeros(64, 32))], per_head={"head_dim": 10, "axis": 0})
    with pytest.raises(ValueError, match="layout"):
        Pion([torch.nn.Parameter(torch.zeros(64, 32))], per_head=True)


def test_pion_keeps_a_low_rank_signal_that_muon_drowns_in_noise() -> None:
    """Rank-2 signal + small isotropic noise (the action-gradient regime of §4)."""
    torch.manual_seed(3)
    rows, cols = 128, 96
    u, v = random_orthonormal(rows, 2), random_orthonormal(cols, 2)
    signal = u @ torch.diag(torch.tensor([10.0, 6.0], dtype=torch.float64)) @ v.T
    grad = (signal + 0.05 * torch.randn(rows, cols, dtype=torch.float64)).float()

    def signal_fraction(update: torch.Tensor) -> float:
        update = update.double()
        projected = u @ (u.T @ update @ v) @ v.T
        return float(projected.norm() ** 2 / update.norm() ** 2)

    muon_fraction = signal_fraction(one_step(Muon, torch.zeros(rows, cols), grad, **PLAIN))
    pion_fraction = signal_fraction(one_step(Pion, torch.zeros(rows, cols), grad, kp=2, **PLAIN))
    assert pion_fraction > 0.95
    assert muon_fraction < 0.1
    assert pion_fraction > 10 * muon_fraction


def test_top_k_polar_factor_matches_svd_and_respects_the_true_rank() -> None:
    sigma = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    matrix, u, v = matrix_with_spectrum(30, 20, sigma)
    torch.testing.assert_close(top_k_polar_factor(matrix, 2), u[:, :2] @ v[:, :2].T)
    # asking for more directions than the matrix has keeps only its 5 real ones (k_eff of Alg. 1)
    torch.testing.assert_close(top_k_polar_factor(matrix, 16), u @ v.T)
    batch = torch.stack([matrix, 2 * matrix])
    torch.testing.assert_close(top_k_polar_factor(batch, 3)[1], u[:, :3] @ v[:, :3].T)
    # the official LowRankMuon keeps min(k, m, n) directions: 16 here, 11 of them numerical noise
    official = top_k_polar_factor(matrix, 16, drop_null_directions=False)
    assert torch.linalg.matrix_rank(official) == 16
    torch.testing.assert_close(official @ v, u)  # the 5 real directions are still there


def test_low_rank_muon_step_and_rank_validation() -> None:
    grad = torch.randn(24, 18)
    u, _, vh = torch.linalg.svd(grad, full_matrices=False)
    torch.testing.assert_close(
        one_step(LowRankMuon, torch.zeros(24, 18), grad, rank=4, **PLAIN),
        u[:, :4] @ vh[:4],
        rtol=1e-4,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="rank"):
        LowRankMuon([torch.nn.Parameter(torch.zeros(4, 4))], rank=0)


def test_bfloat16_compute_is_close_to_float32() -> None:
    grad = torch.randn(64, 96)
    exact = one_step(Pion, torch.zeros(64, 96), grad, kp=2, **PLAIN)
    approx = one_step(Pion, torch.zeros(64, 96), grad, kp=2, **PLAIN | {"compute_dtype": "bfloat16"})
    assert (approx - exact).norm() / exact.norm() < 0.05
    with pytest.raises(ValueError, match="compute_dtype"):
        one_step(Pion, torch.zeros(4, 4), torch.randn(4, 4), **PLAIN | {"compute_dtype": "float1"})


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(12, 32),
        torch.nn.GELU(),
        torch.nn.Linear(32, 32),
        torch.nn.GELU(),
        torch.nn.Linear(32, 4),
    )


OPTIMIZERS = {
    "muon": lambda ps: Muon(ps, lr=1e-2, weight_decay=1e-2),
    "pion": lambda ps: Pion(ps, lr=1e-2, kp=1, weight_decay=1e-2),
    "pion_per_head": lambda ps: Pion(ps, lr=1e-2, per_head={"head_dim": 4, "axis": 0}),
    "lpmuon": lambda ps: LowPassMuon(ps, lr=1e-2),
    "lrmuon": lambda ps: LowRankMuon(ps, lr=1e-2, rank=3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_resumes_bit_identically(name: str) -> None:
    data = [(torch.randn(16, 12), torch.randn(16, 4)) for _ in range(6)]

    def run(model, optimizer, batches) -> None:
        for x, y in batches:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

    def matrices(model):
        return [p for p in model.parameters() if p.ndim == 2]

    torch.manual_seed(0)
    reference = make_model()
    ref_opt = OPTIMIZERS[name](matrices(reference))
    run(reference, ref_opt, data)

    torch.manual_seed(0)
    first = make_model()
    first_opt = OPTIMIZERS[name](matrices(first))
    run(first, first_opt, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = make_model()
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = OPTIMIZERS[name](matrices(resumed))
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    run(resumed, resumed_opt, data[3:])
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_auto_compute_dtype_is_a_property_of_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from vla_train.optim import spectral

    assert spectral.resolve_compute_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(spectral, "cpu_has_native_bf16", lambda: False)
    assert spectral.resolve_compute_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(spectral, "cpu_has_native_bf16", lambda: True)
    assert spectral.resolve_compute_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert spectral.resolve_compute_dtype("float64", torch.device("cpu")) == torch.float64


def test_large_buckets_filter_in_batches_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stacking a bucket in batches (bounded memory) changes no bit of the step; a member larger than a
    batch is filtered alone."""
    from vla_train.optim import spectral
    from vla_train.optim.spectral import batches_of

    def run() -> list[torch.Tensor]:
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(16, 24)) for _ in range(5)] + [
            torch.nn.Parameter(torch.randn(8, 8))
        ]
        optimizer = Pion(params, lr=0.02, compute_dtype="float32")
        for step in range(2):
            generator = torch.Generator().manual_seed(step)
            for param in params:
                param.grad = torch.randn(param.shape, generator=generator)
            optimizer.step()
        return [param.detach().clone() for param in params]

    whole = run()
    monkeypatch.setattr(spectral, "MAX_BATCH_ELEMENTS", 2 * 16 * 24)  # batches of two matrices
    assert [len(b) for b in batches_of([(None, torch.empty(1, 16, 24))] * 5)] == [2, 2, 1]
    assert [len(b) for b in batches_of([(None, torch.empty(1, 64, 64))] * 2)] == [1, 1]
    for a, b in zip(whole, run(), strict=True):
        assert torch.equal(a, b)
