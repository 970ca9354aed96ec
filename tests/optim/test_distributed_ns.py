"""Under DDP each rank filters only the matrices it owns and the results are shared: the weights equal
the single-process ones on every rank, and the spectral work splits about evenly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_ns_run import OPTIMIZERS, SHAPES, final_weights
from safetensors.torch import load_file

from vla_train.optim.spectral import assign_owners, spectral_cost

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_ranks_share_the_spectral_work_and_end_with_the_single_process_weights(
    processes: int, tmp_path: Path
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
         "--master_port", str(29500 + processes), str(TESTS / "distributed_ns_run.py"), str(tmp_path)],
        check=True, env=env, timeout=600, capture_output=True,
    )  # fmt: skip
    single = {}
    for name in OPTIMIZERS:
        single.update(final_weights(name))
    for rank in range(processes):
        ranked = load_file(tmp_path / f"rank{rank}.safetensors")
        assert ranked.keys() == single.keys()
        for key, weight in single.items():
            assert torch.equal(ranked[key], weight), f"rank {rank}: {key}"


@pytest.mark.parametrize("world", [2, 4])
def test_owners_balance_the_newton_schulz_work_not_the_tensor_count(world: int) -> None:
    blocks = [torch.empty(1, *(shape[0], int(torch.tensor(shape[1:]).prod()))) for shape in SHAPES]
    blocks += [torch.empty(8, 16, 32)]  # a per-head matrix: 8 heads of 16 × 32
    owners = assign_owners(blocks, world)
    loads = [
        sum(spectral_cost(b) for b, o in zip(blocks, owners, strict=True) if o == r) for r in range(world)
    ]
    total, largest = sum(loads), max(spectral_cost(b) for b in blocks)
    assert sorted(set(owners)) == list(range(world))  # every rank works
    assert max(loads) <= total / world + largest  # greedy largest-first: within one matrix of even
    assert owners == assign_owners(blocks, world)  # the same on every rank
