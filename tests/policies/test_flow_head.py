"""VLANeXt-style flow head: eq. A2's path and target, Euler sampling, per-layer context with padding."""

from __future__ import annotations

import math

import pytest
import torch

from policies.base import BackboneOutput
from policies.contract import BackboneSpec
from policies.heads.flow import FlowMatchingHead

BATCH, CONTEXT, QUERIES, WIDTH, LAYERS = 2, 6, 3, 16, 3


def features() -> BackboneOutput:
    torch.manual_seed(0)
    layers = tuple(torch.randn(BATCH, CONTEXT, WIDTH) for _ in range(LAYERS + 1))
    queries = tuple(torch.randn(BATCH, QUERIES, WIDTH) for _ in range(LAYERS + 1))
    mask = torch.tensor([[True] * CONTEXT, [True] * 4 + [False] * 2])
    return BackboneOutput(layers[-1], mask, layers, queries)


def head(**overrides) -> FlowMatchingHead:
    settings = dict(width=32, heads=4, num_queries=QUERIES) | overrides
    return FlowMatchingHead(BackboneSpec(WIDTH, LAYERS), action_dim=7, state_dim=5, chunk_size=4, **settings)


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Leave adaLN-Zero's all-zero start, so that every input can matter."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.2)
    return module


def velocity(flow: FlowMatchingHead, inputs: BackboneOutput, t: float = 0.3) -> torch.Tensor:
    context, mask = flow.encode_context(inputs)
    torch.manual_seed(1)
    return flow.velocity(
        context, mask, torch.randn(BATCH, 5), torch.randn(BATCH, 4, 7), torch.full((BATCH,), t)
    )


def test_head_starts_at_zero_velocity_and_queries_go_to_the_backbone() -> None:
    flow = head()
    assert torch.equal(velocity(flow, features()), torch.zeros(BATCH, 4, 7))
    assert flow.backbone_queries(5).shape == (5, QUERIES, WIDTH)
    assert head(num_queries=0).backbone_queries(5) is None
    assert len(flow.blocks) == LAYERS + 1  # one block per hidden state, embedding output included


def test_padding_is_masked_and_blocks_read_their_own_layers() -> None:
    flow = randomize(head(depth=2))  # reads the last two hidden states
    inputs = features()
    reference = velocity(flow, inputs)
    padded = [h.clone() for h in inputs.layer_tokens]
    for h in padded:
        h[1, 4:] = 50.0
    early = list(inputs.layer_tokens)
    early[0] = early[0] + 1.0  # not read by a depth-2 head
    for changed in (padded, early):
        torch.testing.assert_close(
            velocity(
                flow, BackboneOutput(changed[-1], inputs.mask, tuple(changed), inputs.query_layer_tokens)
            ),
            reference,
        )
    late = list(inputs.layer_tokens)
    late[-2] = late[-2] + 1.0
    moved = velocity(flow, BackboneOutput(late[-1], inputs.mask, tuple(late), inputs.query_layer_tokens))
    assert not torch.allclose(moved, reference)


def test_attend_padding_reads_the_padded_positions_as_vlanexts_official_dit() -> None:
    inputs = features()
    padded = [h.clone() for h in inputs.layer_tokens]
    for h in padded:
        h[1, 4:] = 50.0
    changed = BackboneOutput(padded[-1], inputs.mask, tuple(padded), inputs.query_layer_tokens)
    flow = randomize(head(attend_padding=True))
    reference, moved = velocity(flow, inputs), velocity(flow, changed)
    torch.testing.assert_close(moved[0], reference[0])  # the unpadded sample: nothing of it changed
    assert not torch.allclose(moved[1], reference[1])


def test_loss_regresses_the_straight_path_velocity() -> None:
    flow = head()
    actions = torch.randn(BATCH, 4, 7)
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    seen = {}

    def recording(context, mask, state, noisy, t):
        seen["noisy"], seen["t"] = noisy, t
        return torch.ones_like(noisy)

    flow.velocity = recording
    loss = flow.loss(
        features(), torch.randn(BATCH, 5), actions, pad, generator=torch.Generator().manual_seed(3)
    )
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(actions.shape, generator=generator)
    t = torch.rand(BATCH, generator=generator).view(-1, 1, 1)
    torch.testing.assert_close(seen["noisy"], t * actions + (1 - t) * noise)  # a_t = t·a1 + (1−t)·a0
    target = actions - noise
    keep = ~pad
    torch.testing.assert_close(loss, ((1 - target) ** 2)[keep].mean())


