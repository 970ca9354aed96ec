"""Gradient SNR (eq. 5) and effective rank (eq. 4) during RLVR, logged as VLA training logs them.

The paper's RLVR diagnosis (Fig. 2a, Fig. 7) is that policy-gradient updates have a far lower SNR than
supervised ones. :class:`GradientDiagnostics` measures it inside TRL's loop: on the first micro-batch of
every ``diagnostics_every``-th optimizer step, the batch's completions are split into
:data:`~vla_train.optim.DIAGNOSTIC_CHUNKS` parts, each part's own policy-loss gradient is taken with
``torch.autograd.grad`` (so the accumulated ``.grad`` of the real step is untouched), and
:func:`~vla_train.optim.chunked_gradient_diagnostics` turns them into ``grad_snr/<module>`` and
``grad_erank/<module>`` — the keys VLA training logs, so ``scripts/report.py`` plots both alike.

Modules of a decoder LM are its parts (:func:`decoder_module`): attention, MLP, embeddings, norms.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from trl.trainer.utils import split_tensor_dict

from vla_train.optim import DIAGNOSTIC_CHUNKS, chunked_gradient_diagnostics

_MODULES = (
    ("attention", re.compile(r"\.self_attn\.(?!.*norm)")),
    ("mlp", re.compile(r"\.mlp\.")),
    ("embeddings", re.compile(r"embed_tokens|^lm_head\.")),
)


def decoder_module(name: str) -> str:
    """``attention`` / ``mlp`` / ``embeddings`` / ``norms`` for a Hugging Face decoder's parameter."""
    for module, pattern in _MODULES:
        if pattern.search(name):
            return module
    return "norms"


class GradientDiagnostics:
    """Mixin for TRL's ``GRPOTrainer`` (and subclasses): logs per-module gradient SNR and effective rank
    every ``diagnostics_every`` optimizer steps (0: never). Training is the same with or without it."""

    def __init__(self, *args: Any, diagnostics_every: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.diagnostics_every = diagnostics_every

    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if self._diagnostics_due(model):
            for key, value in self.gradient_diagnostics(model, inputs).items():
                self._metrics["train"][key].append(value)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _diagnostics_due(self, model: torch.nn.Module) -> bool:
        every = self.diagnostics_every
        first_micro_batch = self._step % self.current_gradient_accumulation_steps == 0
        return bool(every) and model.training and first_micro_batch and self.state.global_step % every == 0

    def gradient_diagnostics(self, model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, float]:
        """``grad_snr/<module>`` across parts of this micro-batch's completions, ``grad_erank/<module>`` of
        their sum; ``{}`` for a micro-batch of one completion, or one whose advantages are all zero (every
        group's rewards equal: the policy gradient is zero)."""
        parts = min(DIAGNOSTIC_CHUNKS, inputs["completion_ids"].size(0))
        if parts < 2:  # the same on every process: micro-batches are of one size
            return {}
        unwrapped = self.accelerator.unwrap_model(model)
        named = [(n, p) for n, p in unwrapped.named_parameters() if p.requires_grad]
        module_of = {name: decoder_module(name) for name, _ in named}
        logged = {key: len(values) for key, values in self._metrics["train"].items()}

        def part_gradients():
            with self.accelerator.no_sync(model):
                for part in split_tensor_dict(inputs, parts):
                    loss = self._compute_loss(model, part)
                    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                    pairs = zip((name for name, _ in named), grads, strict=True)
                    yield [(name, grad) for name, grad in pairs if grad is not None]

        # every process runs its parts, whatever its rewards: the parts' losses gather across processes
        try:
            measured = chunked_gradient_diagnostics(part_gradients(), module_of)
            return measured if inputs["advantages"].any() else {}  # no completion preferred: a zero gradient
        finally:  # the parts' own clip ratios, KL and entropies are not the step's: drop them
            for key in list(self._metrics["train"]):
                del self._metrics["train"][key][logged.get(key, 0) :]
                if not self._metrics["train"][key]:
                    del self._metrics["train"][key]
