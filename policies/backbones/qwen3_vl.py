"""Qwen3-VL (VLANeXt's backbone, Table A1) through transformers: vision tower + language model.

The real model loads from the hub id ``Qwen/Qwen3-VL-2B-Instruct`` or a local directory in the same
layout; ``config`` instead builds the same classes from a small config with random weights
(``backbone=qwen3_vl_tiny``), which is how tests exercise the real code path without downloads.

Images are turned into Qwen3-VL's patch sequence here rather than by the hub processor, because the
policy receives batched ``(B, cameras, 3, H, W)`` tensors already on the device: resize to multiples
of ``patch_size · merge_size``, normalize with mean = std = 0.5, repeat each still frame to the
temporal patch size, and cut ``(C, T, P, P)`` patches in the 2×2-merge order the vision tower reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
)

from policies.backbones.architectures import QWEN3_VL_2B
from policies.base import (
    Backbone,
    BackboneOutput,
    OptimizerRules,
    decoder_per_head_rules,
    freeze_parts,
    split_context_and_queries,
    vit_per_head_rules,
)
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema

IMAGE_MEAN = 0.5
IMAGE_STD = 0.5
#: one user turn of Qwen's chat format, then the assistant's turn opened (``add_generation_prompt``):
#: what VLANeXt's processor call renders for [images…, instruction] (no system turn)
CHAT_USER = "<|im_start|>user\n"
CHAT_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"


def images_to_patches(
    images: torch.Tensor, size: tuple[int, int], patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, H, W)`` in [0, 1] → ``pixel_values (N·h·w, 3·T·P·P)`` and ``image_grid_thw (N, 3)``.

    ``size`` must be multiples of ``patch_size · merge_size``. The patch order groups each 2×2 merge
    window contiguously and flattens features as (channel, time, row, column), matching the vision
    tower's Conv3d patch embedding.
    """
    factor = patch_size * merge_size
    if size[0] % factor or size[1] % factor:
        raise ValueError(f"image size {size} must be a multiple of patch_size·merge_size = {factor}")
    count, channels = images.shape[:2]
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    frames = ((images - IMAGE_MEAN) / IMAGE_STD).unsqueeze(1).expand(-1, temporal_patch_size, -1, -1, -1)
    grid_h, grid_w = size[0] // patch_size, size[1] // patch_size
    patches = frames.reshape(
        count,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # (N, h/m, w/m, m, m, C, T, P, P): merge windows contiguous, features in Conv3d order
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = patches.reshape(count * grid_h * grid_w, channels * temporal_patch_size * patch_size**2)
    grid = torch.tensor([[1, grid_h, grid_w]] * count, device=images.device)
    return pixel_values, grid


class Qwen3VLBackbone(Backbone):
    """Qwen3-VL's ``Qwen3VLModel`` (``visual`` + ``language_model``) over [images, instruction].

    Args:
        pretrained: hub id or local directory of a Qwen3-VL checkpoint; ignored when ``config`` is set.
        config: a ``Qwen3VLConfig`` as a mapping, to build with random weights (tiny variants).
        image_size: side the cameras are resized to (a multiple of 32); 224 gives 49 tokens per image.
        dtype: weights' dtype (fp32 to train: bf16 weights round fine-tuning steps away; bf16 to serve).
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        gradient_checkpointing: trade compute for memory (non-reentrant, so frozen parts are safe).
        freeze: ``vision`` and/or ``language`` to keep fixed.
        chat_template: wrap [images, instruction] in one user turn and open the assistant's, as
            VLANeXt's ``apply_chat_template(…, add_generation_prompt=True)``; false: the bare
            ``[images, instruction]``. The turns come from the hub tokenizer's own template.

    A ``prefix`` (VLANeXt's proprio tokens) goes before everything, with placeholder ids for the
    multimodal RoPE; the queries after the padded prompt, as VLANeXt appends its meta queries.
    """

    provides = frozenset({"layer_tokens", "queries", "prefix_tokens"})

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The default hub model's architecture from its published config (Qwen3-VL-2B)."""
        return {} if options.get("config") is not None else {"pretrained": None, "config": QWEN3_VL_2B}

    def __init__(
        self,
        pretrained: str | None = "Qwen/Qwen3-VL-2B-Instruct",
        config: Mapping[str, Any] | None = None,
        image_size: int = 224,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        freeze: tuple[str, ...] | list[str] = (),
        max_instruction_tokens: int = 64,
        chat_template: bool = True,
    ) -> None:
        super().__init__()
        self.chat_template = chat_template
        if config is not None:
            if isinstance(config, DictConfig):  # from Hydra: nested configs must be plain dicts
                config = OmegaConf.to_container(config, resolve=True)
            model_config = Qwen3VLConfig(**dict(config))
            model_config._attn_implementation = attn_implementation
            self.model = Qwen3VLModel(model_config)
            self.tokenizer = _ByteTokenizer(model_config.text_config.vocab_size)
        else:
            # Checkpoints are saved from the generation class (keys model.visual.*, model.language_model.*);
            # loading the base class from them silently re-initializes everything, so load the full class
            # strictly and keep its base model (the LM head is unused, and tied to the embeddings anyway).
            full, info = Qwen3VLForConditionalGeneration.from_pretrained(
                pretrained,
                dtype=getattr(torch, dtype),
                attn_implementation=attn_implementation,
                output_loading_info=True,
            )
            missing = [key for key in info["missing_keys"] if not key.startswith("lm_head")]
            if missing or info["mismatched_keys"]:
                raise RuntimeError(
                    f"backbone.pretrained={pretrained!r} does not match Qwen3-VL: missing {missing[:5]}, "
                    f"mismatched {info['mismatched_keys'][:5]}"
                )
            self.model = full.model
            self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.config = self.model.config
        vision = self.config.vision_config
        self.patch_size, self.merge_size = vision.patch_size, vision.spatial_merge_size
        self.temporal_patch_size = vision.temporal_patch_size
        if image_size % (self.patch_size * self.merge_size):
            raise ValueError(
                f"backbone.image_size={image_size} must be a multiple of {self.patch_size * self.merge_size}"
            )
        self.image_size = image_size
        self.tokens_per_image = (image_size // self.patch_size) ** 2 // self.merge_size**2
        self.max_instruction_tokens = max_instruction_tokens
        self.hidden_size = self.config.text_config.hidden_size
        self.num_layers = self.config.text_config.num_hidden_layers
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        freeze_parts({"vision": [self.model.visual], "language": [self.model.language_model]}, freeze)

    def forward(
        self,
        images: torch.Tensor,
        instructions: list[str],
        queries: torch.Tensor | None = None,
        state: torch.Tensor | None = None,  # not part of this backbone's input
        prefix: torch.Tensor | None = None,
    ) -> BackboneOutput:
        cameras = images.size(1)
        pixel_values, grid = images_to_patches(
            images.flatten(0, 1).float(),
            (self.image_size, self.image_size),
            self.patch_size,
            self.merge_size,
            self.temporal_patch_size,
        )
        input_ids, context_mask = self._input_ids(instructions, cameras, images.device)
        embeds = self.model.get_input_embeddings()(input_ids)
        placeholder = self.tokenizer.pad_token_id or 0
        if prefix is not None:  # text-like positions 0…P−1 for the rope; its embeddings are given
            input_ids = torch.cat([input_ids.new_full(prefix.shape[:2], placeholder), input_ids], dim=1)
            context_mask = torch.cat([context_mask.new_ones(prefix.shape[:2]), context_mask], dim=1)
            embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)
        attention_mask = context_mask
        if queries is not None:  # after the padding; the mask keeps their positions contiguous
            placeholders = input_ids.new_full(queries.shape[:2], placeholder)
            input_ids = torch.cat([input_ids, placeholders], dim=1)
            attention_mask = torch.cat([context_mask, context_mask.new_ones(queries.shape[:2])], dim=1)
            embeds = torch.cat([embeds, queries.to(embeds.dtype)], dim=1)
        # Multimodal RoPE positions from the token ids (the model can only derive them itself when it
        # embeds the ids, and the queries are embeddings).
        positions, _ = self.model.get_rope_index(input_ids, grid, None, attention_mask)
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            pixel_values=pixel_values,
            image_grid_thw=grid,
            output_hidden_states=True,
            use_cache=False,
        )
        return split_context_and_queries(out.hidden_states, context_mask)

    def _input_ids(
        self, instructions: list[str], cameras: int, device: torch.device
    ) -> tuple[torch.Tensor, ...]:
        """Per sample: ``<vision_start> <image_pad>×n <vision_end>`` per camera, then the instruction,
        inside the chat turns when ``chat_template`` (right-padded)."""
        image = [
            self.config.vision_start_token_id,
            *[self.config.image_token_id] * self.tokens_per_image,
            self.config.vision_end_token_id,
        ]
        text = self.tokenizer(
            list(instructions),
            add_special_tokens=False,
            truncation=True,
            max_length=self.max_instruction_tokens,
        )["input_ids"]
        opening, closing = self._chat_turns() if self.chat_template else ([], [])
        sequences = [opening + image * cameras + list(ids) + closing for ids in text]
        length = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([s + [pad] * (length - len(s)) for s in sequences], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences], device=device)
        return input_ids, mask

    def _chat_turns(self) -> tuple[list[int], list[int]]:
        """The token ids before the images and after the instruction."""
        if not hasattr(self, "_turns"):
            encode = functools.partial(self.tokenizer, add_special_tokens=False)
            opening, closing = chat_turns(self.tokenizer)
            self._turns = (encode([opening])["input_ids"][0], encode([closing])["input_ids"][0])
        return self._turns

    def optimizer_rules(self) -> OptimizerRules:
        vision, text = self.config.vision_config, self.config.text_config
        vision_head_dim = vision.hidden_size // vision.num_heads
        return OptimizerRules(
            modality_rules=[
                ModalityRule(r"^model\.visual\.", "vision"),
                ModalityRule(r"^model\.language_model\.", "language"),
            ],
            adamw_patterns=[
                r"^model\.visual\.(patch_embed|pos_embed)\.",
                r"^model\.language_model\.embed_tokens\.",
            ],
            per_head_rules=vit_per_head_rules(r"model\.visual\.blocks", vision_head_dim)
            + decoder_per_head_rules(r"model\.language_model\.layers", text.head_dim),
        )


