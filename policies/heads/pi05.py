"""π0.5's action expert: flow matching with a Gemma-300M-shaped transformer that attends jointly with
the VLM, conditioned on the flow time through adaptive RMSNorm.

As π0.5 defines it (openpi / lerobot, read for the design, written here from released parts):
- the chunk, zero-padded to 32 action dims, enters through ``action_in_proj``; the flow time enters
  *only* through the norms: ``cond = swish(time_mlp_out(swish(time_mlp_in(sincos(t)))))`` (periods
  4e-3…4), and each of the 37 norms (two per layer, one final) maps it to a scale, a shift and a gate
  (``dense``, zero-initialized); residuals are gated: ``x + y · gate``;
- in layer ``l`` the expert's tokens attend to the VLM's layer-``l`` keys/values over the valid prefix
  and to each other (bidirectionally), positions continuing after the prefix's last real token;
- ``t = 1`` is noise and ``t = 0`` data: ``x_t = t·ε + (1 − t)·a``, the target velocity ``ε − a``,
  ``t ~ Beta(1.5, 1)·0.999 + 0.001`` (sampled by its inverse CDF, so a seeded generator reproduces it),
  10 Euler steps from ``t = 1`` at inference, the VLM's keys/values computed once;
- the loss is the mean squared error over the real action dims of the non-padded chunk steps.
The robot state reaches the model as text in the prompt (:mod:`policies.backbones.pi05`), not here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GemmaConfig
from transformers.models.gemma.modeling_gemma import (
    GemmaAttention,
    GemmaMLP,
    GemmaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from policies.base import (
    POLICY_SUPPLIED,
    ActionHead,
    BackboneOutput,
    OptimizerRules,
    decoder_per_head_rules,
    default_dtype,
)
from policies.contract import BackboneSpec
from policies.heads.common import masked_mean, run_block
from policies.joint_attention import attend, project_heads
from policies.pi05_weights import expert_checkpoint_names, load_mapped_weights
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale, shift and residual gate come from a condition vector.

    No weight of its own: at initialization (``dense`` zero) it is a plain RMS normalization and its
    gate closes the residual branch, so the expert starts as the identity on its input tokens.
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalized = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(cond).unsqueeze(1).chunk(3, dim=-1)
        return (normalized * (1 + scale.float()) + shift.float()).to(x.dtype), gate


class ExpertLayer(nn.Module):
    """One expert layer: transformers' Gemma attention projections and MLP, adaptive norms."""

    def __init__(self, config: GemmaConfig, layer_index: int) -> None:
        super().__init__()
        self.self_attn = GemmaAttention(config, layer_index)
        self.mlp = GemmaMLP(config)
        self.input_layernorm = AdaRMSNorm(config.hidden_size, config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = AdaRMSNorm(
            config.hidden_size, config.hidden_size, config.rms_norm_eps
        )

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        prefix: tuple[torch.Tensor, torch.Tensor],
        rotary: tuple[torch.Tensor, torch.Tensor],
        allowed: torch.Tensor,
    ) -> torch.Tensor:
        hidden, gate = self.input_layernorm(x, cond)
        queries, keys, values = project_heads(self.self_attn, hidden)
        queries, keys = apply_rotary_pos_emb(queries, keys, *rotary)
        keys = torch.cat([prefix[0].to(keys.dtype), keys], dim=2)
        values = torch.cat([prefix[1].to(values.dtype), values], dim=2)
        x = x + self.self_attn.o_proj(attend(queries, keys, values, allowed)) * gate
        hidden, gate = self.post_attention_layernorm(x, cond)
        return x + self.mlp(hidden) * gate


