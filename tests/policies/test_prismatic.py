"""Prismatic backbone: second-to-last-layer features, and a Prismatic checkpoint mapped onto our names."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from helpers import compose_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from policies.backbones.prismatic import PrismaticBackbone, map_prismatic_state_dict


def tiny_backbone(tmp_path: Path, **overrides) -> PrismaticBackbone:
    cfg = compose_train(["backbone=prismatic_tiny"], tmp_path)
    return instantiate(cfg.backbone, **overrides)


def test_towers_return_their_second_to_last_block(tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path)
    overrides = OmegaConf.to_container(
        compose_train(["backbone=prismatic_tiny"], tmp_path).backbone.vision_overrides
    )
    full = timm.create_model(
        "vit_large_patch14_reg4_dinov2", pretrained=False, num_classes=0, img_size=56, **overrides["dino"]
    )
    missing, _ = full.load_state_dict(backbone.dino.state_dict(), strict=False)
    assert all(key.startswith(("blocks.2.", "norm.")) for key in missing)  # only the unused last block
    x = torch.randn(2, 3, 56, 56)
    expected = full.get_intermediate_layers(x, n={len(full.blocks) - 2})[0]  # prefix tokens stripped
    ours = backbone.dino.forward_features(x)[:, backbone.dino.num_prefix_tokens :]
    torch.testing.assert_close(ours, expected)
    assert len(backbone.dino.blocks) == len(full.blocks) - 1


def prismatic_checkpoint_from(backbone: PrismaticBackbone) -> dict:
    """The same weights in the layout Prismatic's training code saves (plus parts it has and we drop)."""
    state = backbone.state_dict()
    projector = {
        f"projector.{index}.{kind}": state[f"projector.fc{n}.{kind}"]
        for n, index in ((1, 0), (2, 2), (3, 4))
        for kind in ("weight", "bias")
    }
    llm = {"llm." + k.removeprefix("language."): v for k, v in state.items() if k.startswith("language.")}
    vision = {
        f"{tower}_featurizer.{k.removeprefix(tower + '.')}": v
        for tower in ("dino", "siglip")
        for k, v in state.items()
        if k.startswith(tower + ".")
    }
    vision["dino_featurizer.blocks.2.norm1.weight"] = torch.zeros(32)  # last block: unused, dropped
    vision["dino_featurizer.norm.weight"] = torch.zeros(32)
    vision["siglip_featurizer.attn_pool.latent"] = torch.zeros(1, 1, 48)
    return {"model": {"projector": projector, "llm_backbone": llm, "vision_backbone": vision}}


