"""A fixed gradient sequence through every spectral optimizer, in one process or under torchrun.

``python distributed_ns_run.py OUT`` (under ``torchrun --nproc_per_node N``) writes each rank's final
weights to ``OUT/rank<r>.safetensors``; :func:`final_weights` is the same run in the calling process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from vla_train.optim import LowPassMuon, LowRankMuon, Muon, Pion

#: matrices of several shapes and counts, so buckets split unevenly across ranks; one conv kernel
SHAPES = [(64, 32), (64, 32), (64, 32), (32, 96), (48, 48), (16, 8, 3, 3), (96, 32), (24, 24)]
OPTIMIZERS = {
    "muon": lambda params: Muon(params, lr=0.02, weight_decay=0.01, compute_dtype="float32"),
    "pion": lambda params: Pion(params, lr=0.02, kp=2, compute_dtype="float32"),
    "pion_per_head": lambda params: Pion(
        [{"params": params[:3], "per_head": {"head_dim": 16, "axis": 0}}, {"params": params[3:]}],
        lr=0.02,
        compute_dtype="float32",
    ),
    "lpmuon": lambda params: LowPassMuon(params, lr=0.02, tau=0.5, compute_dtype="float32"),
    "lrmuon": lambda params: LowRankMuon(params, lr=0.02, rank=4),
}


def final_weights(name: str, steps: int = 3) -> dict[str, torch.Tensor]:
    """One thread, as each torchrun rank runs: LAPACK's SVD (LRMuon) may round differently with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _final_weights(name, steps)
    finally:
        torch.set_num_threads(threads)


def _final_weights(name: str, steps: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    optimizer = OPTIMIZERS[name](params)
    for step in range(steps):
        generator = torch.Generator().manual_seed(100 + step)  # the same gradients on every rank (DDP)
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()
    return {f"{name}.{index}": param.detach().clone() for index, param in enumerate(params)}


def main(out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    weights = {}
    for name in OPTIMIZERS:
        weights.update(final_weights(name))
    save_file(weights, str(out / f"rank{torch.distributed.get_rank()}.safetensors"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
