"""π0.5 from released parts: the split prefix/expert computation equals π0.5's joint attention, the
published weight layout loads, the prompt and time conventions are π0.5's, and the modalities are tagged
as the paper assigns them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import save_file
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

from policies.backbones.pi05 import PI05Backbone, discretize_state, state_prompt
from policies.contract import IncompatibleParts
from policies.heads.pi05 import PI05ActionExpert
from policies.vla_policy import Normalizer, VLAPolicy

ACTION_DIM, CHUNK = 8, 5


def tiny_parts(tmp_path: Path, **backbone_overrides) -> tuple[PI05Backbone, PI05ActionExpert]:
    cfg = compose_train(["backbone=pi05_tiny", "head=pi05_tiny", "env=droid"], tmp_path)
    backbone = instantiate(cfg.backbone, **backbone_overrides)
    head = instantiate(cfg.head)(backbone=backbone.spec, action_dim=ACTION_DIM, state_dim=8, chunk_size=CHUNK)
    return backbone, head


def open_the_gates(head: PI05ActionExpert) -> None:
    """Random adaptive-norm weights (they start at zero, which would hide the expert's layers)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in head.named_parameters():
            if ".dense." in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))


def joint_reference(backbone, head, images, instructions, state, noisy, t) -> torch.Tensor:
    """π0.5's forward written out as openpi defines it: one sequence [prefix | actions] per layer, each
    stream through its own weights, one attention with the block mask (prefix bidirectional, actions
    see the prefix and each other), positions = cumsum(valid) − 1, eager softmax."""
    text, text_mask = backbone.embed_prompts(backbone.prompts(instructions, state), images.device)
    visual = backbone.embed_images(images)
    prefix = torch.cat([visual, text], 1)
    valid = torch.cat(
        [torch.ones(visual.shape[:2], dtype=torch.bool), text_mask, torch.ones(len(t), CHUNK).bool()], 1
    )
    starts_block = torch.zeros(valid.shape, dtype=torch.long)
    starts_block[:, prefix.size(1)] = 1
    block = starts_block.cumsum(1)
    allowed = (block[:, None, :] <= block[:, :, None]) & valid[:, None, :] & valid[:, :, None]
    positions = valid.long().cumsum(1) - 1
    streams = [prefix, head.action_in_proj(noisy)]
    cond = head.time_condition(t)
    cos, sin = backbone.language.rotary_emb(prefix, positions)
    split = prefix.size(1)
    for vlm, expert in zip(backbone.language.layers, head.expert.layers, strict=True):
        hidden = [vlm.input_layernorm(streams[0]), *expert.input_layernorm(streams[1], cond)]
        gate = hidden.pop()
        q, k, v = (
            torch.cat(
                [
                    getattr(layer.self_attn, f"{p}_proj")(h).unflatten(-1, (-1, 16)).transpose(1, 2)
                    for layer, h in ((vlm, hidden[0]), (expert, hidden[1]))
                ],
                dim=2,
            )
            for p in "qkv"
        )
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = (x.expand(-1, q.size(1), -1, -1) for x in (k, v))  # one key/value head
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(16)
        scores = scores.masked_fill(~allowed[:, None], -2.3819763e38)
        out = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
        streams[0] = streams[0] + vlm.self_attn.o_proj(out[:, :split])
        streams[1] = streams[1] + expert.self_attn.o_proj(out[:, split:]) * gate
        streams[0] = streams[0] + vlm.mlp(vlm.post_attention_layernorm(streams[0]))
        normed, gate = expert.post_attention_layernorm(streams[1], cond)
        streams[1] = streams[1] + expert.mlp(normed) * gate
    return head.action_out_proj(head.expert.norm(streams[1], cond)[0])


def test_cached_prefix_equals_pi05_joint_attention(tmp_path: Path) -> None:
    backbone, head = tiny_parts(tmp_path)
    open_the_gates(head)
    images = torch.rand(2, 2, 3, 64, 64)
    instructions = ["pick up the cube", "put the cucumber on the plate, then let go of it"]  # padding
    state = torch.rand(2, 8) * 2 - 1
    noisy, t = torch.randn(2, CHUNK, 32), torch.tensor([0.3, 0.9])
    features = backbone(images, instructions, state=state)
    ours = head.velocity(features, noisy, t)
    reference = joint_reference(backbone, head, images, instructions, state, noisy, t)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    # the expert really reads the VLM and the time (the comparison above is not vacuous)
    other = backbone(images, ["something else entirely", instructions[1]], state=state)
    assert not torch.allclose(head.velocity(other, noisy, t)[0], ours[0])
    assert torch.allclose(head.velocity(other, noisy, t)[1], ours[1], atol=1e-6)  # per-sample
    assert not torch.allclose(head.velocity(features, noisy, t.flip(0)), ours)


