"""A fixed gradient sequence through every spectral optimizer, in one process or under torchrun.

``python distributed_ns_run.py OUT [ddp|fsdp]`` (under ``torchrun --nproc_per_node N``) writes each
rank's final weights to ``OUT/rank<r>.safetensors`` — with ``fsdp`` the parameters and gradients are
DTensors sharded along dim 0 as FSDP2 holds them, gathered whole at the end — and the spectral work the
rank did (``work.<optimizer>``: Σ heads·min(m,n)²·max(m,n) of what it filtered); :func:`final_weights`
is the same run in the calling process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from vla_train.optim import LowPassMuon, LowRankMuon, Muon, Pion
from vla_train.optim.spectral import SpectralOptimizer, spectral_cost

#: matrices of several shapes and counts, so buckets split unevenly across ranks; one conv kernel; one
#: with fewer rows than there are ranks (FSDP2 leaves some ranks an empty shard of it)
SHAPES = [(64, 32), (64, 32), (64, 32), (32, 96), (48, 48), (16, 8, 3, 3), (96, 32), (24, 24), (3, 40)]
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


def final_weights(name: str, steps: int = 3, mesh=None) -> dict[str, torch.Tensor]:
    """One thread, as each torchrun rank runs: LAPACK's SVD (LRMuon) may round differently with more.
    ``mesh``: shard parameters and gradients along dim 0 on it (FSDP2's layout)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _final_weights(name, steps, mesh)
    finally:
        torch.set_num_threads(threads)


def _final_weights(name: str, steps: int, mesh) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import Shard, distribute_tensor

    def placed(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if mesh is None else distribute_tensor(tensor, mesh, [Shard(0)])

    torch.manual_seed(0)
    params = [torch.nn.Parameter(placed(torch.randn(shape))) for shape in SHAPES]
    optimizer = OPTIMIZERS[name](params)
    for step in range(steps):
        generator = torch.Generator().manual_seed(100 + step)  # the same gradients on every rank (DDP)
        for param in params:
            param.grad = placed(torch.randn(param.shape, generator=generator))
        optimizer.step()
    whole = [param.full_tensor() if mesh is not None else param for param in params]
    return {f"{name}.{index}": param.detach().clone() for index, param in enumerate(whole)}


def count_spectral_work() -> dict[str, int]:
    """Wrap the optimizers' filtering to add up the Newton–Schulz work this process does."""
    work = {"total": 0}
    filter_bucket = SpectralOptimizer._filter

    def counting(group, spectral_map, key, members, layout):
        work["total"] += sum(spectral_cost(blocks) for _, blocks in members)
        return filter_bucket(group, spectral_map, key, members, layout)

    SpectralOptimizer._filter = staticmethod(counting)
    return work


def main(out: Path, mode: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.distributed.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),)) if mode == "fsdp" else None
    work = count_spectral_work()
    weights = {}
    for name in OPTIMIZERS:
        before = work["total"]
        weights.update(final_weights(name, mesh=mesh))
        weights[f"work.{name}"] = torch.tensor(work["total"] - before)
    save_file(weights, str(out / f"rank{torch.distributed.get_rank()}.safetensors"))
    torch.distributed.barrier()  # every rank past its last collective before any closes its sockets
    torch.distributed.destroy_process_group()
    # Leave without the interpreter's teardown: with 4 processes on 2 cores, gloo's threads aborted it
    # ("terminate called without an active exception", SIGABRT) in 1 run of ~5-15 after every result
    # was written; 0 in 35 runs since. (Trainer processes have not shown it.)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ddp")
