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


def test_vlanext_layout_prefix_then_chat_turn_then_queries(tmp_path: Path) -> None:
    """VLANeXt's sequence: [proprio prefix] [<|im_start|>user\\n images instruction <|im_end|>\\n
    <|im_start|>assistant\\n] [padding] [meta queries]."""
    from policies.backbones.qwen3_vl import CHAT_ASSISTANT, CHAT_USER

    backbone = Qwen3VLBackbone(config=tiny_config_dict(tmp_path), image_size=64).eval()
    ids, mask = backbone._input_ids(["lift it", "lift"], 2, torch.device("cpu"))
    text = ByT5Tokenizer()
    opening = text([CHAT_USER], add_special_tokens=False)["input_ids"][0]
    closing = text([CHAT_ASSISTANT], add_special_tokens=False)["input_ids"][0]
    image = 1 + (64 // 16) ** 2 // 4 + 1
    assert ids[0, : len(opening)].tolist() == opening
    assert ids[0, len(opening)] == backbone.config.vision_start_token_id
    body = len(opening) + 2 * image
    assert ids[0, body : body + 7].tolist() == text(["lift it"], add_special_tokens=False)["input_ids"][0]
    assert ids[0, body + 7 :].tolist() == closing and mask[1].sum() == mask[0].sum() - 3

    images, prefix = torch.rand(2, 2, 3, 64, 64), torch.randn(2, 3, backbone.hidden_size)
    queries = torch.randn(2, 4, backbone.hidden_size)
    with torch.no_grad():
        plain = backbone(images, ["lift it", "lift"], queries=queries)
        prefixed = backbone(images, ["lift it", "lift"], queries=queries, prefix=prefix)
        moved = backbone(images, ["lift it", "lift"], queries=queries, prefix=prefix + 1)
    assert prefixed.tokens.shape[1] == plain.tokens.shape[1] + 3 and prefixed.mask[:, :3].all()
    torch.testing.assert_close(prefixed.layer_tokens[0][:, :3], prefix)  # the embeddings, first
    assert not torch.allclose(prefixed.query_layer_tokens[-1], moved.query_layer_tokens[-1])

    plain_layout = Qwen3VLBackbone(config=tiny_config_dict(tmp_path), image_size=64, chat_template=False)
    ids, _ = plain_layout._input_ids(["lift"], 2, torch.device("cpu"))
    assert ids[0, 0] == backbone.config.vision_start_token_id


def test_chat_turns_come_from_the_tokenizers_own_template() -> None:
    from policies.backbones.qwen3_vl import CHAT_ASSISTANT, CHAT_USER, chat_turns

    tokenizer = ByT5Tokenizer()
    assert chat_turns(tokenizer) == (CHAT_USER, CHAT_ASSISTANT)  # no template: Qwen's format
    tokenizer.chat_template = (  # a hub-style template that adds a default system turn
        "<|im_start|>system\nBe brief.<|im_end|>\n{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% for c in m.content %}{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% else %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    opening, closing = chat_turns(tokenizer)
    assert opening == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    assert closing == CHAT_ASSISTANT