class ActionExpert(nn.Module):
    """The expert's layers and final norm (named as in π0.5's checkpoints: ``layers``, ``norm``)."""

    def __init__(self, config: GemmaConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ExpertLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = AdaRMSNorm(config.hidden_size, config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = GemmaRotaryEmbedding(config)


class PI05ActionExpert(ActionHead):
    """π0.5's flow-matching action expert (see the module docstring).

    Args:
        backbone: the VLM's spec; the expert copies its depth and attention shape (``attention``).
        action_dim, state_dim, chunk_size: given by the policy.
        width, mlp_dim: the expert's residual and MLP widths (Gemma-300M: 1024, 4096).
        max_action_dim: actions are zero-padded to this size (π0.5: 32), as its projections expect.
        num_inference_steps: Euler steps from noise to actions.
        time_beta_alpha: ``α`` of the Beta(α, 1) training-time distribution.
        min_period, max_period: the sinusoidal time embedding's period range.
        pretrained: π0.5 weights to load the expert and its projections from (see the backbone).
        dtype: weights' dtype.
        gradient_checkpointing: recompute each block's activations in the backward pass (memory for
            compute: the backbones have the same option).
    """

    normalization = "quantile"
    weight_sources = ("pretrained",)  # only where weights come from: the architecture is in the config
    requires = frozenset({"keys_values"})

    @classmethod
    def random_init(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"pretrained": None}  # the architecture is in the options; only the weights download

    def __init__(
        self,
        backbone: BackboneSpec,
        action_dim: int,
        state_dim: int,
        chunk_size: int,
        width: int = 1024,
        mlp_dim: int = 4096,
        max_action_dim: int = 32,
        num_inference_steps: int = 10,
        time_beta_alpha: float = 1.5,
        min_period: float = 4e-3,
        max_period: float = 4.0,
        pretrained: str | None = None,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        backbone_attention = backbone.attention
        if backbone_attention is None:
            raise ValueError("the π0.5 expert attends with its VLM's layers: the backbone has no attention")
        if action_dim > max_action_dim:
            raise ValueError(f"action_dim={action_dim} exceeds the expert's max_action_dim={max_action_dim}")
        if width % 2:
            raise ValueError(f"the expert width must be even (sine/cosine time features), got {width}")
        self.action_dim, self.chunk_size, self.max_action_dim = action_dim, chunk_size, max_action_dim
        self.num_inference_steps, self.time_beta_alpha = num_inference_steps, time_beta_alpha
        self.min_period, self.max_period = min_period, max_period
        self.head_dim = backbone_attention.head_dim
        config = GemmaConfig(
            vocab_size=1,  # the expert has no token embedding
            hidden_size=width,
            intermediate_size=mlp_dim,
            num_hidden_layers=backbone_attention.layers,
            num_attention_heads=backbone_attention.heads,
            num_key_value_heads=backbone_attention.kv_heads,
            head_dim=backbone_attention.head_dim,
            hidden_activation="gelu_pytorch_tanh",
            rope_theta=backbone_attention.rope_theta,
        )
        with default_dtype(getattr(torch, dtype)):
            self.expert = ActionExpert(config)
            self.action_in_proj = nn.Linear(max_action_dim, width)
            self.action_out_proj = nn.Linear(width, max_action_dim)
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        if pretrained:
            load_mapped_weights(self, pretrained, expert_checkpoint_names)

    # --- the velocity field -----------------------------------------------------------------------
    def time_condition(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` flow times → ``(B, width)``: sinusoids over log-spaced periods, then the time MLP."""
        half = self.time_mlp_in.in_features // 2
        fraction = torch.linspace(0.0, 1.0, half, dtype=torch.float64, device=t.device)
        period = self.min_period * (self.max_period / self.min_period) ** fraction
        angle = t.double().unsqueeze(-1) * (2 * math.pi / period)
        features = torch.cat([angle.sin(), angle.cos()], dim=-1).to(self.time_mlp_in.weight.dtype)
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(features))))

    def velocity(self, features: BackboneOutput, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, chunk, max_action_dim)`` velocity at ``x_t = noisy``, reading the VLM's keys/values."""
        if features.layer_keys_values is None:
            raise ValueError(
                "head=pi05 attends to the VLM's per-layer keys and values: use it with backbone=pi05 "
                "(or pi05_tiny)"
            )
        if len(features.layer_keys_values) != len(self.expert.layers):
            raise ValueError(
                f"the expert has {len(self.expert.layers)} layers, the VLM {len(features.layer_keys_values)}"
            )
        prefix_mask = features.mask
        batch, steps = noisy.shape[:2]
        x = self.action_in_proj(noisy.to(self.action_in_proj.weight.dtype))
        cond = self.time_condition(t)
        positions = prefix_mask.long().sum(-1, keepdim=True) + torch.arange(steps, device=x.device)
        rotary = self.expert.rotary_emb(x, positions)
        allowed = torch.cat([prefix_mask[:, None, None, :].expand(-1, 1, steps, -1),
                             prefix_mask.new_ones(batch, 1, steps, steps)], dim=-1)  # fmt: skip
        for layer, prefix in zip(self.expert.layers, features.layer_keys_values, strict=True):
            x = run_block(layer, x, cond, prefix, rotary, allowed, recompute=self.gradient_checkpointing)
        x, _ = self.expert.norm(x, cond)
        return self.action_out_proj(x).float()

    # --- training and sampling --------------------------------------------------------------------
    def sample_time(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Beta(α, 1) by its inverse CDF ``u^(1/α)``, squeezed into [0.001, 1]."""
        u = torch.rand(batch, device=device, generator=generator)
        return u.pow(1.0 / self.time_beta_alpha) * 0.999 + 0.001

    def loss(
        self,
        features: BackboneOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        actions = F.pad(actions.float(), (0, self.max_action_dim - actions.size(-1)))
        noise = torch.randn(actions.shape, device=actions.device, generator=generator)
        t = self.sample_time(actions.size(0), actions.device, generator).view(-1, 1, 1)
        predicted = self.velocity(features, t * noise + (1 - t) * actions, t.view(-1))
        error = (predicted - (noise - actions))[..., : self.action_dim].pow(2)
        return masked_mean(error, action_is_pad)

    @torch.no_grad()
    def predict(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        batch = features.mask.size(0)
        shape = (batch, self.chunk_size, self.max_action_dim)
        x = torch.randn(shape, device=features.mask.device, generator=generator)
        dt = -1.0 / self.num_inference_steps
        for step in range(self.num_inference_steps):
            t = torch.full((batch,), 1.0 + step * dt, device=x.device)
            x = x + dt * self.velocity(features, x, t)
        return x[..., : self.action_dim]

    def optimizer_rules(self) -> OptimizerRules:
        """All action modality (the expert and the action/time projections, adaptive norms included);
        the output projection stays on AdamW like every head's output layer (Table A1)."""
        return OptimizerRules(
            modality_rules=[ModalityRule(r"^", "action")],
            adamw_patterns=[r"^action_out_proj\."],
            per_head_rules=decoder_per_head_rules(r"expert\.layers", self.head_dim),
        )


register_schema("head", "pi05_schema", PI05ActionExpert, partial=True, supplied=POLICY_SUPPLIED)
