"""The policy language model of an RLVR run: a hub checkpoint (Qwen3-1.7B, -4B), or a tiny Qwen3 with
random weights and a character tokenizer for runs without a hub (tests, this machine)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

#: the tiny tokenizer's special tokens, then one token per character of its alphabet
PAD, EOS = "<pad>", "<eos>"


def character_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """One token per character (and ``<pad>``, ``<eos>``): a vocabulary small enough that a random tiny
    model writes the right digits now and then, which is what lets RL start."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if len(set(alphabet)) != len(alphabet) or not alphabet:
        raise ValueError(f"model.tiny.alphabet={alphabet!r}: must be distinct characters, at least one")
    vocabulary = {PAD: 0, EOS: 1, **{character: i + 2 for i, character in enumerate(alphabet)}}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token=PAD))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS)


def load_policy_model(
    name_or_path: str | None, dtype: str = "float32", tiny: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)``: from the hub id or local directory ``name_or_path``, or, with ``tiny``
    (Qwen3Config fields plus ``alphabet``), a random tiny Qwen3 that needs no download."""
    if tiny is not None:
        options = dict(tiny)
        tokenizer = character_tokenizer(options.pop("alphabet", "0123456789+=# \n"))
        config = Qwen3Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            **options,
        )
        return Qwen3ForCausalLM(config).to(getattr(torch, dtype)), tokenizer
    if not name_or_path:
        raise ValueError("model.name_or_path: a hub id or local directory is needed (or model.tiny)")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype))
    if tokenizer.pad_token is None:  # TRL pads completions; Qwen's tokenizers have one already
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
