"""Under DDP each rank filters only the matrices it owns and the results are shared: the weights equal
the single-process ones on every rank, and the spectral work splits about evenly."""

from __future__ import annotations

import os
import socket
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
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("processes", [2, 4])
def test_ranks_share_the_spectral_work_and_end_with_the_single_process_weights(
    mode: str, processes: int, tmp_path: Path
) -> None:
    """DDP: whole matrices on every rank; FSDP2: rows sharded (DTensor ``Shard(0)``), assembled on each
    matrix's owner. Either way every rank ends with the single-process weights, bit for bit, and each
    rank's Newton–Schulz work is within one matrix of an even split."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    with socket.socket() as probe:  # a free port: fixed ones collide with other runs on the machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
         "--master_port", str(port), str(TESTS / "distributed_ns_run.py"), str(tmp_path), mode],
        env=env, timeout=600, capture_output=True, text=True,
    )  # fmt: skip
    errors = "\n".join(line for line in result.stderr.splitlines() if "Gloo" not in line)
    assert result.returncode == 0, errors[-4000:]
    single = {}
    for name in OPTIMIZERS:
        single.update(final_weights(name))
    ranked = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(processes)]
    for rank, weights in enumerate(ranked):
        assert weights.keys() - {f"work.{name}" for name in OPTIMIZERS} == single.keys()
        for key, weight in single.items():
            assert torch.equal(weights[key], weight), f"{mode}, rank {rank}: {key}"
    largest = max(spectral_cost(torch.empty(1, s[0], int(torch.tensor(s[1:]).prod()))) for s in SHAPES)
    for name in OPTIMIZERS:
        work = [int(weights[f"work.{name}"]) for weights in ranked]
        assert all(w > 0 for w in work) and max(work) <= sum(work) / processes + largest, (name, work)


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
