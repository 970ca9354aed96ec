"""VLA-Adapter-Pro (head=l1): the official block's computation, its layout and strict checkpoint loading.

The official names and shapes are written out here from the official head (``MLPResNet`` with
``MLPResNetBlock_Pro``, ``ProprioProjector``, the VLA's ``action_queries``), independently of the
name map in ``policies/vla_adapter_weights.py``, as the π0.5 layout test does for lerobot/pi05_base.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from helpers import compose_train
from hydra.utils import instantiate
from safetensors.torch import save_file

from policies.base import BackboneOutput
from policies.contract import BackboneSpec
from policies.heads.l1 import L1RegressionHead
from policies.heads.vla_adapter_pro import ProBridgeBlock
from policies.vla_adapter_weights import head_checkpoint_name
from policies.vla_policy import VLAPolicy

BLOCK_LINEARS = (
    "ffn.1",
    "q_proj",
    "k_self",
    "v_self",
    "k_adapter",
    "v_adapter",
    "k_task",
    "v_task",
    "o_proj",
)


def official_layout(width: int, layers: int, action_dim: int, state_dim: int, queries: int) -> dict:
    """{(file, key): shape} of a VLA-Adapter-Pro checkpoint's head, proprio projector and queries."""
    head = {
        "model.layer_norm1.weight": (action_dim * width,),
        "model.layer_norm1.bias": (action_dim * width,),
        "model.fc1.weight": (width, action_dim * width),
        "model.fc1.bias": (width,),
        "model.layer_norm2.weight": (width,),
        "model.layer_norm2.bias": (width,),
        "model.fc2.weight": (action_dim, width),
        "model.fc2.bias": (action_dim,),
    }
    for i in range(layers):
        block = f"model.mlp_resnet_blocks.{i}."
        head[block + "gating_factor"] = (1,)
        head[block + "ffn.0.weight"] = head[block + "ffn.0.bias"] = (width,)
        for linear in BLOCK_LINEARS:
            head[f"{block}{linear}.weight"], head[f"{block}{linear}.bias"] = (width, width), (width,)
        head[block + "film_gen.0.weight"], head[block + "film_gen.0.bias"] = (2 * width, width), (2 * width,)
    proprio = {
        "fc1.weight": (width, state_dim),
        "fc1.bias": (width,),
        "fc2.weight": (width, width),
        "fc2.bias": (width,),
    }
    return {
        **{("action_head", k): v for k, v in head.items()},
        **{("proprio_projector", k): v for k, v in proprio.items()},
        ("vla", "action_queries.weight"): (queries, width),
    }


def test_full_size_head_is_the_official_layout_tensor_for_tensor() -> None:
    with torch.device("meta"):
        head = L1RegressionHead(backbone=BackboneSpec(896, 24), action_dim=7, state_dim=8, chunk_size=8)
    official = official_layout(896, 24, 7, 8, 64)
    ours = {head_checkpoint_name(name): tuple(t.shape) for name, t in head.state_dict().items()}
    assert set(ours) == set(official)  # one to one: nothing missing, nothing extra
    assert {key: shape for key, shape in ours.items() if official[key] != shape} == {}
    assert len(official) == 560 + 4 + 1
    head_total = sum(math.prod(s) for (file, _), s in official.items() if file == "action_head")
    assert head_total == 217_864_223
    trained = sum(p.numel() for p in head.model.parameters() if p.requires_grad)
    assert trained == 217_864_223 - 24 * (1792 * 896 + 1792)  # film_gen: in the file, unused, frozen