def chat_turns(tokenizer: Any) -> tuple[str, str]:
    """The text before the images and after the instruction of one user turn with the assistant's
    opened: from the tokenizer's own chat template (the hub model's, as VLANeXt's processor renders
    it), else Qwen's format (:data:`CHAT_USER`, :data:`CHAT_ASSISTANT`; tiny byte-level models)."""
    if not getattr(tokenizer, "chat_template", None):
        return CHAT_USER, CHAT_ASSISTANT
    marker, probe = "<|vision_start|>", "pick up the bowl"
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": probe}]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    if rendered.count(marker) != 2 or rendered.count(probe) != 1:
        raise ValueError(
            f"the tokenizer's chat template renders two images and a text as {rendered!r}; set "
            "backbone.chat_template=false for the bare [images, instruction] layout"
        )
    return rendered[: rendered.index(marker)], rendered[rendered.index(probe) + len(probe) :]


class _ByteTokenizer:
    """Instruction bytes as token ids for tiny random models, which have no tokenizer files.

    Byte ids (ByT5's scheme, below 259) stay clear of the special tokens, which tiny configs put at
    the top of their vocabulary.
    """

    def __init__(self, vocab_size: int) -> None:
        self._bytes = ByT5Tokenizer()
        if vocab_size < len(self._bytes) + 8:
            raise ValueError(
                f"a tiny Qwen3-VL config needs vocab_size >= {len(self._bytes) + 8}, got {vocab_size}"
            )
        self.pad_token_id = self._bytes.pad_token_id

    def __call__(self, texts: list[str], **kwargs: Any) -> dict[str, list[list[int]]]:
        return self._bytes(texts, **kwargs)


register_schema("backbone", "qwen3_vl_schema", Qwen3VLBackbone)
