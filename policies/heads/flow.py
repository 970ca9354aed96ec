"""Flow-matching action head (eq. A2) as VLANeXt builds it: a DiT over the action chunk that reads
every layer of the backbone.

- Learnable "meta queries" are appended to the language model's input (a latent buffer the VLM
  writes into); the head never sends actions through the VLM, so the VLM runs once per chunk and
  only the head is re-run at each integration step (its per-layer keys/values are cached).
- Block ``i`` of the head attends, in one softmax, to the chunk tokens and to the projected hidden
  states of backbone layer ``i`` (context and queries, padding masked); adaLN-Zero modulation from
  the flow time is the only other conditioning, and every modulation and the output layer start at
  zero, so the head predicts zero velocity at initialization.

- An optional auxiliary loss (VLANeXt's ``dct_loss_weight``, 0.1 in its official run) compares the
  clean chunk the head implies, ``â1 = a_t + (1−t)·v̂``, with the true one in the DCT-II basis along
  time. The transform is orthonormal, so with equal weights per frequency it equals the time-domain
  error: a (1−t)²-weighted copy of the flow loss; the DCT basis is kept so the term reads as VLANeXt's.

- The robot state enters either as one token of the DiT (``state_input=head``, the current state) or,
  as VLANeXt's official run feeds it, as tokens before the VLM's prompt (``state_input=backbone``:
  each of the ``env.state_history`` recent states through one linear map to the VLM's width, read
  back by the DiT as part of the context).

Differences from VLANeXt's code (read, not copied), each for a reason: padded context positions are
masked (VLANeXt attends to them: ``attend_padding=true``), and so are padded chunk steps in the DCT
term (``env.action_padding=zero_motion`` leaves none, as VLANeXt's data); the path follows the
paper's eq. A2 (``a_t = t·a1 + (1−t)·a0``, ``t = 1`` is data), which is VLANeXt's with σ = 1 − t.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import POLICY_SUPPLIED, ActionHead, BackboneOutput, OptimizerRules
from policies.contract import BackboneSpec
from policies.heads.common import masked_mean, run_block
from vla_train.optim import ModalityRule, PerHeadRule
from vla_train.schemas import register_schema

TIME_SAMPLINGS = ("uniform", "beta")
STATE_INPUTS = ("head", "backbone")
TIME_FEATURES = 256
DEFAULT_QUERIES = 16  # VLANeXt's meta queries


def dct_matrix(length: int) -> torch.Tensor:
    """Orthonormal DCT-II along a length-``length`` axis: ``dct_matrix(T) @ x`` transforms ``x``'s rows."""
    return torch.from_numpy(scipy.fft.dct(torch.eye(length).numpy(), norm="ortho", axis=0))