def test_euler_integration_from_noise_at_t0_to_actions_at_t1() -> None:
    flow = head(num_inference_steps=4)
    times = []

    def constant(context, mask, state, noisy, t):
        times.append(float(t[0]))
        return torch.full_like(noisy, 0.5)

    flow.velocity = constant
    sample = flow.predict(features(), torch.randn(BATCH, 5), generator=torch.Generator().manual_seed(7))
    noise = torch.randn(BATCH, 4, 7, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(sample, noise + 0.5)
    assert times == [0.0, 0.25, 0.5, 0.75]


def test_dct_loss_adds_the_implied_clean_chunk_error_in_the_dct_basis() -> None:
    """VLANeXt's auxiliary term: â1 = a_t + (1−t)·v̂ against a1, after an orthonormal DCT-II along time.
    Checked against a DCT written out here from its definition, and against the time domain (Parseval)."""
    from policies.heads.flow import dct_loss

    steps = 4
    basis = torch.tensor(
        [
            [
                (0.5 if f == 0 else 1.0) ** 0.5
                * (2 / steps) ** 0.5
                * math.cos(math.pi * (2 * n + 1) * f / (2 * steps))
                for n in range(steps)
            ]
            for f in range(steps)
        ]
    )
    predicted, target = torch.randn(BATCH, steps, 7), torch.randn(BATCH, steps, 7)
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    residual = (predicted - target) * (~pad).unsqueeze(-1)
    by_definition = torch.einsum("ft,bta->bfa", basis, residual).pow(2).sum() / (6 * 7)
    torch.testing.assert_close(dct_loss(predicted, target, pad), by_definition)
    torch.testing.assert_close(dct_loss(predicted, target, pad), ((predicted - target) ** 2)[~pad].mean())

    actions = torch.randn(BATCH, steps, 7)
    flow = head(dct_loss_weight=0.1)
    flow.velocity = lambda context, mask, state, noisy, t: torch.ones_like(noisy)
    loss = flow.loss(
        features(), torch.randn(BATCH, 5), actions, pad, generator=torch.Generator().manual_seed(3)
    )
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(actions.shape, generator=generator)
    t = torch.rand(BATCH, generator=generator).view(-1, 1, 1)
    implied = t * actions + (1 - t) * noise + (1 - t)
    expected = ((1 - (actions - noise)) ** 2)[~pad].mean() + 0.1 * ((implied - actions) ** 2)[~pad].mean()
    torch.testing.assert_close(loss, expected)


def test_dct_loss_weight_must_be_a_finite_non_negative_number() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"head\.dct_loss_weight"):
            head(dct_loss_weight=bad)


def test_state_input_backbone_turns_the_recent_states_into_prefix_tokens() -> None:
    """VLANeXt's proprio path: each recent state through one linear map to the VLM's width, placed
    before the prompt; the DiT then has no state token and reads the state only through the context."""
    from policies.backbones.tiny import TinyBackbone
    from policies.contract import IncompatibleParts, check_fits

    flow = randomize(head(state_input="backbone"))
    history = torch.randn(BATCH, 8, 5)
    prefix = flow.backbone_prefix(history)
    assert prefix.shape == (BATCH, 8, WIDTH)
    torch.testing.assert_close(prefix[:, 3], flow.state_proj(history[:, 3]))
    assert flow.position.shape[0] == 4  # the chunk only
    context, mask = flow.encode_context(features())
    noisy, t = torch.randn(BATCH, 4, 7), torch.full((BATCH,), 0.3)
    torch.testing.assert_close(
        flow.velocity(context, mask, torch.randn(BATCH, 5), noisy, t),
        flow.velocity(context, mask, torch.randn(BATCH, 5), noisy, t),
    )
    assert head().backbone_prefix(history) is None
    assert "prefix_tokens" in FlowMatchingHead.requirements({"state_input": "backbone"})
    with pytest.raises(IncompatibleParts, match="state_input=head"):
        check_fits(TinyBackbone, FlowMatchingHead, {"state_input": "backbone"})
    with pytest.raises(ValueError, match=r"head\.state_input"):
        head(state_input="vlm")
