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
