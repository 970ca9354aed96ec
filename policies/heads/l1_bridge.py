"""ℓ1-regression head with VLA-Adapter's original (pre-Pro) bridge attention: ``head=l1_bridge``.

Learnable action queries are appended to the language model's input, so every LM layer computes
features for them; a bridge-attention policy (:mod:`policies.heads.bridge`) with one block per LM
layer reads each layer's raw vision-language features and action-query features, plus a projected
proprioception token, and regresses the whole action chunk with an ℓ1 loss. At full scale (Qwen2.5-
0.5B: 24 layers of width 896) the policy has ~97 M parameters, the original VLA-Adapter's "Policy"
size. The paper's official runs train the Pro head instead (``head=l1``, :mod:`policies.heads.l1`).
"""

from __future__ import annotations

import torch
from torch import nn

from policies.base import POLICY_SUPPLIED, BackboneOutput, OptimizerRules
from policies.contract import BackboneSpec
from policies.heads.bridge import BridgeAttentionPolicy
from policies.heads.l1 import ActionQueryL1Head
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema


class BridgeL1RegressionHead(ActionQueryL1Head):
    """Action queries through the backbone + bridge attention + ``‖f(x, c) − a‖₁``.

    ``backbone`` (its width and depth), ``action_dim``, ``state_dim`` and ``chunk_size`` come from the
    backbone and the environment when the policy is built; the rest is the head's own config.

    Args:
        num_queries: action queries run through the language model (VLA-Adapter: 64).
        heads: attention heads of each bridge block (VLA-Adapter: 8, i.e. 112-wide heads at 896).
        gradient_checkpointing: recompute each block's activations in the backward pass (memory for
            compute: the backbones have the same option).
    """

    def __init__(
        self,
        backbone: BackboneSpec,
        action_dim: int,
        state_dim: int,
        chunk_size: int,
        num_queries: int = 64,
        heads: int = 8,
        gradient_checkpointing: bool = False,
    ) -> None:
        context_dim = backbone.hidden_size
        super().__init__(num_queries, context_dim)
        self.chunk_embedding = nn.Parameter(torch.randn(chunk_size, context_dim) * 0.02)
        self.proprio_proj = nn.Sequential(
            nn.Linear(state_dim, context_dim), nn.GELU(), nn.Linear(context_dim, context_dim)
        )
        self.policy = BridgeAttentionPolicy(context_dim, backbone.num_layers, heads, gradient_checkpointing)
        self.output_proj = nn.Linear(context_dim, action_dim)

    def regress(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None, training: bool
    ) -> torch.Tensor:
        proprio = self.proprio_proj(state).unsqueeze(1)
        chunk = self.chunk_embedding.unsqueeze(0).expand(state.size(0), -1, -1)
        hidden = self.policy(
            chunk, features.layer_tokens, features.mask, features.query_layer_tokens, proprio
        )
        return self.output_proj(hidden)

    def optimizer_rules(self) -> OptimizerRules:
        """Action modality; queries, chunk embeddings and the output layer stay on AdamW (Table A1); the
        proprio projector is a connector (``other``), as VLA-Adapter's official run routes it."""
        own = OptimizerRules(
            modality_rules=[
                ModalityRule(r"^proprio_proj\.", "other"),
                ModalityRule(r"^(action_queries|chunk_embedding|output_proj)", "action"),
            ],
            adamw_patterns=[r"^action_queries$", r"^chunk_embedding$", r"^output_proj\."],
        )
        return self.policy.optimizer_rules().prefixed("policy") + own


register_schema("head", "l1_bridge_schema", BridgeL1RegressionHead, partial=True, supplied=POLICY_SUPPLIED)
