"""RLVR optimizers on a tiny Qwen3: per-head attention from the config, everything accounted for."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from vla_train.optim import HeadLayout, ModalityOptimizerOptions
from vla_train.rlvr.optimizer import build_rlvr_optimizer


def tiny_qwen3(tied: bool) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config)


def groups_by_name(optimizer) -> dict[str, dict]:
    return {
        name: group
        for inner in optimizer.optimizers.values()
        for group in inner.param_groups
        for name in group["param_names"]
    }


@pytest.mark.parametrize("tied", [True, False])
def test_per_head_pion_splits_gqa_attention_and_keeps_embeddings_on_adamw(tied: bool) -> None:
    model = tiny_qwen3(tied)
    options = ModalityOptimizerOptions(language="pion", per_head_modalities=["language"])
    groups = groups_by_name(build_rlvr_optimizer(model, options, lr=1e-6))
    assert set(groups) == {name for name, _ in model.named_parameters()}  # every parameter, once
    layer = "model.layers.1."
    for projection, axis in (("q_proj", 0), ("k_proj", 0), ("v_proj", 0), ("o_proj", 1)):
        group = groups[f"{layer}self_attn.{projection}.weight"]
        layout = group["per_head"]  # the group keeps the layout as a plain dict (checkpoints)
        assert group["algorithm"] == "pion" and HeadLayout(**layout) == HeadLayout(head_dim=16, axis=axis)
    assert groups[f"{layer}mlp.down_proj.weight"]["algorithm"] == "pion"
    assert not groups[f"{layer}mlp.down_proj.weight"]["per_head"]  # MLP matrices stay whole
    for name in ("model.embed_tokens.weight", f"{layer}self_attn.q_norm.weight", "model.norm.weight"):
        assert groups[name]["algorithm"] == "adamw"
    if not tied:
        assert groups["lm_head.weight"]["algorithm"] == "adamw"


@pytest.mark.parametrize("algorithm", ["adamw", "muon", "pion", "lpmuon"])
def test_each_rlvr_optimizer_takes_a_step(algorithm: str) -> None:
    model = tiny_qwen3(tied=True)
    per_head = ["language"] if algorithm == "pion" else []
    options = ModalityOptimizerOptions(language=algorithm, per_head_modalities=per_head)
    optimizer = build_rlvr_optimizer(model, options, lr=1e-3)
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    tokens = torch.randint(0, 32, (2, 6))
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, before)


def test_the_rlvr_preset_step_is_the_official_per_head_pion_update() -> None:
    """One step of ``optimizer=pion_per_head``'s settings against the official RL optimizer's formula
    (RL/verl/verl/utils/muon.py, PerHeadPionAdamW, written out from its description): each head's block
    scaled to unit Frobenius norm, 5 Suppression steps X ← (2.5·XXᵀ − 1.5·(XXᵀ)²)·X on the short side,
    times 5.0·sqrt(max(block rows, block cols)); decoupled weight decay first; momentum 0.95 without
    Nesterov, whose first step is the gradient's direction."""
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    model = Qwen3ForCausalLM(config)
    options = ModalityOptimizerOptions(
        language="pion", per_head_modalities=["language"], kp=0, lr=1e-3, weight_decay=0.01,
        lr_scale_factor=5.0, nesterov=False, compute_dtype="float32",
    )  # fmt: skip
    optimizer = build_rlvr_optimizer(model, options)
    for param in model.parameters():  # a dominant direction and noise: Suppression keeps the former
        param.grad = 0.05 * torch.randn_like(param)
        if param.ndim == 2:
            param.grad += 3 * torch.randn(param.shape[0], 1) @ torch.randn(1, param.shape[1])
    params = dict(model.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer.step()

    def suppressed(blocks: torch.Tensor) -> torch.Tensor:  # (heads, short side, long side)
        x = blocks / blocks.norm(dim=(-2, -1), keepdim=True)
        for _ in range(5):
            a = x @ x.mT
            x = (2.5 * a - 1.5 * a @ a) @ x
        return x

    q_name, o_name = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"
    q_grad = params[q_name].grad.view(4, 16, 64)  # 4 heads of 16 rows × 64
    update = suppressed(q_grad).reshape(64, 64) * 5.0 * 64**0.5
    expected = before[q_name] * (1 - 1e-3 * 0.01) - 1e-3 * update
    torch.testing.assert_close(params[q_name].detach(), expected, atol=1e-6, rtol=1e-5)
    o_grad = params[o_name].grad.view(64, 4, 16).permute(1, 2, 0)  # 4 heads of 64 × 16, short side first
    update = suppressed(o_grad).permute(2, 0, 1).reshape(64, 64) * 5.0 * 64**0.5
    expected = before[o_name] * (1 - 1e-3 * 0.01) - 1e-3 * update
    torch.testing.assert_close(params[o_name].detach(), expected, atol=1e-6, rtol=1e-5)
    assert (1e-3 * update).pow(2).mean().sqrt() > 1e-4  # a real step, not two zeros compared
