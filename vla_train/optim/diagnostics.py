"""Gradient diagnostics of §4: effective rank (eq. 4) and signal-to-noise ratio (eq. 5), per module.

These are the measurements behind the paper's diagnosis (Fig. 1a: the action module's gradient has
the lowest erank; Fig. 2a / 7: RLVR gradients have low SNR), so a run logs them to show whether a
new model or task has the spectral structure Pion is designed for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import torch

#: how many parts one micro-batch is split into for the SNR's gradient samples
DIAGNOSTIC_CHUNKS = 4
#: the SVDs per module behind one logged effective rank (the first matrices in order), to bound cost
DIAGNOSTIC_MATRICES_PER_MODULE = 16

NamedGradients = list[tuple[str, torch.Tensor]]


def effective_rank(matrix: torch.Tensor) -> float:
    """``exp(H(p))`` with ``p_i = σ_i / Σ_j σ_j`` (eq. 4, Roy & Vetterli 2007).

    N-D tensors are flattened to ``(size(0), rest)`` as the optimizers do. A zero matrix has no
    spectrum to spread and returns 0.
    """
    if matrix.ndim < 2:
        raise ValueError(f"effective_rank needs a matrix, got shape {tuple(matrix.shape)}")
    singular_values = torch.linalg.svdvals(matrix.detach().reshape(matrix.size(0), -1).double())
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    p = singular_values / total
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum()
    return float(torch.exp(entropy))


def gradient_snr(samples: torch.Tensor) -> float:
    """``‖E[G]‖² / E‖G − E[G]‖²`` over the first dimension of ``samples`` (eq. 5).

    Args:
        samples: ``(k, ...)`` — ``k ≥ 2`` gradients of one weight, e.g. from ``k`` micro-batches.
    """
    if samples.ndim < 1 or samples.size(0) < 2:
        raise ValueError(
            f"gradient_snr needs at least 2 gradient samples along dim 0, got shape {tuple(samples.shape)}"
        )
    flat = samples.detach().reshape(samples.size(0), -1).double()
    mean = flat.mean(dim=0)
    noise = (flat - mean).pow(2).sum(dim=1).mean()
    signal = mean.pow(2).sum()
    return float(signal / noise) if noise > 0 else float("inf")


def module_effective_ranks(
    named_gradients: Iterable[tuple[str, torch.Tensor | None]],
    module_of: Mapping[str, str],
    max_matrices_per_module: int | None = None,
) -> dict[str, float]:
    """Average gradient erank per module (vision / language / action …), for logging.

    Args:
        named_gradients: ``(name, grad)`` pairs; 1-D and missing gradients are skipped.
        module_of: parameter name → module label (e.g. the assignment's modality); names missing from
            it are skipped.
        max_matrices_per_module: cap the SVDs per module (the first ones in order) to bound cost.

    Returns:
        ``{"vision": 37.2, ...}`` — modules without any 2-D gradient are absent.
    """
    values: dict[str, list[float]] = defaultdict(list)
    for name, grad in named_gradients:
        module = module_of.get(name)
        if grad is None or module is None or grad.ndim < 2:
            continue
        if max_matrices_per_module is not None and len(values[module]) >= max_matrices_per_module:
            continue
        values[module].append(effective_rank(grad))
    return {module: sum(v) / len(v) for module, v in values.items() if v}


class GradientSNRMeter:
    """Accumulates per-micro-batch gradients and reports per-module average SNR (eq. 5).

    Keeps a running sum of each gradient and of its squared norm, so memory is one extra copy of the
    observed gradients, whatever the number of micro-batches. The variance is the population one
    over the observed samples, as in eq. (5).
    """

    def __init__(self, module_of: Mapping[str, str]) -> None:
        self.module_of = dict(module_of)
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._sum: dict[str, torch.Tensor] = {}
        self._sum_sq_norm: dict[str, float] = defaultdict(float)

    def observe(self, named_gradients: Iterable[tuple[str, torch.Tensor | None]]) -> None:
        """Add one micro-batch's gradients (pass each micro-batch's own gradient, not the running sum)."""
        for name, grad in named_gradients:
            if grad is None or name not in self.module_of:
                continue
            flat = grad.detach().reshape(-1).double()
            if name in self._sum:
                self._sum[name].add_(flat)
            else:
                self._sum[name] = flat.clone()
            self._sum_sq_norm[name] += float(flat.pow(2).sum())
        self.count += 1

    def compute(self) -> dict[str, float]:
        """``{"action": snr, ...}`` averaged over each module's parameters; needs ≥ 2 observations."""
        if self.count < 2:
            raise RuntimeError(f"GradientSNRMeter needs at least 2 micro-batches, observed {self.count}")
        values: dict[str, list[float]] = defaultdict(list)
        for name, total in self._sum.items():
            mean_sq_norm = float(total.pow(2).sum()) / self.count**2
            mean_of_sq_norms = self._sum_sq_norm[name] / self.count
            noise = mean_of_sq_norms - mean_sq_norm  # E‖G‖² − ‖E G‖² = E‖G − E G‖²
            if noise > 1e-12 * mean_of_sq_norms:  # identical samples: SNR undefined, skip
                values[self.module_of[name]].append(mean_sq_norm / noise)
        return {module: sum(v) / len(v) for module, v in values.items() if v}


def chunked_gradient_diagnostics(
    chunk_gradients: Iterable[NamedGradients],
    module_of: Mapping[str, str],
    max_matrices_per_module: int | None = DIAGNOSTIC_MATRICES_PER_MODULE,
) -> dict[str, float]:
    """``grad_erank/<module>`` of the summed gradient and ``grad_snr/<module>`` across the samples.

    The one measurement behind every trainer's diagnostics (VLA training and RLVR log the same keys):
    ``chunk_gradients`` yields each part of one batch's own gradients, and SNR needs at least two parts.
    """
    meter = GradientSNRMeter(module_of)
    totals: dict[str, torch.Tensor] = {}
    for gradients in chunk_gradients:
        meter.observe(gradients)
        for name, grad in gradients:
            totals[name] = totals[name] + grad if name in totals else grad.clone()
    ranks = module_effective_ranks(totals.items(), module_of, max_matrices_per_module)
    result = {f"grad_erank/{module}": value for module, value in ranks.items()}
    if meter.count >= 2:
        result.update({f"grad_snr/{module}": value for module, value in meter.compute().items()})
    return result
