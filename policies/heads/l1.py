"""ℓ1-regression action head (eq. A1) as the paper's official VLA-Adapter runs train it: VLA-Adapter-Pro.

Learnable action queries are appended to the language model's input, so every LM layer computes
features for them; the Pro policy (:mod:`policies.heads.vla_adapter_pro`, one block per LM layer)
reads each layer's task-token and action-query features plus a projected proprioception token and
regresses the whole action chunk with an ℓ1 loss. The parts carry the official names — ``model``
(``MLPResNet``), ``proprio_projector`` (``ProprioProjector``: fc1, GELU, fc2), ``action_queries``
(the VLA's ``action_queries`` embedding) — so released weights load strictly
(:mod:`policies.vla_adapter_weights`). At full scale (Qwen2.5-0.5B: 24 layers of width 896) the
trained policy has 179.3 M parameters (+ 38.6 M of frozen, unused ``film_gen``).

``head=l1_bridge`` (:mod:`policies.heads.l1_bridge`) is VLA-Adapter's original shared-K/V head.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from policies.base import POLICY_SUPPLIED, ActionHead, BackboneOutput, OptimizerRules
from policies.contract import BackboneSpec
from policies.heads.common import masked_mean
from policies.heads.vla_adapter_pro import ProActionPolicy
from policies.vla_adapter_weights import load_vla_adapter_head
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema


class TaskTokens(str, enum.Enum):
    """Which context positions VLA-Adapter-Pro's blocks read as task tokens (``head.task_tokens``)."""

    vision = "vision"  # the image tokens, as the official head (its first 512 positions)
    all = "all"  # image and instruction tokens, padding masked


def shifted_queries(
    context_layers: tuple[torch.Tensor, ...],
    context_mask: torch.Tensor,
    query_layers: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, ...]:
    """Each layer's query features one position early: the last real context token's, then queries
    0 … Q−2 (whatever side the instruction is padded on)."""
    positions = torch.arange(context_mask.size(1), device=context_mask.device)
    last = (context_mask.long() * positions).argmax(dim=1)
    rows = torch.arange(context_mask.size(0), device=context_mask.device)
    return tuple(
        torch.cat([context[rows, last].unsqueeze(1), query[:, :-1]], dim=1)
        for context, query in zip(context_layers, query_layers, strict=True)
    )


