"""VLA-Adapter's original ℓ1 head (head=l1_bridge): action queries through every backbone, bridge
attention, size at full scale. The Pro head (head=l1): tests/policies/test_vla_adapter_pro.py."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from helpers import compose_train
from hydra.utils import instantiate

from policies.contract import BackboneSpec
from policies.heads.bridge import BridgeAttentionBlock
from policies.heads.l1_bridge import BridgeL1RegressionHead
from policies.vla_policy import VLAPolicy

BACKBONES = ["tiny", "prismatic_tiny", "qwen3_vl_tiny"]


def tiny_backbone(name: str, tmp_path):
    cfg = compose_train([f"backbone={name}"], tmp_path)
    return instantiate(cfg.backbone).eval(), cfg.backbone.image_size


@pytest.mark.parametrize("name", BACKBONES)
def test_queries_see_the_context_and_leave_it_unchanged(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    backbone, size = tiny_backbone(name, tmp_path)
    images = torch.rand(2, 2, 3, size, size)
    instructions = ["put the bowl on the plate", "open it"]  # different lengths → padding in between
    queries = torch.randn(2, 5, backbone.hidden_size)
    with torch.no_grad():
        plain = backbone(images, instructions)
        queried = backbone(images, instructions, queries=queries)
        alone = backbone(images[1:], instructions[1:], queries=queries[1:])
    assert plain.query_layer_tokens is None
    assert len(queried.query_layer_tokens) == backbone.num_layers + 1 == len(queried.layer_tokens)
    assert queried.query_layer_tokens[-1].shape == (2, 5, backbone.hidden_size)
    torch.testing.assert_close(queried.tokens, plain.tokens)  # causal: the context ignores the queries
    # the short instruction's queries sit right after its own tokens, whatever the batch's padding
    torch.testing.assert_close(
        queried.query_layer_tokens[-1][1:], alone.query_layer_tokens[-1], atol=1e-5, rtol=1e-4
    )


def test_bridge_block_is_one_softmax_with_gated_raw_logits() -> None:
    torch.manual_seed(0)
    block = BridgeAttentionBlock(width=16, heads=2)
    torch.nn.init.constant_(block.gate, 0.7)
    x, raw, aq, proprio = (
        torch.randn(2, 3, 16),
        torch.randn(2, 6, 16),
        torch.randn(2, 4, 16),
        torch.randn(2, 1, 16),
    )
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])

    bridge = torch.cat([block.query_norm(aq), proprio], 1)
    raw_n = block.raw_norm(raw)
    heads = lambda t: t.view(2, t.size(1), 2, 8).transpose(1, 2)  # noqa: E731
    q = heads(block.q_proj(x))
    logits = [q @ heads(block.k_proj(s)).transpose(-1, -2) / math.sqrt(8) for s in (x, bridge, raw_n)]
    logits[2] = torch.tanh(torch.tensor(0.7)) * logits[2]
    logits[2] = logits[2].masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(torch.cat(logits, -1), -1)
    values = heads(block.v_proj(torch.cat([x, bridge, raw_n], 1)))
    attended = block.o_proj((weights @ values).transpose(1, 2).flatten(2))
    expected = torch.relu(block.ffn(block.ffn_norm(x + attended)))

    torch.testing.assert_close(block(x, raw, mask, aq, proprio), expected)
    # padded raw tokens get no weight: changing them changes nothing
    changed = raw.clone()
    changed[1, 4:] = 100.0
    torch.testing.assert_close(block(x, changed, mask, aq, proprio), expected)


def test_gate_starts_closed_and_learns() -> None:
    policy = VLAPolicy(
        instantiate(compose_train(["backbone=tiny"]).backbone),
        functools.partial(BridgeL1RegressionHead, num_queries=4, heads=4),
        action_dim=7,
        state_dim=8,
        chunk_size=4,
    )
    head = policy.head
    assert len(head.policy.blocks) == policy.backbone.num_layers
    assert all(float(block.gate.detach()) == 0.0 for block in head.policy.blocks)
    size = policy.backbone.image_size
    batch = {
        "images": torch.rand(2, 2, 3, size, size),
        "instruction": ["lift", "lift the cube"],
        "state": torch.randn(2, 8),
        "actions": torch.randn(2, 4, 7),
        "action_is_pad": torch.zeros(2, 4, dtype=torch.bool),
    }
    policy(batch).backward()
    assert all(block.gate.grad.abs() > 0 for block in head.policy.blocks)
    assert head.action_queries.grad.abs().sum() > 0  # the queries learn through the language model


def test_full_scale_bridge_policy_is_the_original_vla_adapters_97m() -> None:
    with torch.device("meta"):
        head = BridgeL1RegressionHead(backbone=BackboneSpec(896, 24), action_dim=7, state_dim=8, chunk_size=8)
    bridge = sum(p.numel() for p in head.policy.parameters())
    assert bridge == pytest.approx(97e6, rel=0.02)  # VLA-Adapter's "Policy" size
    by_name = head.optimizer_rules().assign(head.named_parameters(), per_head_modalities=["action"])
    assert by_name["action_queries"].algorithm == "adamw"
    assert by_name["output_proj.weight"].algorithm == "adamw"
    assert by_name["policy.blocks.3.gate"].algorithm == "adamw"
    assert by_name["policy.blocks.3.k_proj.weight"].algorithm == "pion"
    assert by_name["policy.blocks.3.o_proj.weight"].head_layout.axis == 1
    assert by_name["proprio_proj.0.weight"].algorithm == "muon"  # a connector, as the official run has it
    assert by_name["proprio_proj.0.weight"].modality == "other"