def test_expert_starts_from_closed_gates_and_learns_them(tmp_path: Path) -> None:
    backbone, head = tiny_parts(tmp_path)
    noisy = torch.randn(1, CHUNK, 32)
    one = head.velocity(
        backbone(torch.rand(1, 2, 3, 64, 64), ["a"], state=torch.zeros(1, 8)), noisy, torch.ones(1)
    )
    two = head.velocity(
        backbone(torch.rand(1, 2, 3, 64, 64), ["b"], state=torch.ones(1, 8)), noisy, torch.zeros(1)
    )
    torch.testing.assert_close(one, two)  # zero gates: no layer contributes yet, whatever VLM and time
    loss = head.loss(
        backbone(torch.rand(2, 2, 3, 64, 64), ["a", "b"], state=torch.zeros(2, 8)),
        torch.zeros(2, 8),
        torch.randn(2, CHUNK, ACTION_DIM),
        torch.zeros(2, CHUNK, dtype=torch.bool),
    )
    loss.backward()
    assert head.expert.layers[0].input_layernorm.dense.weight.grad.abs().sum() > 0


def test_prompt_carries_the_discretized_state_like_openpi() -> None:
    values = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.3, 0.99, 0.9999, 1.0, 2.0])
    expected = np.digitize(values.numpy(), bins=np.linspace(-1, 1, 257)[:-1]) - 1
    np.testing.assert_array_equal(discretize_state(values).numpy(), expected)
    assert (
        state_prompt("pick_up the cube\n", [0, 127, 255])
        == "Task: pick up the cube, State: 0 127 255;\nAction: "
    )
    assert state_prompt(" open the drawer", None) == "open the drawer\n"


