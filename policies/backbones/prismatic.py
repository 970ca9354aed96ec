"""Prismatic "dinosiglip" VLM (VLA-Adapter's backbone, Table A1): DINOv2 + SigLIP → MLP → Qwen2.5-0.5B.

Structure, as in the Prismatic VLMs that VLA-Adapter starts from:
- two timm ViTs see every camera image: DINOv2 ViT-L/14 with 4 registers (ImageNet normalization) and
  SigLIP So400m/14 (mean = std = 0.5); each contributes its **second-to-last** block's patch tokens
  (prefix tokens dropped), concatenated along the feature axis (1024 + 1152 = 2176 per patch);
- a 3-layer GELU MLP projects them to the language model's width (2176 → 8704 → 896 → 896);
- Qwen2.5 runs causally over ``[image patches of every camera, instruction tokens]``.

Weights: the vision towers come from timm's pretrained weights, the language model from its hub id,
and ``checkpoint`` (a Prismatic ``.pt`` whose ``model`` dict holds ``projector`` and ``llm_backbone``,
optionally ``vision_backbone``) overrides them by mapping its parameter names onto ours
(:func:`map_prismatic_state_dict`). Tiny variants pass ``vision_overrides`` / ``language_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer, Qwen2Config, Qwen2ForCausalLM

from policies.backbones.architectures import QWEN25_05B
from policies.base import (
    Backbone,
    BackboneOutput,
    OptimizerRules,
    decoder_per_head_rules,
    freeze_parts,
    plain_config,
    split_context_and_queries,
    vit_per_head_rules,
    with_queries,
)
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema

TOWER_NORMALIZATION = {
    "dino": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "siglip": ((0.5,) * 3, (0.5,) * 3),
}


class FusedProjector(nn.Module):
    """Fused vision features → language width: Linear(4x) · GELU · Linear · GELU · Linear."""

    def __init__(self, vision_dim: int, language_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, language_dim)
        self.fc3 = nn.Linear(language_dim, language_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(features)))))


def second_to_last_layer_tower(
    model_name: str, image_size: int, pretrained: bool, overrides: Mapping[str, Any] | None
) -> nn.Module:
    """A timm ViT cut after its second-to-last block, without final norm or pooling head."""
    tower = timm.create_model(
        model_name, pretrained=pretrained, num_classes=0, img_size=image_size, **dict(overrides or {})
    )
    tower.reset_classifier(0, global_pool="")  # drops SigLIP's attention-pooling head
    tower.prune_intermediate_layers([len(tower.blocks) - 2], prune_norm=True, prune_head=True)
    return tower


class PrismaticBackbone(Backbone):
    """DINOv2 + SigLIP + fused MLP projector + Qwen2.5 (see the module docstring).

    Args:
        dino_model, siglip_model: timm model names of the two towers.
        language_model: hub id or directory of the causal LM (and its tokenizer).
        checkpoint: a Prismatic checkpoint (``.pt``) or a directory holding ``checkpoints/*.pt``.
        pretrained_vision: load timm's pretrained tower weights (needs the hub or its cache).
        vision_overrides: timm kwargs for both towers (e.g. ``{"embed_dim": 32, "depth": 3}``) —
            tiny variants; ``language_config`` likewise builds a random Qwen2 from a config.
        dtype, attn_implementation: weights' dtype and the LM's attention kernel.
        gradient_checkpointing: recompute activations in the towers and the LM to save memory.
        freeze: ``vision`` and/or ``language`` to keep fixed.
    """

    provides = frozenset({"layer_tokens", "queries", "vision_tokens"})  # images first, then the text

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Towers from timm's definitions, the default LM (Qwen2.5-0.5B) from its published config."""
        changes: dict[str, Any] = {"pretrained_vision": False, "checkpoint": None}
        if options.get("language_config") is None:
            changes["language_config"] = QWEN25_05B
        return changes

    def __init__(
        self,
        dino_model: str = "vit_large_patch14_reg4_dinov2.lvd142m",
        siglip_model: str = "vit_so400m_patch14_siglip_224",
        language_model: str | None = "Qwen/Qwen2.5-0.5B",
        checkpoint: str | None = None,
        image_size: int = 224,
        pretrained_vision: bool = True,
        vision_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        language_config: Mapping[str, Any] | None = None,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        freeze: tuple[str, ...] | list[str] = (),
        max_instruction_tokens: int = 64,
    ) -> None:
        super().__init__()
        overrides = plain_config(vision_overrides) or {}
        self.image_size = image_size
        self.max_instruction_tokens = max_instruction_tokens
        self.dino = second_to_last_layer_tower(
            dino_model, image_size, pretrained_vision, overrides.get("dino")
        )
        self.siglip = second_to_last_layer_tower(
            siglip_model, image_size, pretrained_vision, overrides.get("siglip")
        )
        if language_config is not None:
            language = Qwen2Config(**plain_config(language_config))
            language._attn_implementation = attn_implementation
            self.language = Qwen2ForCausalLM(language)
            self.tokenizer: Any = ByT5Tokenizer()
        else:
            self.language = AutoModelForCausalLM.from_pretrained(
                language_model, dtype=getattr(torch, dtype), attn_implementation=attn_implementation
            )
            self.tokenizer = AutoTokenizer.from_pretrained(language_model)
        self.hidden_size = self.language.config.hidden_size
        self.num_layers = self.language.config.num_hidden_layers
        self.projector = FusedProjector(self.dino.embed_dim + self.siglip.embed_dim, self.hidden_size)
        for name, (mean, std) in TOWER_NORMALIZATION.items():
            self.register_buffer(f"{name}_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"{name}_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if checkpoint is not None:
            self.load_prismatic_checkpoint(checkpoint)
        if gradient_checkpointing:
            self.dino.set_grad_checkpointing(True)
            self.siglip.set_grad_checkpointing(True)
            # non-reentrant: with frozen embeddings the reentrant variant silently drops all LM gradients
            self.language.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        freeze_parts({"vision": [self.dino, self.siglip], "language": [self.language]}, freeze)

    def forward(
        self,
        images: torch.Tensor,
        instructions: list[str],
        queries: torch.Tensor | None = None,
        state: torch.Tensor | None = None,  # not part of this backbone's input
    ) -> BackboneOutput:
        batch, cameras = images.shape[:2]
        pixels = images.flatten(0, 1).float()
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bicubic", antialias=True)
        patches = []
        for name, tower in (("dino", self.dino), ("siglip", self.siglip)):
            normalized = (pixels - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")
            features = tower.forward_features(normalized.to(tower.patch_embed.proj.weight.dtype))
            patches.append(features[:, tower.num_prefix_tokens :])
        fused = torch.cat(patches, dim=-1)  # (B·cams, patches, 2176)
        visual = self.projector(fused.to(self.projector.fc1.weight.dtype))
        visual = visual.reshape(batch, cameras * visual.size(1), visual.size(2))
        text = self.tokenizer(
            list(instructions),
            padding="longest",
            truncation=True,
            max_length=self.max_instruction_tokens,
            return_tensors="pt",
        ).to(images.device)
        embeds = torch.cat(
            [visual.to(self.language.dtype), self.language.get_input_embeddings()(text.input_ids)], 1
        )
        mask = torch.cat(
            [torch.ones(visual.shape[:2], dtype=torch.long, device=images.device), text.attention_mask], dim=1
        )
        all_embeds, all_mask, positions = with_queries(embeds, mask, queries)
        out = self.language.model(
            inputs_embeds=all_embeds,
            attention_mask=all_mask,
            position_ids=positions,
            output_hidden_states=True,
            use_cache=False,
        )
        return split_context_and_queries(out.hidden_states, mask, vision_tokens=visual.size(1))

    def load_prismatic_checkpoint(self, path: str | Path) -> None:
        """Load a Prismatic training checkpoint (``torch.load(weights_only=True)``), mapped onto ours."""
        path = Path(path)
        if path.is_dir():
            candidates = sorted((path / "checkpoints").glob("*.pt"))
            if not candidates:
                raise FileNotFoundError(f"backbone.checkpoint={path}: no checkpoints/*.pt inside")
            path = candidates[-1]
        elif not path.is_file():
            raise FileNotFoundError(f"backbone.checkpoint={path}: no such file or directory")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"backbone.checkpoint={path} is not a readable Prismatic checkpoint: {error}"
            ) from error
        mapped = map_prismatic_state_dict(saved.get("model", saved))
        for name, tower in (("dino", self.dino), ("siglip", self.siglip)):  # blocks past the one we read
            kept = len(tower.blocks)
            mapped = {
                k: v
                for k, v in mapped.items()
                if not (k.startswith(f"{name}.blocks.") and int(k.split(".")[2]) >= kept)
            }
        own = self.state_dict()
        unknown = sorted(set(mapped) - set(own))
        if unknown:
            raise KeyError(f"checkpoint {path} has parameters this backbone lacks: {unknown[:8]}")
        mismatched = [k for k, v in mapped.items() if v.shape != own[k].shape]
        if mismatched:
            raise ValueError(f"checkpoint {path} shapes differ from the config for {mismatched[:8]}")
        self.load_state_dict(mapped, strict=False)

    def optimizer_rules(self) -> OptimizerRules:
        dino_head_dim = self.dino.embed_dim // self.dino.blocks[0].attn.num_heads
        siglip_head_dim = self.siglip.embed_dim // self.siglip.blocks[0].attn.num_heads
        language = self.language.config
        language_head_dim = (
            getattr(language, "head_dim", None) or language.hidden_size // language.num_attention_heads
        )
        tied = self.language.lm_head.weight is self.language.get_input_embeddings().weight
        lm_head = [] if tied else [r"^language\.lm_head\."]  # a tied head is the embedding parameter itself
        # As VLA-Adapter's official run (finetune_pion.py): the vision-language projector is a connector
        # ("O"), and the ViTs' patch embeddings are Muon matrices like the rest of the towers.
        return OptimizerRules(
            modality_rules=[
                ModalityRule(r"^(dino|siglip)\.", "vision"),
                ModalityRule(r"^projector\.", "other"),
                ModalityRule(r"^language\.", "language"),
            ],
            adamw_patterns=[
                r"^(dino|siglip)\.(cls_token|reg_token|pos_embed)$",
                r"^language\.model\.embed_tokens\.",
                *lm_head,
            ],
            per_head_rules=vit_per_head_rules(r"dino\.blocks", dino_head_dim)
            + vit_per_head_rules(r"siglip\.blocks", siglip_head_dim)
            + decoder_per_head_rules(r"language\.model\.layers", language_head_dim),
        )


def map_prismatic_state_dict(
    model_state: Mapping[str, Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Prismatic checkpoint names → :class:`PrismaticBackbone` names.

    ``projector.projector.{0,2,4}`` → ``projector.fc{1,2,3}``; ``llm_backbone.llm.*`` → ``language.*``;
    ``vision_backbone.dino_featurizer.*`` / ``siglip_featurizer.*`` → ``dino.*`` / ``siglip.*``. The
    towers' last block, final norm and pooling head are not used (second-to-last-layer features) and
    are dropped.
    """
    if "projector" not in model_state or "llm_backbone" not in model_state:
        raise KeyError(
            f"a Prismatic checkpoint holds 'projector' and 'llm_backbone'; got {sorted(model_state)}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in model_state["projector"].items():
        index = key.removeprefix("projector.").split(".")[0]
        layer = {"0": "fc1", "2": "fc2", "4": "fc3"}.get(index)
        if layer is None:
            raise KeyError(f"unexpected projector parameter {key!r}")
        mapped[f"projector.{layer}.{key.rsplit('.', 1)[1]}"] = tensor
    for key, tensor in model_state["llm_backbone"].items():
        mapped["language." + key.removeprefix("llm.")] = tensor
    for key, tensor in model_state.get("vision_backbone", {}).items():
        tower, _, rest = key.partition("_featurizer.")
        if tower not in ("dino", "siglip"):
            raise KeyError(f"unexpected vision parameter {key!r}")
        if rest.startswith(("norm.", "attn_pool.", "head.", "fc_norm.")):
            continue
        mapped[f"{tower}.{rest}"] = tensor
    return mapped


register_schema("backbone", "prismatic_schema", PrismaticBackbone)
