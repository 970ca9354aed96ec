"""The interface every backbone and action head implements, so that any head works on any backbone.

A backbone turns camera images and an instruction into a sequence of feature tokens; a head turns
those tokens (and the robot state) into a chunk of actions and a training loss. Each part also says
which of its parameters belong to which modality — vision, language, action or other — because the
paper's optimizer assignment (Table A1) is defined per modality, and the part that owns a parameter
is the one that knows what it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from policies.contract import BackboneSpec
from policies.joint_attention import AttentionGeometry
from vla_train.optim import ModalityRule, ParameterAssignment, PerHeadRule, assign_parameters

#: The paper's assignment (Table A1, configuration iii; connectors on Muon as in the official runs).
PION_ASSIGNMENT = {"vision": "muon", "language": "muon", "action": "pion", "other": "muon"}


@dataclass
class OptimizerRules:
    """What a module tells the modality-wise optimizer about its parameters (names relative to it).

    Attributes:
        modality_rules: ordered name patterns → modality (first match wins).
        adamw_patterns: matrices that stay on AdamW anyway (embeddings, output layers, queries).
        per_head_rules: how attention projections split into heads, for per-head mode.
    """

    modality_rules: list[ModalityRule] = field(default_factory=list)
    adamw_patterns: list[str] = field(default_factory=list)
    per_head_rules: list[PerHeadRule] = field(default_factory=list)

    def prefixed(self, prefix: str) -> OptimizerRules:
        """The same rules for a module registered as ``prefix`` inside a parent (``^`` anchors kept)."""

        def add(pattern: str) -> str:
            escaped = prefix.replace(".", r"\.") + r"\."
            return "^" + escaped + pattern[1:] if pattern.startswith("^") else "^" + escaped + ".*" + pattern

        return OptimizerRules(
            [ModalityRule(add(r.pattern), r.modality) for r in self.modality_rules],
            [add(p) for p in self.adamw_patterns],
            [PerHeadRule(add(r.pattern), r.head_dim, r.axis) for r in self.per_head_rules],
        )

    def assign(
        self,
        named_parameters: Iterable[tuple[str, nn.Parameter]],
        optimizers: Mapping[str, str] = PION_ASSIGNMENT,
        per_head_modalities: Sequence[str] = (),
    ) -> dict[str, ParameterAssignment]:
        """Where every trainable parameter goes under these rules, by name (for inspection and counts)."""
        assignments = assign_parameters(
            named_parameters,
            self.modality_rules,
            optimizers,
            self.adamw_patterns,
            self.per_head_rules,
            per_head_modalities,
        )
        return {a.name: a for a in assignments}

    def __add__(self, other: OptimizerRules) -> OptimizerRules:
        return OptimizerRules(
            self.modality_rules + other.modality_rules,
            self.adamw_patterns + other.adamw_patterns,
            self.per_head_rules + other.per_head_rules,
        )


def vit_per_head_rules(blocks: str, head_dim: int) -> list[PerHeadRule]:
    """Per-head layout of ViT blocks with a fused ``attn.qkv`` (rows: Q, K, V heads) and ``attn.proj``
    (timm's ViTs, Qwen3-VL's vision tower). ``blocks``: regex of the blocks' name prefix."""
    return [
        PerHeadRule(rf"^{blocks}\.\d+\.attn\.qkv\.weight$", head_dim, 0),
        PerHeadRule(rf"^{blocks}\.\d+\.attn\.proj\.weight$", head_dim, 1),
    ]


def decoder_per_head_rules(layers: str, head_dim: int) -> list[PerHeadRule]:
    """Per-head layout of Qwen/Llama-style decoder layers: ``q/k/v_proj`` by rows, ``o_proj`` by columns.

    One ``head_dim`` serves grouped-query attention: Q and K/V then have different head counts."""
    return [
        PerHeadRule(rf"^{layers}\.\d+\.self_attn\.(q|k|v)_proj\.weight$", head_dim, 0),
        PerHeadRule(rf"^{layers}\.\d+\.self_attn\.o_proj\.weight$", head_dim, 1),
    ]


@dataclass
class BackboneOutput:
    """Features for the action head.

    Attributes:
        tokens: ``(B, T, D)`` last-layer hidden states over image and instruction tokens.
        mask: ``(B, T)`` bool, True where a token is real (False on padding).
        layer_tokens: per-layer hidden states ``(L + 1) × (B, T, D)`` (embedding output first), for
            heads that read intermediate layers (VLA-Adapter's bridge attention).
        query_layer_tokens: per-layer hidden states ``(L + 1) × (B, Q, D)`` at the positions of the
            head's query embeddings, when the head passed any (:meth:`ActionHead.backbone_queries`).
        layer_keys_values: per-layer attention keys and values ``L × ((B, kv_heads, T, d), …)``, rotary
            embedding applied, for a head that attends jointly with the backbone (π0.5's action expert).
        vision_tokens: the context's first ``vision_tokens`` positions are image tokens, in every sample
            (VLA-Adapter-Pro reads those as its task tokens).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    layer_tokens: tuple[torch.Tensor, ...] | None = None
    query_layer_tokens: tuple[torch.Tensor, ...] | None = None
    layer_keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    vision_tokens: int | None = None


def with_queries(
    embeds: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Append query embeddings after the (padded) context; returns embeddings, mask, position ids.

    Positions count real tokens only, so a query sits right after its sample's last instruction
    token whatever the padding, and the context's features do not depend on the queries (causal).
    """
    if queries is not None:
        embeds = torch.cat([embeds, queries.to(embeds.dtype)], dim=1)
        mask = torch.cat([mask, mask.new_ones(queries.shape[:2])], dim=1)
    return embeds, mask, (mask.long().cumsum(-1) - 1).clamp_min(0)