def test_time_follows_pi05_conventions(tmp_path: Path) -> None:
    _, head = tiny_parts(tmp_path)
    draws = head.sample_time(200_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    again = head.sample_time(200_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again) and draws.min() >= 0.001 and draws.max() <= 1.0
    # Beta(1.5, 1): mean 0.6, P(s < 0.5) = 0.5^1.5, scaled into [0.001, 1]
    assert float(draws.mean()) == pytest.approx(0.6 * 0.999 + 0.001, abs=3e-3)
    assert float((draws < 0.5 * 0.999 + 0.001).float().mean()) == pytest.approx(0.5**1.5, abs=3e-3)
    # sampling integrates from t = 1 (noise) to t = 0: a constant velocity v moves noise by −v
    head.velocity = lambda features, x, t: torch.full_like(x, 2.0)  # type: ignore[method-assign]
    features = type("F", (), {"mask": torch.ones(3, 4, dtype=torch.bool)})()
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(3, CHUNK, 32, generator=torch.Generator().manual_seed(5))
    actions = head.predict(features, torch.zeros(3, 8), generator)
    torch.testing.assert_close(actions, noise[..., :ACTION_DIM] - 2.0)


def test_quantile_normalization_is_openpis() -> None:
    normalizer = Normalizer(3, "quantile")
    q01, q99 = torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([2.0, 1.0, 1.0])
    normalizer.set_statistics({"q01": q01, "q99": q99, "mean": torch.zeros(3)}, "state")
    x = torch.tensor([[0.0, 0.25, 1.0], [3.0, -1.0, 5.0]])
    torch.testing.assert_close(normalizer.normalize(x), (x - q01) / (q99 - q01 + 1e-6) * 2 - 1)
    torch.testing.assert_close(normalizer.unnormalize(normalizer.normalize(x)), x)
    with pytest.raises(KeyError, match="q99"):
        Normalizer(3, "quantile").set_statistics({"q01": q01}, "state")


def published_layout(backbone: PI05Backbone, path: Path, prefix: str = "") -> dict:
    """A tiny π0.5 checkpoint written the way lerobot publishes pi05_base: the VLM from transformers'
    own PaliGemmaForConditionalGeneration (its token embedding saved once, as the tied lm_head), the
    expert under openpi's names with adaptive-norm ``dense`` layers and an unused lm_head."""
    config = PaliGemmaConfig(**backbone.paligemma.config.to_dict())
    stock = PaliGemmaForConditionalGeneration(config).eval()
    tensors = {
        f"paligemma_with_expert.paligemma.{k}": v.clone()
        for k, v in stock.state_dict().items()
        if "embed_tokens" not in k
    }
    width, heads, head_dim = 32, 4, 16
    shapes = {
        "self_attn.q_proj.weight": (heads * head_dim, width),
        "self_attn.k_proj.weight": (head_dim, width),
        "self_attn.v_proj.weight": (head_dim, width),
        "self_attn.o_proj.weight": (width, heads * head_dim),
        "mlp.gate_proj.weight": (64, width),
        "mlp.up_proj.weight": (64, width),
        "mlp.down_proj.weight": (width, 64),
        "input_layernorm.dense.weight": (3 * width, width),
        "input_layernorm.dense.bias": (3 * width,),
        "post_attention_layernorm.dense.weight": (3 * width, width),
        "post_attention_layernorm.dense.bias": (3 * width,),
    }
    expert = "paligemma_with_expert.gemma_expert."
    for layer in range(2):
        for name, shape in shapes.items():
            tensors[f"{expert}model.layers.{layer}.{name}"] = torch.randn(shape)
    tensors[f"{expert}model.norm.dense.weight"] = torch.randn(3 * width, width)
    tensors[f"{expert}model.norm.dense.bias"] = torch.randn(3 * width)
    tensors[f"{expert}lm_head.weight"] = torch.randn(384, width)
    for name, (out_features, in_features) in {
        "action_in_proj": (width, 32),
        "action_out_proj": (32, width),
        "time_mlp_in": (width, width),
        "time_mlp_out": (width, width),
    }.items():
        tensors[f"{name}.weight"] = torch.randn(out_features, in_features)
        tensors[f"{name}.bias"] = torch.randn(out_features)
    save_file({prefix + k: v.contiguous() for k, v in tensors.items()}, str(path))
    return {"tensors": tensors, "stock": stock}


@pytest.mark.parametrize("prefix", ["", "model."])  # pi05_base's bare names; lerobot fine-tunes' "model."
def test_published_weight_layout_loads_into_our_modules(tmp_path: Path, prefix: str) -> None:
    backbone, _ = tiny_parts(tmp_path)
    file = tmp_path / "model.safetensors"
    published = published_layout(backbone, file, prefix)
    tensors, stock = published["tensors"], published["stock"]
    loaded_backbone, _ = tiny_parts(tmp_path, pretrained=str(tmp_path))  # a directory holding the file
    cfg = compose_train(["backbone=pi05_tiny", "head=pi05_tiny"], tmp_path)
    loaded_head = instantiate(cfg.head, pretrained=str(file))(
        backbone=loaded_backbone.spec, action_dim=ACTION_DIM, state_dim=8, chunk_size=CHUNK,
    )  # fmt: skip
    vlm = "paligemma_with_expert.paligemma."
    assert torch.equal(
        loaded_backbone.language.embed_tokens.weight, tensors[f"{vlm}lm_head.weight"]
    )  # the tied embedding comes from the head's copy
    assert torch.equal(
        loaded_backbone.paligemma.vision_tower.vision_model.encoder.layers[1].mlp.fc2.weight,
        tensors[f"{vlm}model.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight"],
    )
    assert torch.equal(
        loaded_head.expert.layers[1].post_attention_layernorm.dense.bias,
        tensors["paligemma_with_expert.gemma_expert.model.layers.1.post_attention_layernorm.dense.bias"],
    )
    assert torch.equal(loaded_head.time_mlp_out.weight, tensors["time_mlp_out.weight"])
    # π0.5 image tokens are the projector output, without stock PaliGemma's 1/√width
    pixels = torch.rand(1, 1, 3, 64, 64)
    torch.testing.assert_close(
        loaded_backbone.embed_images(pixels)[0],
        stock.model.get_image_features(pixels[0] * 2 - 1)[0] * math.sqrt(64),
        atol=1e-5,
        rtol=1e-4,
    )
    # every tensor of the file is used except the expert's lm_head
    from policies.pi05_weights import backbone_checkpoint_names, expert_checkpoint_names, load_mapped_weights

    used = load_mapped_weights(loaded_backbone, file, backbone_checkpoint_names) | load_mapped_weights(
        loaded_head, file, expert_checkpoint_names
    )
    assert {k.removeprefix(prefix) for k in used} == set(tensors) - {
        "paligemma_with_expert.gemma_expert.lm_head.weight"
    }


def test_a_checkpoint_without_the_adaptive_norms_is_refused(tmp_path: Path) -> None:
    backbone, _ = tiny_parts(tmp_path)
    file = tmp_path / "model.safetensors"
    tensors = published_layout(backbone, file)["tensors"]
    del tensors["paligemma_with_expert.gemma_expert.model.norm.dense.weight"]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(file))
    cfg = compose_train(["backbone=pi05_tiny", "head=pi05_tiny"], tmp_path)
    with pytest.raises(KeyError, match=r"norm\.dense\.weight"):
        instantiate(cfg.head, pretrained=str(file))(
            backbone=backbone.spec, action_dim=ACTION_DIM, state_dim=8, chunk_size=CHUNK,
        )  # fmt: skip
    with pytest.raises(InstantiationException, match="no such file or directory, and not a hub id"):
        tiny_parts(tmp_path, pretrained=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InstantiationException, match=r"holds no model\.safetensors"):
        tiny_parts(tmp_path, pretrained=str(tmp_path / "empty"))


