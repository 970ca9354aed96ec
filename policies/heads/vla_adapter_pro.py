"""VLA-Adapter-Pro's action policy, the head the paper's official VLA-Adapter runs train.

Module for module the official ``MLPResNet`` with ``MLPResNetBlock_Pro`` blocks (OpenHelix-Team
VLA-Adapter, ``prismatic/models/action_heads.py``, as ``run_pion.sh`` builds it with
``--use_pro_version True``), with the official parameter names, so a released checkpoint's action head
loads strictly (:mod:`policies.vla_adapter_weights`). Written from a reading of that code, not copied.

The policy maps ``chunk`` rows to ``chunk`` actions:

- stem: the rows enter as ``chunk × (action_dim · width)`` inputs (zeros, plus a batch-shared Gaussian
  while training), ``LayerNorm`` → ``fc1`` → ReLU;
- one block per language-model layer; block ``i`` reads the layer-``i + 1`` hidden states of the task
  tokens and of the action queries. Each block has its own key/value projections for the rows
  themselves (``k_self``/``v_self``), for the action-query features plus the projected proprio token
  (``k_adapter``/``v_adapter``) and for the task tokens (``k_task``/``v_task``); one softmax runs over
  all three key groups, with the task logits scaled by ``tanh(gating_factor)`` (0 at init). Queries
  and keys carry rotary position embeddings, each group counting from 0; values do not. The block
  returns ``ReLU(ffn(LayerNorm(x + attention)))`` (no second residual);
- ``LayerNorm`` → ``fc2`` to the action dimension.

``film_gen`` exists in the official block (and its checkpoints) but its forward never uses it; here it
is kept for strict loading and frozen, so no optimizer or DDP bucket carries a parameter without a
gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policies.base import OptimizerRules
from policies.heads.bridge import split_into_heads
from policies.heads.common import run_block
from vla_train.optim import ModalityRule, PerHeadRule

ROPE_BASE = 10_000.0


def official_rotary(x: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """The rotary map of the official Pro block, on ``(B, heads, L, d)`` with positions ``0 … L−1``.

    The official code builds its angle table in the half-split layout (``[θ, θ]`` over ``d``) but pairs
    dimensions ``(2j, 2j+1)`` when rotating, so dimension ``k`` turns by ``t · inv_freq[k mod d/2]``
    and the two members of a pair use different frequencies. Reproduced exactly, since the released
    weights were trained with it.
    """
    positions = torch.arange(x.size(-2), device=x.device, dtype=inv_freq.dtype)
    angles = torch.outer(positions, inv_freq).repeat(1, 2)  # (L, d): dimension k uses inv_freq[k mod d/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    partner = torch.stack([-odd, even], dim=-1).flatten(-2)  # (2j, 2j+1) → (−x[2j+1], x[2j])
    return x * cos + partner * sin


class ProBridgeBlock(nn.Module):
    """``MLPResNetBlock_Pro``: separate self / adapter / task keys and values, RoPE, a gated task stream."""

    def __init__(self, width: int, heads: int = 8) -> None:
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(
                f"head.heads={heads}: the Pro block's width {width} (the backbone's) must split into {heads} "
                "heads of even size"
            )
        self.heads = heads
        head_dim = width // heads
        self.ffn = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU())
        self.q_proj = nn.Linear(width, width)
        self.k_self = nn.Linear(width, width)
        self.v_self = nn.Linear(width, width)
        self.k_adapter = nn.Linear(width, width)
        self.v_adapter = nn.Linear(width, width)
        self.k_task = nn.Linear(width, width)
        self.v_task = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)
        self.gating_factor = nn.Parameter(torch.zeros(1))
        self.film_gen = nn.Sequential(nn.Linear(width, 2 * width))  # in the checkpoints, unused (frozen)
        self.film_gen.requires_grad_(False)
        inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        task: torch.Tensor,
        task_mask: torch.Tensor,
        adapter: torch.Tensor,
        proprio: torch.Tensor,
    ) -> torch.Tensor:
        """x ``(B, C, D)``; task ``(B, T, D)`` with mask ``(B, T)``; adapter ``(B, Q, D)``; proprio
        ``(B, 1, D)``."""
        adapter = torch.cat([adapter, proprio], dim=1)
        rotate = self._rotate
        keys = torch.cat(
            [
                rotate(self.k_self(x)),
                rotate(self.k_adapter(adapter)),
                torch.tanh(self.gating_factor) * rotate(self.k_task(task)),  # = the gate on the task logits
            ],
            dim=2,
        )
        values = torch.cat(
            [
                split_into_heads(self.v_self(x), self.heads),
                split_into_heads(self.v_adapter(adapter), self.heads),
                split_into_heads(self.v_task(task), self.heads),
            ],
            dim=2,
        )
        real = torch.cat(
            [task_mask.new_ones(x.shape[:2]), task_mask.new_ones(adapter.shape[:2]), task_mask], 1
        )
        attended = F.scaled_dot_product_attention(
            rotate(self.q_proj(x)), keys, values, attn_mask=real[:, None, None, :]
        )
        return self.ffn(self.o_proj(attended.transpose(1, 2).flatten(2)) + x)

    def _rotate(self, tokens: torch.Tensor) -> torch.Tensor:
        return official_rotary(split_into_heads(tokens, self.heads), self.inv_freq)


class ProActionPolicy(nn.Module):
    """``MLPResNet`` with Pro blocks: stem, a block per LM layer (block ``i`` reads layer ``i + 1``), output.

    Args:
        width: the backbone's hidden size.
        num_layers: the language model's layer count (one block per layer; VLA-Adapter: 24).
        action_dim: action size; the stem's input is ``action_dim · width`` wide, as in the official head.
        heads: attention heads per block (VLA-Adapter: 8, i.e. 112-wide heads at 896).
        gradient_checkpointing: recompute each block's activations in the backward pass.
    """

    def __init__(
        self,
        width: int,
        num_layers: int,
        action_dim: int,
        heads: int = 8,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.input_dim = action_dim * width
        self.head_dim = width // heads
        self.layer_norm1 = nn.LayerNorm(self.input_dim)
        self.fc1 = nn.Linear(self.input_dim, width)
        self.mlp_resnet_blocks = nn.ModuleList(ProBridgeBlock(width, heads) for _ in range(num_layers))
        self.layer_norm2 = nn.LayerNorm(width)
        self.fc2 = nn.Linear(width, action_dim)

    def forward(
        self,
        rows: torch.Tensor,
        task_layers: tuple[torch.Tensor, ...],
        task_mask: torch.Tensor,
        adapter_layers: tuple[torch.Tensor, ...],
        proprio: torch.Tensor,
    ) -> torch.Tensor:
        """rows ``(B, chunk, action_dim · width)``; ``task_layers`` / ``adapter_layers``: ``num_layers + 1``
        hidden states each, embedding output first. Returns ``(B, chunk, action_dim)``."""
        if len(task_layers) != len(self.mlp_resnet_blocks) + 1 or len(adapter_layers) != len(task_layers):
            raise ValueError(
                f"the Pro policy has {len(self.mlp_resnet_blocks)} blocks and needs "
                f"{len(self.mlp_resnet_blocks) + 1} hidden states per source, got {len(task_layers)} task "
                f"and {len(adapter_layers)} adapter"
            )
        x = F.relu(self.fc1(self.layer_norm1(rows)))
        for index, block in enumerate(self.mlp_resnet_blocks):
            x = run_block(
                block,
                x,
                task_layers[index + 1],
                task_mask,
                adapter_layers[index + 1],
                proprio,
                recompute=self.gradient_checkpointing,
            )
        return self.fc2(self.layer_norm2(x))

    def optimizer_rules(self) -> OptimizerRules:
        """All action modality, the output layer on AdamW (Table A1); per-head layouts of the projections."""
        return OptimizerRules(
            modality_rules=[ModalityRule(r"^", "action")],
            adamw_patterns=[r"^fc2\."],
            per_head_rules=[
                PerHeadRule(
                    r"^mlp_resnet_blocks\.\d+\.(q_proj|k_self|v_self|k_adapter|v_adapter|k_task|v_task)\.weight$",
                    self.head_dim,
                    0,
                ),
                PerHeadRule(r"^mlp_resnet_blocks\.\d+\.o_proj\.weight$", self.head_dim, 1),
            ],
        )
