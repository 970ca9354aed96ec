"""The paper's RLVR optimizers on a causal language model (Table A2): every hidden matrix of the decoder
on one algorithm — AdamW, Muon, Pion, LPMuon, in per-head mode or not — and the embeddings, LM head,
norms and biases on AdamW, as the official verl runs exclude ``embed`` and ``lm_head``.

Per-head mode splits attention as the official ``PerHeadPionAdamW`` does for Qwen3's grouped-query
layout: ``q/k/v_proj`` into heads of ``head_dim`` rows, ``o_proj`` into heads of ``head_dim`` columns
(16 Q and 8 KV heads of 128 for Qwen3-1.7B), read from the model's config; the MLP's matrices stay whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from policies.base import decoder_per_head_rules
from vla_train.optim import (
    ModalityOptimizer,
    ModalityOptimizerOptions,
    ModalityRule,
    build_modality_optimizer,
)

#: where a Hugging Face causal LM keeps its decoder layers, embeddings and output layer
LAYERS = r"model\.layers"
#: one pattern: with tied embeddings (Qwen3-1.7B) the LM head is the embedding and has no name of its own
ADAMW_PATTERNS = (r"embed_tokens|^lm_head\.",)


def head_dim(config: Any) -> int:
    """The attention head size of a transformers config (Qwen3 states it; Llama-style ones imply it)."""
    explicit = getattr(config, "head_dim", None)
    return int(explicit) if explicit else int(config.hidden_size // config.num_attention_heads)


def build_rlvr_optimizer(
    model: torch.nn.Module, options: ModalityOptimizerOptions, **overrides: Any
) -> ModalityOptimizer:
    """``options.language`` for every decoder matrix (``per_head_modalities=[language]`` for per-head
    mode); everything else on AdamW. Every trainable parameter is accounted for, or the error names it."""
    options = dataclasses.replace(options, **overrides)
    return build_modality_optimizer(
        model,
        [ModalityRule(r".", "language")],
        options,
        adamw_patterns=ADAMW_PATTERNS,
        per_head_rules=decoder_per_head_rules(LAYERS, head_dim(model.config)),
    )