def test_prismatic_checkpoint_loads_onto_our_modules(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = tiny_backbone(tmp_path)
    (tmp_path / "ckpt" / "checkpoints").mkdir(parents=True)
    torch.save(prismatic_checkpoint_from(source), tmp_path / "ckpt" / "checkpoints" / "step-000001.pt")
    torch.manual_seed(2)
    loaded = tiny_backbone(tmp_path, checkpoint=str(tmp_path / "ckpt"))
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    images = torch.rand(1, 2, 3, 64, 64)
    torch.testing.assert_close(loaded(images, ["lift"]).tokens, source(images, ["lift"]).tokens)


def test_bad_checkpoints_fail_loudly(tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path)
    with pytest.raises(KeyError, match="projector"):
        map_prismatic_state_dict({"llm_backbone": {}})
    broken = prismatic_checkpoint_from(backbone)
    broken["model"]["projector"]["projector.0.weight"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"projector\.fc1\.weight"):
        backbone.load_prismatic_checkpoint(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        backbone.load_prismatic_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"backbone\.checkpoint=/nope: no such file"):
        backbone.load_prismatic_checkpoint("/nope")
    (tmp_path / "torn.pt").write_bytes((tmp_path / "broken.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"backbone\.checkpoint=.*torn\.pt is not a readable"):
        backbone.load_prismatic_checkpoint(tmp_path / "torn.pt")


def test_modalities_and_per_head_layouts_come_from_the_towers_and_the_lm(tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path)
    by_name = backbone.optimizer_rules().assign(
        backbone.named_parameters(), per_head_modalities=["vision", "language"]
    )
    assert by_name["dino.reg_token"].algorithm == "adamw" and by_name["siglip.pos_embed"].algorithm == "adamw"
    assert by_name["projector.fc1.weight"].modality == "other"  # a connector, on Muon in optimizer=pion
    assert by_name["dino.patch_embed.proj.weight"].algorithm == "muon"  # as finetune_pion.py routes it
    assert by_name["dino.blocks.0.attn.qkv.weight"].head_layout.head_dim == 16
    assert by_name["siglip.blocks.0.attn.qkv.weight"].head_layout.head_dim == 24
    k_proj = by_name["language.model.layers.0.self_attn.k_proj.weight"]
    assert k_proj.head_layout.count(tuple(k_proj.parameter.shape)) == 2  # GQA: 2 key/value heads
    assert by_name["language.model.embed_tokens.weight"].algorithm == "adamw"


def test_gradient_checkpointing_and_freezing_keep_the_right_gradients(tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path, gradient_checkpointing=True, freeze=["vision"])
    features = backbone(torch.rand(1, 2, 3, 56, 56), ["lift"])
    features.tokens.sum().backward()
    assert all(p.grad is None for p in backbone.dino.parameters())
    assert backbone.language.model.layers[0].mlp.up_proj.weight.grad is not None
    assert backbone.projector.fc1.weight.grad is not None
    with pytest.raises(InstantiationException, match="unknown part 'wheels'"):
        tiny_backbone(tmp_path, freeze=["wheels"])


def test_official_prompt_and_image_placement(tmp_path: Path) -> None:
    """VLA-Adapter's official training sequence: <|im_start|>, the patches, then the rest of the Qwen chat
    prompt (QwenPromptBuilder, "openvla" system prompt, lower-cased instruction, the assistant turn open)."""
    official = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat action should the robot take to put the bowl on the plate?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    backbone = tiny_backbone(tmp_path).eval()
    tokens = backbone.tokenize(["Put the bowl on the plate", "open the drawer"])
    assert backbone.tokenizer.decode(tokens.input_ids[0], skip_special_tokens=True) == official
    seen = {}
    backbone.language.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    images = torch.rand(2, 2, 3, 56, 56)
    out = backbone(images, ["Put the bowl on the plate", "open the drawer"])
    words = backbone.language.get_input_embeddings()(tokens.input_ids)
    patches = 2 * 16  # two cameras of 4×4 patches
    embeds, mask = seen["inputs_embeds"], seen["attention_mask"]
    torch.testing.assert_close(embeds[:, 0], words[:, 0])
    torch.testing.assert_close(embeds[:, 1 + patches :], words[:, 1:])
    assert mask[:, 1 : 1 + patches].all() and torch.equal(
        mask[:, 1 + patches :], tokens.attention_mask[:, 1:]
    )
    assert out.vision_tokens == patches  # the head's task tokens: <|im_start|> and all patches but the last

    plain = tiny_backbone(tmp_path, prompt="{instruction}", image_position=0, lowercase_instruction=False)
    assert (
        plain.tokenizer.decode(plain.tokenize(["Open it"]).input_ids[0], skip_special_tokens=True)
        == "Open it"
    )


def test_a_prompt_too_long_is_refused_naming_the_option(tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path, max_prompt_tokens=200)
    with pytest.raises(ValueError, match=r"backbone\.max_prompt_tokens=200"):
        backbone.tokenize(["pick up the " + "very " * 40 + "red block"])
    with pytest.raises(InstantiationException, match=r"backbone\.prompt"):
        tiny_backbone(tmp_path, prompt="no placeholder")