def test_modalities_follow_the_paper(tmp_path: Path) -> None:
    cfg = compose_train(["backbone=pi05_tiny", "head=pi05_tiny", "env=droid", "optimizer=pion"], tmp_path)
    policy = VLAPolicy(instantiate(cfg.backbone), instantiate(cfg.head), 8, 8, 16, 8)
    assigned = policy.optimizer_rules().assign(policy.named_parameters())
    where = {name: (a.modality, a.algorithm) for name, a in assigned.items()}
    vlm = "backbone.paligemma."
    assert where[f"{vlm}vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"] == (
        "vision",
        "muon",
    )
    assert where[f"{vlm}multi_modal_projector.linear.weight"] == ("vision", "muon")
    assert where[f"{vlm}vision_tower.vision_model.embeddings.position_embedding.weight"][1] == "adamw"
    assert where[f"{vlm}language_model.layers.0.mlp.up_proj.weight"] == ("language", "muon")
    assert where[f"{vlm}language_model.embed_tokens.weight"] == ("language", "adamw")
    assert where["head.expert.layers.1.self_attn.k_proj.weight"] == ("action", "pion")
    assert where["head.expert.layers.1.input_layernorm.dense.weight"] == ("action", "pion")
    assert where["head.time_mlp_in.weight"] == ("action", "pion")
    assert where["head.action_in_proj.weight"] == ("action", "pion")
    assert where["head.action_out_proj.weight"] == ("action", "adamw")  # the output layer
    # the VLM's last-layer output path shapes no loss in π0.5: not trained, not assigned
    assert f"{vlm}language_model.layers.1.mlp.up_proj.weight" not in where
    assert f"{vlm}language_model.layers.1.self_attn.k_proj.weight" in where


def test_heads_that_do_not_fit_pi05_are_refused_when_built(tmp_path: Path) -> None:
    cfg = compose_train(["backbone=pi05_tiny", "head=l1", "env=droid"], tmp_path)
    with pytest.raises(IncompatibleParts, match=r"L1RegressionHead needs .*queries"):
        VLAPolicy(instantiate(cfg.backbone), instantiate(cfg.head), 8, 8, 16, 8)
    cfg = compose_train(["backbone=tiny", "head=pi05_tiny", "env=droid"], tmp_path)
    with pytest.raises(IncompatibleParts, match=r"PI05ActionExpert needs .*keys_values"):
        VLAPolicy(instantiate(cfg.backbone), instantiate(cfg.head), 8, 8, 16, 8)


def test_gradient_checkpointing_and_freezing_keep_the_math(tmp_path: Path) -> None:
    batch = {
        "images": torch.rand(2, 2, 3, 64, 64),
        "instruction": ["pick up the cube", "put it in the bowl"],
        "state": torch.rand(2, 8),
        "actions": torch.randn(2, CHUNK, ACTION_DIM),
        "action_is_pad": torch.zeros(2, CHUNK, dtype=torch.bool),
    }

    def loss_and_grads(**backbone_overrides) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        backbone, head = tiny_parts(tmp_path, **backbone_overrides)
        open_the_gates(head)
        policy = VLAPolicy(backbone, lambda **sizes: head, ACTION_DIM, 8, CHUNK)
        loss = policy(batch, generator=torch.Generator().manual_seed(1))
        loss.backward()
        return loss, {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}

    plain, plain_grads = loss_and_grads()
    checkpointed, checkpointed_grads = loss_and_grads(gradient_checkpointing=True)
    torch.testing.assert_close(checkpointed, plain)
    assert checkpointed_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)
    frozen, frozen_grads = loss_and_grads(freeze=["vision"])
    torch.testing.assert_close(frozen, plain)
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in frozen_grads)
    assert any("language_model.layers.0" in name for name in frozen_grads)


