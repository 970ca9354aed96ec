"""π0.5's vision-language model (PaliGemma-3B: SigLIP So400m/14 → linear → Gemma-2B), built from
transformers' released classes and fed the way π0.5 feeds it.

What π0.5 does differently from a stock PaliGemma forward, and why this module runs its own layer loop
(openpi and lerobot, read for the design; none of their code is used):
- images are resized to 224² and scaled to [−1, 1]; their projected features are *not* divided by
  √width (stock ``get_image_features`` does), the prompt's token embeddings *are* multiplied by √width;
- the prompt carries the robot state as text: ``"Task: <instruction>, State: <256-bin indices>;\\nAction: "``
  (the state normalized to [−1, 1] beforehand, by quantiles), which is why this backbone reads the state;
- attention over the prefix (every camera's 256 tokens, then the prompt) is bidirectional, padding
  excluded, positions count real tokens only;
- the action expert (:mod:`policies.heads.pi05`) attends to every layer's keys and values, which this
  backbone returns (:attr:`BackboneOutput.layer_keys_values`).
Weights come from ``lerobot/pi05_base`` (or a fine-tuned π0.5 in lerobot's layout; see
:mod:`policies.pi05_weights`); the tokenizer from ``google/paligemma-3b-pt-224`` (gated on the hub:
accept its license once). ``pi05_tiny`` builds the same classes from a small config with random weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoTokenizer, ByT5Tokenizer, PaliGemmaConfig, PaliGemmaModel
from transformers.modeling_utils import no_init_weights
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

from policies.backbones.architectures import PALIGEMMA_3B
from policies.base import (
    Backbone,
    BackboneOutput,
    OptimizerRules,
    decoder_per_head_rules,
    default_dtype,
    freeze_parts,
    plain_config,
)
from policies.joint_attention import AttentionGeometry, attend, project_heads
from policies.pi05_weights import backbone_checkpoint_names, load_mapped_weights
from vla_train.optim import ModalityRule, PerHeadRule
from vla_train.schemas import register_schema

STATE_BINS = 256


def discretize_state(state: torch.Tensor) -> torch.Tensor:
    """Normalized state → bin indices over [−1, 1] (256 bins), as π0.5's tokenizer computes them.

    Values at or above the last bin edge give 255; values below −1 give −1 (NumPy ``digitize``
    semantics, kept so a fine-tuned model sees what the pretrained one saw).
    """
    edges = torch.linspace(-1.0, 1.0, STATE_BINS + 1, device=state.device)[:-1]
    return torch.bucketize(state.float().contiguous(), edges, right=True) - 1


def state_prompt(instruction: str, bins: list[int] | None) -> str:
    """The prompt π0.5 reads: the cleaned instruction, then the discretized state if it has one."""
    task = instruction.strip().replace("_", " ").replace("\n", " ")
    if bins is None:
        return f"{task}\n"
    return f"Task: {task}, State: {' '.join(map(str, bins))};\nAction: "


class PI05Backbone(Backbone):
    """PaliGemma as π0.5's prefix encoder (see the module docstring).

    Args:
        pretrained: π0.5 weights — a hub id (``lerobot/pi05_base``), a directory with ``model.safetensors``
            or the file; None keeps random weights (tiny variants).
        config: ``PaliGemmaConfig`` fields (default: PaliGemma-3B-224 as π0.5 uses it).
        tokenizer: hub id or directory of the PaliGemma tokenizer; None: a byte tokenizer (tiny variants).
        image_size: SigLIP's input size; camera images are resized to it.
        dtype: weights' dtype.
        max_token_len: prompt length limit (π0.5: 200).
        discrete_state: put the state in the prompt (π0.5); False: the instruction alone (π0's prompt).
        gradient_checkpointing: recompute each layer's activations in the backward pass.
        freeze: ``vision`` and/or ``language`` to keep fixed.
    """

    # the prefix is bidirectional, so appended queries would change it: no ``queries``; the expert
    # attends jointly with every layer: ``keys_values`` (with ``attention_geometry``)
    provides = frozenset({"layer_tokens", "keys_values"})
    weight_sources = ("pretrained",)  # only where weights come from: the architecture is in the config

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """PaliGemma-3B from its config when none is given (the published size), and a byte tokenizer
        instead of PaliGemma's (prompts a few dozen tokens longer)."""
        changes: dict[str, Any] = {"pretrained": None, "tokenizer": None}
        if options.get("config") is None:
            changes["config"] = PALIGEMMA_3B
        return changes

    def __init__(
        self,
        pretrained: str | None = "lerobot/pi05_base",
        config: Mapping[str, Any] | None = None,
        tokenizer: str | None = "google/paligemma-3b-pt-224",
        image_size: int = 224,
        dtype: str = "float32",
        max_token_len: int = 200,
        discrete_state: bool = True,
        gradient_checkpointing: bool = False,
        freeze: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        settings = dict(copy.deepcopy(plain_config(config) if config is not None else PALIGEMMA_3B))
        settings.setdefault("vision_config", {})["image_size"] = image_size
        paligemma_config = PaliGemmaConfig(**settings)
        with (
            default_dtype(getattr(torch, dtype)),
            no_init_weights() if pretrained else contextlib.nullcontext(),
        ):
            self.paligemma = PaliGemmaModel(paligemma_config)
        text = paligemma_config.text_config
        self.hidden_size, self.num_layers = text.hidden_size, text.num_hidden_layers
        self.attention_geometry = AttentionGeometry(
            layers=text.num_hidden_layers,
            heads=text.num_attention_heads,
            kv_heads=text.num_key_value_heads,
            head_dim=text.head_dim,
            rope_theta=text.rope_theta,
        )
        self.image_size, self.max_token_len = image_size, max_token_len
        self.discrete_state, self.gradient_checkpointing = discrete_state, gradient_checkpointing
        self.tokenizer_source = tokenizer
        self._tokenizer: Any = None
        if pretrained:
            load_mapped_weights(self, pretrained, backbone_checkpoint_names)
        # The expert reads the last layer's keys and values only: the rest of that layer and the final
        # norm shape no loss (π0.5 trains no language output). Fixed, so that no optimizer state or
        # multi-GPU gradient reduction is spent on parameters that never get a gradient.
        last = self.language.layers[-1]
        for unused in (last.self_attn.q_proj, last.self_attn.o_proj, last.mlp, last.post_attention_layernorm):
            unused.requires_grad_(False)
        self.language.norm.requires_grad_(False)
        vision = self.paligemma.vision_tower
        freeze_parts(
            {"vision": [vision, self.paligemma.multi_modal_projector], "language": [self.language]},
            freeze,
        )

    @property
    def language(self) -> nn.Module:
        return self.paligemma.language_model

    @property
    def tokenizer(self) -> Any:
        """Loaded on first use, so that building the model (e.g. on the meta device) needs no hub."""
        if self._tokenizer is None:
            source = self.tokenizer_source
            self._tokenizer = ByT5Tokenizer() if source is None else AutoTokenizer.from_pretrained(source)
        return self._tokenizer

    def prompts(self, instructions: list[str], state: torch.Tensor | None) -> list[str]:
        if not self.discrete_state:
            return [state_prompt(text, None) for text in instructions]
        if state is None:
            raise ValueError("π0.5 puts the normalized robot state in its prompt: pass state=")
        bins = discretize_state(state).tolist()
        return [state_prompt(text, row) for text, row in zip(instructions, bins, strict=True)]

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, cameras, 3, H, W)`` in [0, 1] → ``(B, cameras · patches, width)``."""
        batch = images.size(0)
        pixels = images.flatten(0, 1).float()
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        vision = self.paligemma.vision_tower
        dtype = vision.vision_model.embeddings.patch_embedding.weight.dtype
        features = vision(pixel_values=(pixels * 2 - 1).to(dtype)).last_hidden_state
        projected = self.paligemma.multi_modal_projector(features)
        return projected.reshape(batch, -1, projected.size(-1))

    def embed_prompts(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.tokenizer(
            prompts, padding="longest", truncation=True, max_length=self.max_token_len, return_tensors="pt"
        ).to(device)
        embeds = self.language.embed_tokens(text.input_ids) * math.sqrt(self.hidden_size)
        return embeds, text.attention_mask.bool()

    def forward(
        self,
        images: torch.Tensor,
        instructions: list[str],
        queries: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> BackboneOutput:
        if queries is not None:
            raise ValueError(
                "backbone=pi05 attends bidirectionally over its prefix and has no slot for a head's "
                "queries: use its own action expert, head=pi05 (or head=pi05_tiny)"
            )
        text, text_mask = self.embed_prompts(self.prompts(list(instructions), state), images.device)
        visual = self.embed_images(images).to(text.dtype)
        x = torch.cat([visual, text], dim=1)
        mask = torch.cat([text_mask.new_ones(visual.shape[:2]), text_mask], dim=1)
        positions = mask.long().cumsum(-1) - 1
        cos, sin = self.language.rotary_emb(x, positions)
        allowed = mask[:, None, None, :]  # bidirectional; padded keys excluded
        states, keys_values = [x], []
        for layer in self.language.layers:
            if self.gradient_checkpointing and self.training:
                x, key, value = checkpoint(prefix_layer, layer, x, cos, sin, allowed, use_reentrant=False)
            else:
                x, key, value = prefix_layer(layer, x, cos, sin, allowed)
            states.append(x)
            keys_values.append((key, value))
        states[-1] = self.language.norm(x)
        return BackboneOutput(states[-1], mask, tuple(states), layer_keys_values=tuple(keys_values))

    def optimizer_rules(self) -> OptimizerRules:
        vision = self.paligemma.config.vision_config
        return OptimizerRules(
            modality_rules=[
                ModalityRule(r"^paligemma\.(vision_tower|multi_modal_projector)\.", "vision"),
                ModalityRule(r"^paligemma\.language_model\.", "language"),
            ],
            adamw_patterns=[
                r"^paligemma\.vision_tower\.vision_model\.embeddings\.",  # patch conv, position table
                r"^paligemma\.language_model\.embed_tokens\.",
            ],
            per_head_rules=[
                PerHeadRule(
                    r"^paligemma\.vision_tower\.vision_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v)_proj\.weight$",
                    vision.hidden_size // vision.num_attention_heads,
                    0,
                ),
                PerHeadRule(
                    r"^paligemma\.vision_tower\.vision_model\.encoder\.layers\.\d+\.self_attn\.out_proj\.weight$",
                    vision.hidden_size // vision.num_attention_heads,
                    1,
                ),
                *decoder_per_head_rules(
                    r"paligemma\.language_model\.layers", self.attention_geometry.head_dim
                ),
            ],
        )


def prefix_layer(
    layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Gemma decoder layer over the prefix; also returns its (rotated) keys and values."""
    queries, keys, values = project_heads(layer.self_attn, layer.input_layernorm(x))
    queries, keys = apply_rotary_pos_emb(queries, keys, cos, sin)
    x = x + layer.self_attn.o_proj(attend(queries, keys, values, allowed))
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    return x, keys, values


register_schema("backbone", "pi05_schema", PI05Backbone)
