"""A seconds-to-build vision-language backbone for tests and CPU runs: a small timm ViT, a small
Qwen2-style language model from transformers, and a byte-level tokenizer that needs no download.

It has the same structure as the real Prismatic backbone (vision tower → MLP projector → causal LM
over ``[image tokens, instruction tokens]``), so the optimizer assignment, the heads and the trainer
exercise the same code paths as at full scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import ByT5Tokenizer, Qwen2Config, Qwen2Model

from policies.base import (
    Backbone,
    BackboneOutput,
    OptimizerRules,
    decoder_per_head_rules,
    split_context_and_queries,
    vit_per_head_rules,
    with_queries,
)
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyBackbone(Backbone):
    """Random-init ViT + projector + Qwen2 decoder; ``hidden_size`` is the language model's width."""

    provides = frozenset({"layer_tokens", "queries", "vision_tokens"})  # images first, then the text

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """timm and transformers would assert deep inside, or build a model that drops pixels, instead
        of naming the key."""
        for key in ("image_size", "patch_size", "vision_width", "vision_depth", "language_width",
                    "language_layers", "max_instruction_tokens"):  # fmt: skip
            if key in options and options[key] < 1:
                raise ValueError(f"backbone.{key}={options[key]}: must be >= 1")
        divides = {
            "backbone.image_size / backbone.patch_size": ("image_size", "patch_size"),
            "backbone.vision_width / backbone.vision_heads": ("vision_width", "vision_heads"),
            "backbone.language_width / backbone.language_heads": ("language_width", "language_heads"),
            "backbone.language_heads / backbone.language_kv_heads": ("language_heads", "language_kv_heads"),
        }
        for ratio, (whole_key, part_key) in divides.items():
            whole, part = options.get(whole_key), options.get(part_key)
            if whole is not None and part is not None and (part < 1 or whole % part):
                raise ValueError(f"{ratio} = {whole} / {part}: must be a whole number")

    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        vision_width: int = 64,
        vision_depth: int = 2,
        vision_heads: int = 2,
        language_width: int = 64,
        language_layers: int = 2,
        language_heads: int = 4,
        language_kv_heads: int = 2,
        max_instruction_tokens: int = 64,
    ) -> None:
        super().__init__()
        self.check_options(
            {key: value for key, value in locals().items() if key not in ("self", "__class__")}
        )
        self.image_size = image_size
        self.max_instruction_tokens = max_instruction_tokens
        self.vision = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=vision_width,
            depth=vision_depth,
            num_heads=vision_heads,
            mlp_ratio=2.0,
            num_classes=0,
            global_pool="",
            class_token=True,
        )
        self.projector = nn.Sequential(
            nn.Linear(vision_width, language_width), nn.GELU(), nn.Linear(language_width, language_width)
        )
        self.tokenizer = ByT5Tokenizer()
        config = Qwen2Config(
            vocab_size=len(self.tokenizer),
            hidden_size=language_width,
            intermediate_size=2 * language_width,
            num_hidden_layers=language_layers,
            num_attention_heads=language_heads,
            num_key_value_heads=language_kv_heads,
            max_position_embeddings=1024,
            tie_word_embeddings=False,
        )
        self.language = Qwen2Model(config)
        self.hidden_size = language_width
        self.num_layers = language_layers
        self._vision_head_dim = vision_width // vision_heads
        self._language_head_dim = config.hidden_size // config.num_attention_heads
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(
        self,
        images: torch.Tensor,
        instructions: list[str],
        queries: torch.Tensor | None = None,
        state: torch.Tensor | None = None,  # not part of this backbone's input
    ) -> BackboneOutput:
        batch, cameras = images.shape[:2]
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"TinyBackbone was built for {self.image_size}x{self.image_size} images, got "
                f"{tuple(images.shape[-2:])}; set backbone.image_size to the environment's camera size"
            )
        pixels = (images.flatten(0, 1) - self.pixel_mean) / self.pixel_std
        visual = self.vision.forward_features(pixels)  # (B·cams, 1 + patches, Dv)
        visual = self.projector(visual.reshape(batch, cameras * visual.size(1), visual.size(2)))
        text = self.tokenizer(
            instructions,
            padding="longest",
            truncation=True,
            max_length=self.max_instruction_tokens,
            return_tensors="pt",
        ).to(images.device)
        embeds = torch.cat([visual, self.language.embed_tokens(text.input_ids)], dim=1)
        mask = torch.cat(
            [torch.ones(visual.shape[:2], dtype=torch.long, device=images.device), text.attention_mask], dim=1
        )
        all_embeds, all_mask, positions = with_queries(embeds, mask, queries)
        out = self.language(
            inputs_embeds=all_embeds,
            attention_mask=all_mask,
            position_ids=positions,
            output_hidden_states=True,
        )
        return split_context_and_queries(out.hidden_states, mask, vision_tokens=visual.size(1))

    def optimizer_rules(self) -> OptimizerRules:
        return OptimizerRules(
            modality_rules=[
                ModalityRule(r"^vision\.", "vision"),
                ModalityRule(r"^projector\.", "vision"),
                ModalityRule(r"^language\.", "language"),
            ],
            adamw_patterns=[
                r"^vision\.(cls_token|pos_embed)$",
                r"^vision\.patch_embed\.",
                r"^language\.embed_tokens\.",
            ],
            per_head_rules=vit_per_head_rules(r"vision\.blocks", self._vision_head_dim)
            + decoder_per_head_rules(r"language\.layers", self._language_head_dim),
        )


register_schema("backbone", "tiny_schema", TinyBackbone)