def published_pi05_base_shapes() -> dict[str, tuple[int, ...]]:
    """lerobot/pi05_base's tensor names and shapes, written out from its layout (PaliGemma-3B-224 +
    the Gemma-300M expert + the four projections; 812 tensors), independently of our modules."""
    vlm, expert = "paligemma_with_expert.paligemma.", "paligemma_with_expert.gemma_expert."
    shapes: dict[str, tuple[int, ...]] = {}
    tower = f"{vlm}model.vision_tower.vision_model."
    shapes[f"{tower}embeddings.patch_embedding.weight"] = (1152, 3, 14, 14)
    shapes[f"{tower}embeddings.patch_embedding.bias"] = (1152,)
    shapes[f"{tower}embeddings.position_embedding.weight"] = (256, 1152)
    for i in range(27):
        layer = f"{tower}encoder.layers.{i}."
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{projection}.weight"] = (1152, 1152)
            shapes[f"{layer}self_attn.{projection}.bias"] = (1152,)
        shapes[f"{layer}mlp.fc1.weight"], shapes[f"{layer}mlp.fc1.bias"] = (4304, 1152), (4304,)
        shapes[f"{layer}mlp.fc2.weight"], shapes[f"{layer}mlp.fc2.bias"] = (1152, 4304), (1152,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (1152,)
    shapes[f"{tower}post_layernorm.weight"] = shapes[f"{tower}post_layernorm.bias"] = (1152,)
    shapes[f"{vlm}model.multi_modal_projector.linear.weight"] = (2048, 1152)
    shapes[f"{vlm}model.multi_modal_projector.linear.bias"] = (2048,)
    shapes[f"{vlm}lm_head.weight"] = (257152, 2048)  # the tied token embedding, saved once
    for stream, width, mlp in ((f"{vlm}model.language_model.", 2048, 16384), (f"{expert}model.", 1024, 4096)):
        for i in range(18):
            layer = f"{stream}layers.{i}."
            shapes[f"{layer}self_attn.q_proj.weight"] = (2048, width)
            shapes[f"{layer}self_attn.k_proj.weight"] = shapes[f"{layer}self_attn.v_proj.weight"] = (
                256,
                width,
            )
            shapes[f"{layer}self_attn.o_proj.weight"] = (width, 2048)
            shapes[f"{layer}mlp.gate_proj.weight"] = shapes[f"{layer}mlp.up_proj.weight"] = (mlp, width)
            shapes[f"{layer}mlp.down_proj.weight"] = (width, mlp)
            for norm in ("input_layernorm", "post_attention_layernorm"):
                if width == 2048:
                    shapes[f"{layer}{norm}.weight"] = (2048,)
                else:
                    shapes[f"{layer}{norm}.dense.weight"], shapes[f"{layer}{norm}.dense.bias"] = (
                        (3072, 1024),
                        (3072,),
                    )
    shapes[f"{vlm}model.language_model.norm.weight"] = (2048,)
    shapes[f"{expert}model.norm.dense.weight"], shapes[f"{expert}model.norm.dense.bias"] = (
        (3072, 1024),
        (3072,),
    )
    shapes[f"{expert}lm_head.weight"] = (257152, 1024)
    shapes["action_in_proj.weight"], shapes["action_in_proj.bias"] = (1024, 32), (1024,)
    shapes["action_out_proj.weight"], shapes["action_out_proj.bias"] = (32, 1024), (32,)
    for name in ("time_mlp_in", "time_mlp_out"):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (1024, 1024), (1024,)
    return shapes


def test_full_size_modules_map_onto_every_published_tensor() -> None:
    """The full-size π0.5 (meta device, no download) has a tensor of the right shape for each of
    lerobot/pi05_base's 812, except the expert's unused lm_head."""
    from policies.backbones.architectures import GEMMA_300M_EXPERT, PALIGEMMA_3B
    from policies.pi05_weights import backbone_checkpoint_names, expert_checkpoint_names

    published = published_pi05_base_shapes()
    assert len(published) == 812
    with torch.device("meta"):
        backbone = PI05Backbone(pretrained=None, config=PALIGEMMA_3B, tokenizer=None)
        head = PI05ActionExpert(backbone.spec, 8, 8, 16, **GEMMA_300M_EXPERT)
    mapped = {}
    for module, names in ((backbone, backbone_checkpoint_names), (head, expert_checkpoint_names)):
        for name, tensor in module.state_dict().items():
            found = [key for key in names(name) if key in published]
            assert found, f"{name} has no published counterpart among {names(name)}"
            mapped[found[0]] = tuple(tensor.shape)
    assert set(published) - set(mapped) == {"paligemma_with_expert.gemma_expert.lm_head.weight"}
    assert {key: published[key] for key in mapped} == mapped