def reference_rope(x: torch.Tensor) -> torch.Tensor:
    """The official rotation, dimension by dimension: dimension k turns by t · 10000^(−2(k mod d/2)/d),
    pairs (2j, 2j+1) rotate together."""
    d = x.size(-1)
    inv = [10000 ** (-2 * (k % (d // 2)) / d) for k in range(d)]
    out = torch.empty_like(x)
    for t in range(x.size(-2)):
        for j in range(d // 2):
            a0, a1 = t * inv[2 * j], t * inv[2 * j + 1]
            even, odd = x[..., t, 2 * j], x[..., t, 2 * j + 1]
            out[..., t, 2 * j] = even * math.cos(a0) - odd * math.sin(a0)
            out[..., t, 2 * j + 1] = odd * math.cos(a1) + even * math.sin(a1)
    return out


def test_pro_block_is_one_softmax_over_self_adapter_and_gated_task_keys() -> None:
    torch.manual_seed(0)
    block = ProBridgeBlock(width=16, heads=2)
    torch.nn.init.constant_(block.gating_factor, 0.6)
    x, task, adapter, proprio = (
        torch.randn(2, 3, 16),
        torch.randn(2, 6, 16),
        torch.randn(2, 4, 16),
        torch.randn(2, 1, 16),
    )
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])

    heads = lambda t: t.view(2, t.size(1), 2, 8).transpose(1, 2)  # noqa: E731
    adapter_tokens = torch.cat([adapter, proprio], 1)
    q = reference_rope(heads(block.q_proj(x)))
    keys = [
        reference_rope(heads(block.k_self(x))),
        reference_rope(heads(block.k_adapter(adapter_tokens))),
        reference_rope(heads(block.k_task(task))),
    ]
    logits = [q @ k.transpose(-1, -2) / math.sqrt(8) for k in keys]
    logits[2] = math.tanh(0.6) * logits[2]
    logits[2] = logits[2].masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(torch.cat(logits, -1), -1)
    values = torch.cat(
        [heads(block.v_self(x)), heads(block.v_adapter(adapter_tokens)), heads(block.v_task(task))], 2
    )
    attended = block.o_proj((weights @ values).transpose(1, 2).flatten(2))
    expected = torch.relu(block.ffn[1](block.ffn[0](attended + x)))

    torch.testing.assert_close(block(x, task, mask, adapter, proprio), expected)
    changed = task.clone()
    changed[1, 4:] = 100.0  # padded task tokens get no weight
    torch.testing.assert_close(block(x, changed, mask, adapter, proprio), expected)


def tiny_policy() -> VLAPolicy:
    return VLAPolicy(
        instantiate(compose_train(["backbone=tiny"]).backbone),
        functools.partial(L1RegressionHead, num_queries=4, heads=4),
        action_dim=7,
        state_dim=8,
        chunk_size=4,
    )


def test_gate_opens_film_gen_stays_frozen_and_the_training_noise_is_reproducible() -> None:
    torch.manual_seed(0)
    policy = tiny_policy()
    blocks = policy.head.model.mlp_resnet_blocks
    assert len(blocks) == policy.backbone.num_layers
    assert all(float(block.gating_factor.detach()) == 0.0 for block in blocks)
    size = policy.backbone.image_size
    batch = {
        "images": torch.rand(2, 2, 3, size, size),
        "instruction": ["lift", "lift the cube"],
        "state": torch.randn(2, 8),
        "actions": torch.randn(2, 4, 7),
        "action_is_pad": torch.zeros(2, 4, dtype=torch.bool),
    }
    losses = [policy(batch, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(losses[0], losses[1])  # the input noise comes from the step's generator
    assert not torch.equal(losses[0], policy(batch, generator=torch.Generator().manual_seed(4)))
    losses[0].backward()
    assert all(block.gating_factor.grad.abs() > 0 for block in blocks)
    assert all(
        p.grad is None and not p.requires_grad for block in blocks for p in block.film_gen.parameters()
    )
    assert policy.head.action_queries.grad.abs().sum() > 0  # the queries learn through the language model
    policy.eval()  # inference: zero input rows, no randomness
    first = policy.predict_action_chunk(batch, torch.Generator().manual_seed(1))
    second = policy.predict_action_chunk(batch, torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, second)


def write_official_checkpoint(directory: Path, layout: dict, step: int = 1000) -> dict:
    """A checkpoint directory as VLA-Adapter's finetune script writes it, with random tensors."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {key: torch.randn(shape) for key, shape in layout.items()}
    for component in ("action_head", "proprio_projector"):
        state = {f"module.{k}": v for (c, k), v in tensors.items() if c == component}  # saved from DDP
        torch.save(state, directory / f"{component}--{step}_checkpoint.pt")
    vla = {k: v for (c, k), v in tensors.items() if c == "vla"}
    save_file(
        {**vla, "language_model.model.norm.weight": torch.ones(16)}, str(directory / "model.safetensors")
    )
    return tensors


def test_a_released_checkpoint_loads_strictly_into_head_l1(tmp_path: Path) -> None:
    dims = dict(width=16, layers=2, action_dim=3, state_dim=4, queries=5)
    tensors = write_official_checkpoint(tmp_path / "ckpt", official_layout(**dims))
    build = functools.partial(
        L1RegressionHead,
        backbone=BackboneSpec(16, 2),
        action_dim=3,
        state_dim=4,
        chunk_size=2,
        num_queries=5,
        heads=2,
    )
    head = build(checkpoint=str(tmp_path / "ckpt"))
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, tensors[head_checkpoint_name(name)]), name

    broken = tmp_path / "non_pro"
    layout = official_layout(**dims)
    layout[("action_head", "model.mlp_resnet_blocks.0.k_proj.weight")] = (16, 16)  # the original head's
    del layout[("action_head", "model.mlp_resnet_blocks.0.k_self.weight")]
    write_official_checkpoint(broken, layout)
    with pytest.raises(KeyError, match=r"k_self.*action_head--1000_checkpoint\.pt.*k_proj"):
        build(checkpoint=str(broken))
    with pytest.raises(ValueError, match=r"shapes differ.*env\.action_dim"):
        functools.partial(build, action_dim=4)(checkpoint=str(tmp_path / "ckpt"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build(checkpoint=str(tmp_path / "nope"))


def features_with_text(batch: int = 2, vision: int = 6, text: int = 4, queries: int = 5, width: int = 16):
    """Hand-made backbone features over [6 image tokens, 4 instruction tokens] (the second sample's
    instruction padded by two) and 5 queries, 3 hidden states."""
    generator = torch.Generator().manual_seed(0)
    context = tuple(torch.randn(batch, vision + text, width, generator=generator) for _ in range(3))
    query = tuple(torch.randn(batch, queries, width, generator=generator) for _ in range(3))
    mask = torch.ones(batch, vision + text, dtype=torch.bool)
    mask[1, -2:] = False
    return BackboneOutput(context[-1], mask, context, query, vision_tokens=vision)


def open_gates(head: L1RegressionHead) -> L1RegressionHead:
    for block in head.model.mlp_resnet_blocks:
        block.gating_factor.data.fill_(1.0)  # task keys count from the start (the gate opens in training)
    return head


def test_official_slicing_reads_image_tokens_and_queries_one_position_early() -> None:
    """As the official head: task tokens are the images only; query features come from one position
    before each query — the last real instruction token, then queries 0..Q−2 (never the last)."""
    head = open_gates(
        L1RegressionHead(BackboneSpec(16, 2), action_dim=3, state_dim=4, chunk_size=2, num_queries=5, heads=2)
    ).eval()
    state = torch.zeros(2, 4)
    base = features_with_text()
    predict = lambda features: head.predict(features, state)  # noqa: E731
    reference = predict(base)

    def edited(layer_edit) -> BackboneOutput:
        context = tuple(h.clone() for h in base.layer_tokens)
        queries = tuple(h.clone() for h in base.query_layer_tokens)
        layer_edit(context, queries)
        return BackboneOutput(context[-1], base.mask, context, queries, vision_tokens=6)

    def text_token(position):
        return lambda context, queries: context[1][:, position].add_(1.0)

    assert not torch.equal(predict(edited(text_token(0))), reference)  # an image token is read
    unchanged = predict(edited(text_token(6)))  # an instruction token: neither a task token nor a query's
    assert torch.equal(unchanged, reference)
    last_real = predict(edited(text_token(7)))  # sample 1's last real token (its instruction padded by two)
    assert torch.equal(last_real[0], reference[0]) and not torch.equal(last_real[1], reference[1])
    last_query = predict(edited(lambda context, queries: queries[1][:, -1].add_(1.0)))
    assert torch.equal(last_query, reference)  # the last query's own features are never read
    unshifted = open_gates(
        L1RegressionHead(
            BackboneSpec(16, 2), 3, 4, 2, num_queries=5, heads=2, task_tokens="all", shift_queries=False
        )
    )
    unshifted.load_state_dict(head.state_dict())
    unshifted.eval()
    assert not torch.equal(unshifted.predict(edited(text_token(6)), state), unshifted.predict(base, state))
    assert not torch.equal(unshifted.predict(edited(text_token(0)), state), unshifted.predict(base, state))


def test_backbones_without_leading_image_tokens_need_task_tokens_all(tmp_path: Path) -> None:
    from helpers import compose_train
    from hydra.errors import ConfigCompositionException

    from vla_train.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"vision_tokens.*head\.task_tokens=all"):
        validate_config(compose_train(["backbone=qwen3_vl_tiny", "head=l1"], tmp_path))
    validate_config(compose_train(["backbone=qwen3_vl_tiny", "head=l1", "head.task_tokens=all"], tmp_path))
    with pytest.raises(ConfigCompositionException, match="task_tokens"):  # at compose time
        compose_train(["head.task_tokens=text"], tmp_path)
