"""Qwen3-VL backbone: our patching equals the hub processor's, the real loading path works on a tiny
checkpoint saved in the real layout, and per-head rules come from the model's own config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import (
    ByT5Tokenizer,
    Qwen2VLImageProcessorFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from policies.backbones.qwen3_vl import Qwen3VLBackbone, images_to_patches


def tiny_config_dict(tmp_path: Path) -> dict:
    cfg = compose_train(["backbone=qwen3_vl_tiny"], tmp_path)
    return OmegaConf.to_container(cfg.backbone.config, resolve=True)


def test_patches_match_the_qwen_image_processor() -> None:
    images = torch.rand(3, 3, 64, 96)
    processor = Qwen2VLImageProcessorFast(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        size={"shortest_edge": 32 * 32, "longest_edge": 4096 * 4096},
        do_rescale=False,
    )
    expected = processor(images=list(images), return_tensors="pt")
    pixel_values, grid = images_to_patches(
        images, (64, 96), patch_size=16, merge_size=2, temporal_patch_size=2
    )
    assert torch.equal(grid, expected["image_grid_thw"])
    torch.testing.assert_close(pixel_values, expected["pixel_values"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of"):
        images_to_patches(images, (48, 96), 16, 2, 2)


def test_pretrained_loading_path_on_a_tiny_checkpoint(tmp_path: Path) -> None:
    config = Qwen3VLConfig(**tiny_config_dict(tmp_path))
    reference = Qwen3VLForConditionalGeneration(config).eval()
    reference.save_pretrained(tmp_path / "ckpt")  # the hub layout: model.visual.*, model.language_model.*
    ByT5Tokenizer().save_pretrained(tmp_path / "ckpt")
    backbone = Qwen3VLBackbone(pretrained=str(tmp_path / "ckpt"), image_size=64, dtype="float32").eval()
    loaded = dict(backbone.model.named_parameters())
    for name, tensor in reference.model.named_parameters():
        assert torch.equal(loaded[name], tensor), name
    images = torch.rand(2, 2, 3, 64, 64)
    features = backbone(images, ["lift the red cube", "lift"])
    assert features.tokens.shape[0] == 2 and features.tokens.shape[-1] == backbone.hidden_size
    assert features.mask[1].sum() < features.mask[0].sum()  # the shorter instruction is padded
    tokens_per_camera = 1 + (64 // 16) ** 2 // 4 + 1
    assert features.mask[:, : 2 * tokens_per_camera].all()
    pixel_values, grid = images_to_patches(images.flatten(0, 1), (64, 64), 16, 2, 2)
    input_ids, mask = backbone._input_ids(["lift the red cube", "lift"], 2, images.device)
    with torch.no_grad():
        direct = reference.model(
            input_ids=input_ids,
            attention_mask=mask,
            pixel_values=pixel_values,
            image_grid_thw=grid,
            use_cache=False,
        ).last_hidden_state
    torch.testing.assert_close(features.tokens.detach(), direct)


def test_per_head_rules_follow_the_configured_grouped_query_attention(tmp_path: Path) -> None:
    cfg = compose_train(["backbone=qwen3_vl_tiny"], tmp_path)
    backbone = instantiate(cfg.backbone)
    assignments = backbone.optimizer_rules().assign(
        backbone.named_parameters(), per_head_modalities=["vision", "language"]
    )
    k_proj = assignments["model.language_model.layers.0.self_attn.k_proj.weight"]
    assert k_proj.head_layout.head_dim == 16 and k_proj.head_layout.count(tuple(k_proj.parameter.shape)) == 2
    q_proj = assignments["model.language_model.layers.0.self_attn.q_proj.weight"]
    assert q_proj.head_layout.count(tuple(q_proj.parameter.shape)) == 4
    assert (
        assignments["model.visual.blocks.0.attn.qkv.weight"].head_layout.count((192, 64)) == 12
    )  # 3 × 4 heads
    assert assignments["model.language_model.embed_tokens.weight"].algorithm == "adamw"
    assert assignments["model.visual.patch_embed.proj.weight"].algorithm == "adamw"
    assert assignments["model.visual.merger.linear_fc1.weight"].modality == "vision"


def test_freeze_and_bad_settings(tmp_path: Path) -> None:
    config = tiny_config_dict(tmp_path)
    frozen = Qwen3VLBackbone(pretrained=None, config=config, image_size=64, freeze=["vision"])
    assert not any(p.requires_grad for p in frozen.model.visual.parameters())
    assert all(p.requires_grad for p in frozen.model.language_model.parameters())
    with pytest.raises(ValueError, match="freeze"):
        Qwen3VLBackbone(pretrained=None, config=config, image_size=64, freeze=["action"])
    with pytest.raises(ValueError, match="image_size=50"):
        Qwen3VLBackbone(pretrained=None, config=config, image_size=50)