class ActionQueryL1Head(ActionHead):
    """What VLA-Adapter's heads share: action queries run through the backbone, and ``‖f(x, c) − a‖₁``.

    Subclasses implement :meth:`regress`, the chunk prediction (``training`` tells the loss from
    inference, for heads whose input differs between them).
    """

    requires = frozenset({"layer_tokens", "queries"})

    def __init__(self, num_queries: int, context_dim: int) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        self.action_queries = nn.Parameter(torch.randn(num_queries, context_dim) * 0.02)

    def backbone_queries(self, batch_size: int) -> torch.Tensor:
        return self.action_queries.unsqueeze(0).expand(batch_size, -1, -1)

    def regress(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None, training: bool
    ) -> torch.Tensor:
        raise NotImplementedError

    def predict(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self._check(features)
        return self.regress(features, state, generator, training=False)

    def loss(
        self,
        features: BackboneOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self._check(features)
        prediction = self.regress(features, state, generator, training=True)
        return masked_mean((prediction - actions).abs(), action_is_pad)

    def _check(self, features: BackboneOutput) -> None:
        if features.layer_tokens is None or features.query_layer_tokens is None:
            raise ValueError(
                f"the {type(self).__name__} head needs per-layer features of its action queries: call the "
                "backbone with queries=head.backbone_queries(batch) (VLAPolicy does)"
            )


class ProprioProjector(nn.Module):
    """VLA-Adapter's ``ProprioProjector``: the robot state as one token of the backbone's width."""

    def __init__(self, state_dim: int, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(state_dim, width)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(width, width)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn(self.fc1(state)))


class L1RegressionHead(ActionQueryL1Head):
    """VLA-Adapter-Pro: action queries through the backbone + the Pro policy + ``‖f(x, c) − a‖₁``.

    ``backbone`` (its width and depth), ``action_dim``, ``state_dim`` and ``chunk_size`` come from the
    backbone and the environment when the policy is built; the rest is the head's own config.

    Args:
        num_queries: action queries run through the language model (VLA-Adapter: 64).
        heads: attention heads of each Pro block (VLA-Adapter: 8, i.e. 112-wide heads at 896).
        input_noise_std: while training, the policy's zero input rows get a Gaussian of this standard
            deviation, one draw per step shared by the batch, as the official head adds (0.02); its
            first LayerNorm rescales it, so this sets the inputs' shape, not their size. 0 turns it off.
        checkpoint: a VLA-Adapter(-Pro) checkpoint directory to load the head, the proprio projector
            and the action queries from, strictly (:mod:`policies.vla_adapter_weights`).
        task_tokens: which context positions the blocks read as task tokens: ``vision``, the image
            tokens (the official head reads the first 512 positions: the image patches of both cameras),
            or ``all`` (image and instruction tokens, padding masked).
        shift_queries: read each action query's features one position early, as the official head
            does (its slice is aligned for next-token prediction): the last instruction token's
            features, then queries 0 … Q−2; False reads the queries' own positions.
        gradient_checkpointing: recompute each block's activations in the backward pass (memory for
            compute: the backbones have the same option).
    """

    weight_sources = ("checkpoint",)  # only where weights come from: the architecture is in the config
    requirement_hints = MappingProxyType(
        {"vision_tokens": "set head.task_tokens=all to read every context token instead"}
    )

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"checkpoint": None}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        for key in ("num_queries", "heads"):
            if key in options and options[key] < 1:
                raise ValueError(f"head.{key}={options[key]}: must be >= 1")
        noise = options.get("input_noise_std", 0.0)
        if not 0 <= noise < math.inf:  # nan too
            raise ValueError(f"head.input_noise_std={noise}: must be a finite number >= 0")

    def __init__(
        self,
        backbone: BackboneSpec,
        action_dim: int,
        state_dim: int,
        chunk_size: int,
        num_queries: int = 64,
        heads: int = 8,
        input_noise_std: float = 0.02,
        checkpoint: str | None = None,
        task_tokens: TaskTokens = TaskTokens.vision,
        shift_queries: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(num_queries, backbone.hidden_size)
        self.check_options({"num_queries": num_queries, "heads": heads, "input_noise_std": input_noise_std})
        self.task_tokens, self.shift_queries = TaskTokens(task_tokens), shift_queries
        self.chunk_size, self.input_noise_std = chunk_size, input_noise_std
        self.proprio_projector = ProprioProjector(state_dim, backbone.hidden_size)
        self.model = ProActionPolicy(
            backbone.hidden_size, backbone.num_layers, action_dim, heads, gradient_checkpointing
        )
        if checkpoint:
            load_vla_adapter_head(self, checkpoint)

    def regress(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None, training: bool
    ) -> torch.Tensor:
        dtype = self.model.fc1.weight.dtype  # the official head runs in bf16 weights outside autocast
        rows = state.new_zeros(state.size(0), self.chunk_size, self.model.input_dim, dtype=dtype)
        if training and self.input_noise_std:
            noise = torch.randn(
                rows.shape[1:], device=rows.device, dtype=rows.dtype, generator=generator
            )  # one draw for the whole batch, as the official head
            rows = rows + self.input_noise_std * noise
        proprio = self.proprio_projector(state).unsqueeze(1)
        task_layers, task_mask = features.layer_tokens, features.mask
        if self.task_tokens is TaskTokens.vision:
            if features.vision_tokens is None:
                raise ValueError("head.task_tokens=vision: the backbone did not say which tokens are images")
            task_layers = tuple(h[:, : features.vision_tokens] for h in task_layers)
            task_mask = task_mask[:, : features.vision_tokens]
        queries = features.query_layer_tokens
        if self.shift_queries:
            queries = shifted_queries(features.layer_tokens, features.mask, queries)
        return self.model(rows, task_layers, task_mask, queries, proprio)

    @classmethod
    def requirements(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """Per-layer tokens and the queries' features, and which tokens are images unless ``task_tokens``
        is ``all``."""
        if TaskTokens(options.get("task_tokens", TaskTokens.vision)) is TaskTokens.vision:
            return cls.requires | {"vision_tokens"}
        return cls.requires

    def optimizer_rules(self) -> OptimizerRules:
        """As the official run: the Pro policy is action (its output layer on AdamW), the proprio
        projector a connector (``other``), the action queries on AdamW (Table A1)."""
        own = OptimizerRules(
            modality_rules=[
                ModalityRule(r"^proprio_projector\.", "other"),
                ModalityRule(r"^action_queries$", "action"),
            ],
            adamw_patterns=[r"^action_queries$"],
        )
        return self.model.optimizer_rules().prefixed("model") + own


register_schema("head", "l1_schema", L1RegressionHead, partial=True, supplied=POLICY_SUPPLIED)