def dct_loss(predicted: torch.Tensor, target: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``(B, chunk, A)`` chunks in the DCT basis along time, padded steps zeroed
    before the transform and left out of the count."""
    keep = (~action_is_pad).unsqueeze(-1).to(predicted.dtype)
    residual = (predicted - target) * keep
    coefficients = torch.einsum("ft,bta->bfa", dct_matrix(residual.size(1)).to(residual), residual)
    return coefficients.pow(2).sum() / (keep.sum() * residual.size(-1)).clamp_min(1.0)


def timestep_features(
    t: torch.Tensor, size: int = TIME_FEATURES, max_period: float = 10_000.0
) -> torch.Tensor:
    """``(B,)`` flow times in [0, 1] → ``(B, size)`` sinusoids of ``1000·t`` (DiT's timestep features)."""
    half = size // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    angles = 1000.0 * t.float().unsqueeze(-1) * frequencies
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class FlowBlock(nn.Module):
    """adaLN-Zero transformer block whose attention also reads one backbone layer."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, context_dim: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"head.heads={heads}: head.width={width} must be divisible by it")
        self.heads = heads
        self.modulation = nn.Linear(width, 6 * width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.context_proj = nn.Linear(context_dim, width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)
        hidden = int(mlp_ratio * width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def context_keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one backbone layer: independent of the flow time, so computed once."""
        projected = self.context_proj(context)
        return self._split(self.k_proj(projected)), self._split(self.v_proj(projected))

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor],
        context_mask: torch.Tensor,
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(time)).unsqueeze(1).chunk(6, -1)
        normed = self.norm(x) * (1 + scale1) + shift1
        context_keys, context_values = context
        keys = torch.cat([self._split(self.k_proj(normed)), context_keys], dim=2)
        values = torch.cat([self._split(self.v_proj(normed)), context_values], dim=2)
        real = torch.cat([context_mask.new_ones(x.shape[:2]), context_mask], dim=1)
        attended = F.scaled_dot_product_attention(
            self._split(self.q_proj(normed)), keys, values, attn_mask=real[:, None, None, :]
        )
        x = x + gate1 * self.o_proj(attended.transpose(1, 2).flatten(2))
        return x + gate2 * self.mlp(self.norm(x) * (1 + scale2) + shift2)

    def _split(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, width = tokens.shape
        return tokens.view(batch, length, self.heads, width // self.heads).transpose(1, 2)


class FlowMatchingHead(ActionHead):
    """Linear path ``a_t = t·a1 + (1−t)·a0`` with ``a0 ~ N(0, I)``; the head regresses ``a1 − a0``.

    Args:
        width, heads, mlp_ratio: the DiT's size (VLANeXt: 1024, 16, 4).
        depth: blocks, reading the last ``depth`` hidden states of the backbone; ``None`` = one per
            hidden state (embedding output + every layer: 29 on Qwen3-VL-2B, as in VLANeXt).
        num_queries: meta queries appended to the language model's input (VLANeXt: 16).
        num_inference_steps: Euler steps from t = 0 (noise) to t = 1 (actions) at inference.
        time_sampling: ``uniform`` (eq. A2, VLANeXt) or ``beta`` (π0's Beta(1.5, 1) on 1 − t, which
            puts more training weight near the noise end).
        dct_loss_weight: weight of the DCT auxiliary loss on the implied clean chunk (VLANeXt's official
            run: 0.1; 0 turns it off).
        state_input: ``head`` (a DiT token from the current state) or ``backbone`` (VLANeXt: the
            recent states as tokens before the VLM's prompt; the backbone must take a prefix).
        gradient_checkpointing: recompute each block's activations in the backward pass (memory for
            compute: the backbones have the same option).
    """

    requirement_hints = MappingProxyType(
        {"prefix_tokens": "set head.state_input=head to give the state to the head instead"}
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        for key, least in (("width", 1), ("heads", 1), ("num_inference_steps", 1), ("num_queries", 0)):
            if key in options and options[key] < least:
                raise ValueError(f"head.{key}={options[key]}: must be >= {least}")
        if "mlp_ratio" in options and not (math.isfinite(options["mlp_ratio"]) and options["mlp_ratio"] > 0):
            raise ValueError(f"head.mlp_ratio={options['mlp_ratio']}: must be a finite number > 0")
        width, heads = options.get("width"), options.get("heads")
        if width is not None and heads is not None and width % heads:
            raise ValueError(f"head.heads={heads}: head.width={width} must be divisible by it")
        if options.get("time_sampling", TIME_SAMPLINGS[0]) not in TIME_SAMPLINGS:
            raise ValueError(
                f"head.time_sampling={options['time_sampling']!r}: must be one of {TIME_SAMPLINGS}"
            )
        weight = options.get("dct_loss_weight", 0.0)
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"head.dct_loss_weight={weight}: must be a finite number >= 0")
        if options.get("state_input", STATE_INPUTS[0]) not in STATE_INPUTS:
            raise ValueError(f"head.state_input={options['state_input']!r}: must be one of {STATE_INPUTS}")

    def __init__(
        self,
        backbone: BackboneSpec,
        action_dim: int,
        state_dim: int,
        chunk_size: int,
        width: int = 1024,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        depth: int | None = None,
        num_queries: int = DEFAULT_QUERIES,
        num_inference_steps: int = 10,
        time_sampling: str = "uniform",
        dct_loss_weight: float = 0.0,
        state_input: str = "head",
        gradient_checkpointing: bool = False,
        attend_padding: bool = False,
    ) -> None:
        super().__init__()
        # VLANeXt's DiT attends to the padded positions of a batch's prompts too (its official run);
        # off by default, since then an instruction's actions depend on the batch's longest prompt
        self.attend_padding = attend_padding
        self.gradient_checkpointing = gradient_checkpointing
        context_dim, context_layers = backbone.hidden_size, backbone.num_layers
        depth = context_layers + 1 if depth is None else depth
        if not 1 <= depth <= context_layers + 1:
            raise ValueError(
                f"flow head depth must be in [1, {context_layers + 1}] (hidden states), got {depth}"
            )
        options = dict(width=width, heads=heads, mlp_ratio=mlp_ratio, num_queries=num_queries)
        options.update(num_inference_steps=num_inference_steps, time_sampling=time_sampling)
        self.check_options(dict(options, dct_loss_weight=dct_loss_weight, state_input=state_input))
        self.dct_loss_weight = dct_loss_weight
        self.state_input = state_input
        state_token = state_input == "head"
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.num_inference_steps = num_inference_steps
        self.time_sampling = time_sampling
        self.head_dim = width // heads
        self.meta_queries = (
            nn.Parameter(torch.randn(num_queries, context_dim) * 0.02) if num_queries > 0 else None
        )
        self.action_in_proj = nn.Linear(action_dim, width)
        self.state_proj = nn.Linear(state_dim, width if state_token else context_dim)
        self.position = nn.Parameter(torch.randn(chunk_size + state_token, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FEATURES, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(FlowBlock(width, heads, mlp_ratio, context_dim) for _ in range(depth))
        self.final_modulation = nn.Linear(width, 2 * width)
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.output_proj = nn.Linear(width, action_dim)
        for layer in (self.final_modulation, self.output_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def requirements(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """Every layer's hidden states, the meta queries' unless ``num_queries`` is 0, and a prefix
        for the states with ``state_input=backbone``."""
        needs = {"layer_tokens"}
        if options.get("num_queries", DEFAULT_QUERIES):
            needs.add("queries")
        if options.get("state_input", "head") == "backbone":
            needs.add("prefix_tokens")
        return frozenset(needs)

    def backbone_queries(self, batch_size: int) -> torch.Tensor | None:
        if self.meta_queries is None:
            return None
        return self.meta_queries.unsqueeze(0).expand(batch_size, -1, -1)

    def backbone_prefix(self, states: torch.Tensor) -> torch.Tensor | None:
        return self.state_proj(states) if self.state_input == "backbone" else None

    def encode_context(self, features: BackboneOutput) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
        """Per-block keys/values of the backbone layers (context + queries) and their padding mask."""
        if features.layer_tokens is None:
            raise ValueError("the flow head needs the backbone's per-layer hidden states (layer_tokens)")
        layers, mask = features.layer_tokens, features.mask
        if features.query_layer_tokens is not None:
            layers = tuple(
                torch.cat(pair, dim=1) for pair in zip(layers, features.query_layer_tokens, strict=True)
            )
            mask = torch.cat([mask, mask.new_ones(features.query_layer_tokens[0].shape[:2])], dim=1)
        if len(layers) < len(self.blocks):
            raise ValueError(
                f"the flow head has {len(self.blocks)} blocks but the backbone gave {len(layers)} layers"
            )
        chosen = layers[len(layers) - len(self.blocks) :]
        if self.attend_padding:
            mask = torch.ones_like(mask)
        return [block.context_keys_values(h) for block, h in zip(self.blocks, chosen, strict=True)], mask

    def velocity(
        self,
        context: list[tuple[torch.Tensor, ...]],
        context_mask: torch.Tensor,
        state: torch.Tensor,
        noisy_actions: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """``v(a_t, t | x, c)``: ``(B, chunk, A)``."""
        time = self.time_mlp(timestep_features(t).to(noisy_actions.dtype))
        tokens = self.action_in_proj(noisy_actions)
        if self.state_input == "head":
            tokens = torch.cat([self.state_proj(state).unsqueeze(1), tokens], dim=1)
        x = tokens + self.position
        for block, layer in zip(self.blocks, context, strict=True):
            x = run_block(block, x, time, layer, context_mask, recompute=self.gradient_checkpointing)
        shift, scale = self.final_modulation(F.silu(time)).unsqueeze(1).chunk(2, -1)
        return self.output_proj(self.final_norm(x) * (1 + scale) + shift)[:, -self.chunk_size :]

    def sample_time(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        u = torch.rand(batch, device=device, generator=generator)
        if self.time_sampling == "uniform":
            return u
        return 1.0 - u.pow(1.0 / 1.5)  # Beta(1.5, 1) on s = 1 − t by its inverse CDF: reproducible

    def loss(
        self,
        features: BackboneOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        noise = torch.randn(actions.shape, device=actions.device, dtype=actions.dtype, generator=generator)
        t = self.sample_time(actions.size(0), actions.device, generator).to(actions.dtype)
        noisy = t.view(-1, 1, 1) * actions + (1 - t.view(-1, 1, 1)) * noise
        context, mask = self.encode_context(features)
        predicted = self.velocity(context, mask, state, noisy, t)
        loss = masked_mean((predicted - (actions - noise)).pow(2), action_is_pad)
        if self.dct_loss_weight:
            implied_actions = noisy + (1 - t.view(-1, 1, 1)) * predicted
            loss = loss + self.dct_loss_weight * dct_loss(implied_actions, actions, action_is_pad)
        return loss

    @torch.no_grad()
    def predict(
        self, features: BackboneOutput, state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = (state.size(0), self.chunk_size, self.action_dim)
        actions = torch.randn(shape, device=state.device, dtype=state.dtype, generator=generator)
        context, mask = self.encode_context(features)
        dt = 1.0 / self.num_inference_steps
        for step in range(self.num_inference_steps):
            t = torch.full((shape[0],), step * dt, device=state.device, dtype=state.dtype)
            actions = actions + dt * self.velocity(context, mask, state, actions, t)
        return actions

    def optimizer_rules(self) -> OptimizerRules:
        """As VLANeXt's official run (train_pion.py) routes its head: the meta queries and the state
        projector are connectors (``other``); the timestep MLP, the final adaLN modulation, the positions
        and the output layer stay on AdamW; everything else is action."""
        return OptimizerRules(
            modality_rules=[
                ModalityRule(r"^(meta_queries$|state_proj\.)", "other"),
                ModalityRule(r"^", "action"),
            ],
            adamw_patterns=[r"^position$", r"^time_mlp\.", r"^final_modulation\.", r"^output_proj\."],
            per_head_rules=[
                PerHeadRule(r"^blocks\.\d+\.(q|k|v)_proj\.weight$", self.head_dim, 0),
                PerHeadRule(r"^blocks\.\d+\.o_proj\.weight$", self.head_dim, 1),
            ],
        )


register_schema("head", "flow_schema", FlowMatchingHead, partial=True, supplied=POLICY_SUPPLIED)