def split_context_and_queries(
    hidden_states: tuple[torch.Tensor, ...], context_mask: torch.Tensor, vision_tokens: int | None = None
) -> BackboneOutput:
    """Hidden states over ``[context, queries]`` → :class:`BackboneOutput` (queries last, if any)."""
    length = context_mask.size(1)
    context = tuple(h[:, :length] for h in hidden_states)
    queries = tuple(h[:, length:] for h in hidden_states) if hidden_states[0].size(1) > length else None
    return BackboneOutput(context[-1], context_mask.bool(), context, queries, vision_tokens=vision_tokens)


def freeze_parts(parts: Mapping[str, Sequence[nn.Module]], requested: Iterable[str]) -> None:
    """``backbone.freeze``: stop gradients of the named parts (e.g. ``vision``, ``language``)."""
    for part in requested:
        if part not in parts:
            raise ValueError(
                f"backbone.freeze: unknown part {part!r}; use {' and/or '.join(map(repr, parts))}"
            )
        for module in parts[part]:
            module.requires_grad_(False)


def plain_config(config: Any) -> Any:
    """A Hydra/OmegaConf node → plain Python containers (library configs take dicts); others unchanged."""
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build parameters directly in ``dtype`` (billions of parameters are not built in fp32 only to be
    cast), while buffers that libraries create in fp32 on purpose (rotary frequencies) stay fp32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class Backbone(nn.Module):
    """Images + instruction → feature tokens.

    Subclasses set ``hidden_size`` and ``num_layers`` (and ``attention_geometry`` if they offer
    ``keys_values``) and declare in ``provides`` which :data:`~policies.contract.FEATURES` they fill;
    a head is paired with a backbone through those alone (:mod:`policies.contract`).
    """

    provides: frozenset[str] = frozenset({"layer_tokens", "queries"})
    hidden_size: int
    num_layers: int
    attention_geometry: AttentionGeometry | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the ``backbone.<key>`` of ``options`` (its resolved config) that this
        class cannot be built with. Called by the config check before anything is built or recorded,
        for what a schema's types cannot say (ranges, divisibility); nothing by default."""

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Changes to ``options`` (its config) that build the same architecture with random weights and
        nothing downloaded — for parameter counts, step timings and meta-device checks. None by
        default: a part that downloads nothing needs none."""
        return {}

    @property
    def spec(self) -> BackboneSpec:
        """What the head built on this backbone is told about it."""
        return BackboneSpec(self.hidden_size, self.num_layers, self.attention_geometry, self.provides)

    def forward(
        self,
        images: torch.Tensor,
        instructions: list[str],
        queries: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ) -> BackboneOutput:
        """Args:
        images: ``(B, cameras, 3, H, W)`` float in [0, 1].
        instructions: one string per sample.
        queries: optional ``(B, Q, hidden_size)`` embeddings run through the language model after the
            instruction (VLA-Adapter's action queries); their hidden states come back per layer. Only
            backbones that provide ``queries`` take them.
        state: ``(B, S)`` normalized proprioception; a backbone that writes it into its prompt (π0.5)
            reads it, the others ignore it.
        prefix: optional ``(B, P, hidden_size)`` embeddings placed before the whole prompt (VLANeXt's
            proprio tokens), part of the context; only backbones that provide ``prefix_tokens``
            take them.
        """
        raise NotImplementedError

    def optimizer_rules(self) -> OptimizerRules:
        raise NotImplementedError


#: what the policy passes every head's constructor; the rest of its parameters are the head's config
POLICY_SUPPLIED = ("backbone", "action_dim", "state_dim", "chunk_size")


class ActionHead(nn.Module):
    """Backbone features + state → action chunk. Works in normalized action space.

    Built by the policy as ``Head(backbone=<BackboneSpec>, action_dim=, state_dim=, chunk_size=,
    **options)``; ``requires`` names the backbone features it reads (:mod:`policies.contract`).

    ``normalization``: how the policy normalizes state and actions for this head (a
    :class:`~policies.vla_policy.Normalizer` mode), part of the head's definition (π0.5: quantiles).
    """

    normalization: str = "mean_std"
    requires: frozenset[str] = frozenset()
    #: feature → how to do without it (an option), added to the error when a backbone lacks it
    requirement_hints: Mapping[str, str] = MappingProxyType({})

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """As :meth:`Backbone.check_options` (keys named ``head.<key>``)."""

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """As :meth:`Backbone.random_init`."""
        return {}

    @classmethod
    def requirements(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The backbone features (:data:`~policies.contract.FEATURES`) this head reads when built with
        ``options`` (its config); ``requires`` unless they depend on the options."""
        return cls.requires

    def backbone_queries(self, batch_size: int) -> torch.Tensor | None:
        """Embeddings the backbone should run after the instruction, or None (the default)."""
        return None

    def backbone_prefix(self, states: torch.Tensor) -> torch.Tensor | None:
        """Embeddings the backbone should put before its prompt, from the normalized ``(B, H, S)``
        recent states (current last), or None (the default: the head reads the state itself)."""
        return None

    def loss(
        self,
        features: BackboneOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scalar training loss.

        Args:
            state: ``(B, S)`` normalized proprioception.
            actions: ``(B, chunk, A)`` normalized target actions.
            action_is_pad: ``(B, chunk)`` True where the chunk runs past the episode end.
            generator: source of any randomness (noise, timesteps), for exactly reproducible runs.
        """
        raise NotImplementedError

    def predict(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(B, chunk, A)`` normalized actions."""
        raise NotImplementedError

    def optimizer_rules(self) -> OptimizerRules:
        raise NotImplementedError
