"""Prismatic "dinosiglip" VLM (VLA-Adapter's backbone, Table A1): DINOv2 + SigLIP → MLP → Qwen2.5-0.5B.

Structure, as in the Prismatic VLMs that VLA-Adapter starts from:
- two timm ViTs see every camera image: DINOv2 ViT-L/14 with 4 registers (ImageNet normalization) and
  SigLIP So400m/14 (mean = std = 0.5); each contributes its **second-to-last** block's patch tokens
  (prefix tokens dropped), concatenated along the feature axis (1024 + 1152 = 2176 per patch);
- a 3-layer GELU MLP projects them to the language model's width (2176 → 8704 → 896 → 896);
- Qwen2.5 runs causally over the prompt with the image patches of every camera after its first
  token: ``[<|im_start|>, patches, "system\n…user\nWhat action should the robot take to
  {instruction}?<|im_end|>\n<|im_start|>assistant\n"]``, as VLA-Adapter's official training builds
  it (``QwenPromptBuilder`` with the "openvla" system prompt, the instruction lower-cased, the empty
  response's trailing tokens dropped; Prismatic splices the patches in after the first token, where
  other LMs have BOS). ``prompt="{instruction}"`` with ``image_position=0`` is the plain layout
  ``[patches, instruction]``.

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

#: VLA-Adapter's prompt (prismatic/vla/datasets/datasets.py RLDSBatchTransform with QwenPromptBuilder):
#: the chat turns up to the assistant's, whose empty response (" <|im_end|><|endoftext|>", three tokens
#: under Qwen2's pre-tokenizer) the official transform deletes before appending its action tokens.
OFFICIAL_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat action should the robot take to {instruction}?<|im_end|>\n"
    "<|im_start|>assistant\n"
)

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
        prompt: the text around the instruction (``{instruction}`` marks its place).
        lowercase_instruction: lower-case the instruction first (the official transform does).
        image_position: how many prompt tokens come before the image patches (official: 1).
        max_prompt_tokens: the longest prompt accepted; a longer one is an error, never truncated.

    ``vision_tokens`` (what ``head.task_tokens=vision`` reads) counts the patches, and the head reads
    that many leading positions: with the official layout these are ``<|im_start|>`` and all patches
    but the last, exactly the slice VLA-Adapter's official head reads.
    """

    provides = frozenset({"layer_tokens", "queries", "vision_tokens"})

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
        prompt: str = OFFICIAL_PROMPT,
        lowercase_instruction: bool = True,
        image_position: int = 1,
        max_prompt_tokens: int = 256,
    ) -> None:
        super().__init__()
        if prompt.count("{instruction}") != 1:
            raise ValueError(f"backbone.prompt must contain '{{instruction}}' once, got {prompt!r}")
        if image_position < 0:
            raise ValueError(f"backbone.image_position must be >= 0, got {image_position}")
        overrides = plain_config(vision_overrides) or {}
        self.image_size = image_size
        self.prompt, self.lowercase_instruction = prompt, lowercase_instruction
        self.image_position, self.max_prompt_tokens = image_position, max_prompt_tokens
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
        self.tokenizer.padding_side = "right"  # the prompt's first tokens stay in place for image_position
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
        text = self.tokenize(instructions).to(images.device)
        words = self.language.get_input_embeddings()(text.input_ids)
        split = self.image_position
        embeds = torch.cat([words[:, :split], visual.to(words.dtype), words[:, split:]], 1)
        image_mask = torch.ones(visual.shape[:2], dtype=torch.long, device=images.device)
        mask = torch.cat([text.attention_mask[:, :split], image_mask, text.attention_mask[:, split:]], 1)
        all_embeds, all_mask, positions = with_queries(embeds, mask, queries)
        out = self.language.model(
            inputs_embeds=all_embeds,
            attention_mask=all_mask,
            position_ids=positions,
            output_hidden_states=True,
            use_cache=False,
        )
        return split_context_and_queries(out.hidden_states, mask, vision_tokens=visual.size(1))

    def tokenize(self, instructions: list[str]) -> Any:
        """The prompts, right-padded; an instruction too long for ``max_prompt_tokens`` is an error."""
        prompts = [
            self.prompt.format(instruction=text.lower() if self.lowercase_instruction else text)
            for text in instructions
        ]
        tokens = self.tokenizer(prompts, padding="longest", return_tensors="pt")
        lengths = tokens.attention_mask.sum(1)
        if int(lengths.max()) > self.max_prompt_tokens:
            longest = prompts[int(lengths.argmax())]
            raise ValueError(
                f"a prompt of {int(lengths.max())} tokens exceeds backbone.max_prompt_tokens="
                f"{self.max_prompt_tokens} (raise it): {longest!r}"
            )
        if int(lengths.min()) < self.image_position:
            raise ValueError(
                f"backbone.image_position={self.image_position} is past the end of a "
                f"{int(lengths.min())}-token prompt"
            )
        return tokens

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
