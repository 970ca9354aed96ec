"""The policy interface: normalization, action chunking, and a modality for every parameter."""

from __future__ import annotations

import functools

import pytest
import torch

from policies.backbones.tiny import TinyBackbone
from policies.heads.flow import FlowMatchingHead
from policies.heads.l1 import L1RegressionHead
from policies.vla_policy import Normalizer, VLAPolicy

TINY_L1 = functools.partial(L1RegressionHead, num_queries=4, heads=4)
TINY_FLOW = functools.partial(FlowMatchingHead, width=32, heads=4, num_queries=2)


def make_policy(head=TINY_L1, n_action_steps: int = 3) -> VLAPolicy:
    return VLAPolicy(
        TinyBackbone(image_size=32, patch_size=8),
        head,
        action_dim=7,
        state_dim=8,
        chunk_size=4,
        n_action_steps=n_action_steps,
    )


def observation(batch: int = 2) -> dict:
    return {
        "images": torch.rand(batch, 2, 3, 32, 32),
        "state": torch.randn(batch, 8),
        "instruction": ["lift the red cube", "lift"][:batch],
    }


@pytest.mark.parametrize("mode", ["mean_std", "min_max"])
def test_normalizer_round_trip(mode: str) -> None:
    normalizer = Normalizer(3, mode)
    stats = {"mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 0.5], "min": [-1.0, 0.0, 1.0], "max": [1.0, 4.0, 2.0]}
    normalizer.set_statistics(stats, "action")
    x = torch.randn(5, 3)
    torch.testing.assert_close(normalizer.unnormalize(normalizer.normalize(x)), x)
    if mode == "min_max":
        torch.testing.assert_close(normalizer.normalize(torch.tensor([[1.0, 4.0, 2.0]])), torch.ones(1, 3))
    with pytest.raises(KeyError, match="lack"):
        normalizer.set_statistics({"q01": [0.0]}, "action")


def test_select_action_replans_every_n_action_steps() -> None:
    policy = make_policy(n_action_steps=3).eval()
    calls = []
    original = policy.predict_action_chunk

    def counting(obs, generator=None):
        calls.append(1)
        return original(obs, generator)

    policy.predict_action_chunk = counting
    actions = [policy.select_action(observation()) for _ in range(7)]
    assert len(calls) == 3 and all(a.shape == (2, 7) for a in actions)
    policy.reset()
    policy.select_action(observation())
    assert len(calls) == 4


@pytest.mark.parametrize("head", [TINY_L1, TINY_FLOW])
def test_every_parameter_has_a_modality_and_the_head_is_action(head) -> None:
    policy = make_policy(head)
    by_name = policy.optimizer_rules().assign(
        policy.named_parameters(), per_head_modalities=["vision", "language", "action"]
    )
    assert len(by_name) == sum(1 for p in policy.parameters() if p.requires_grad)
    connectors = {"head.proprio_projector", "head.meta_queries", "head.state_proj"}  # modality "other"
    for name, assignment in by_name.items():
        if name.startswith("head."):
            is_connector = any(name.startswith(c) for c in connectors)
            assert assignment.modality == ("other" if is_connector else "action"), name
    output = "head.output_proj.weight" if head is TINY_FLOW else "head.model.fc2.weight"
    assert by_name[output].algorithm == "adamw"
    assert by_name["backbone.language.embed_tokens.weight"].algorithm == "adamw"
    assert by_name["backbone.vision.pos_embed"].algorithm == "adamw"
    assert by_name["backbone.language.layers.0.self_attn.k_proj.weight"].head_layout.head_dim == 16
    query = (
        "head.blocks.0.q_proj.weight" if head is TINY_FLOW else "head.model.mlp_resnet_blocks.0.k_task.weight"
    )
    assert by_name[query].head_layout.head_dim == (8 if head is TINY_FLOW else 16)


def test_flow_head_sampling_is_reproducible_with_a_generator() -> None:
    policy = make_policy(TINY_FLOW).eval()
    inputs = observation()
    first = policy.predict_action_chunk(inputs, torch.Generator().manual_seed(3))
    second = policy.predict_action_chunk(inputs, torch.Generator().manual_seed(3))
    other = policy.predict_action_chunk(inputs, torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and first.shape == (2, 4, 7)
    assert not torch.equal(first, other)


def test_image_size_mismatch_names_the_setting() -> None:
    policy = make_policy()
    with pytest.raises(ValueError, match=r"backbone\.image_size"):
        policy.predict_action_chunk({**observation(), "images": torch.rand(2, 2, 3, 64, 64)})
