"""Per-rank spectral optimizer step time at 1, 2 and 4 processes (gloo, one thread each), as ratios.

Each rank filters only the matrices it owns (``vla_train.optim.spectral``), so the step should shrink
with the process count: under DDP (whole matrices on every rank) and under FSDP2 (``--layout fsdp``:
rows sharded, each matrix assembled on its owner). The matrices are VLA-Adapter's: the hidden matrices
of the first Qwen2.5-0.5B decoder layers and a VLA-Adapter-sized action head (the shapes of
``bench_optim.py``), stepped by Pion with fixed gradients. Two clocks per step: the wall time (what a
GPU job would see, when each rank has its own core) and the busiest rank's CPU time (its own work,
meaningful also when the ranks share fewer cores than there are of them). Only ratios measured in one
run mean anything on a shared machine.

    python scripts/bench_distributed_optim.py                  # 1, 2, 4 processes, 2 + 2 layers
    python scripts/bench_distributed_optim.py --layout fsdp    # the same with sharded parameters
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_optim import action_head_specs, language_model_specs, make_parameters
from transformers import Qwen2Config

from policies.backbones.architectures import QWEN25_05B
from vla_train.optim import Pion


def rank_main(out: Path, layers: int, steps: int, layout: str) -> None:
    """One torchrun rank: time ``steps`` Pion steps (after one warm-up); rank 0 writes the median wall
    time and the busiest rank's median CPU time."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    config = Qwen2Config(**QWEN25_05B)
    specs = language_model_specs(config, layers) + action_head_specs(config.hidden_size, layers)
    params = make_parameters(specs, torch.device("cpu"))
    if layout == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
        params = [torch.nn.Parameter(distribute_tensor(p.detach(), mesh, [Shard(0)])) for p in params]
        for param in params:
            param.grad = distribute_tensor(
                torch.randn(param.shape, generator=torch.Generator()), mesh, [Shard(0)]
            )
    optimizer = Pion(params, lr=1e-4, compute_dtype="float32")
    wall, cpu = [], []
    for step in range(steps + 1):
        torch.distributed.barrier()
        start, start_cpu = time.perf_counter(), time.thread_time()
        optimizer.step()
        spent = time.thread_time() - start_cpu
        torch.distributed.barrier()
        if step:  # the first step allocates the momentum buffers
            wall.append(time.perf_counter() - start)
            cpu.append(spent)
    busiest = torch.tensor(statistics.median(cpu))
    torch.distributed.all_reduce(busiest, op=torch.distributed.ReduceOp.MAX)
    if torch.distributed.get_rank() == 0:
        result = {"seconds": statistics.median(wall), "cpu_seconds": busiest.item(), "matrices": len(params)}
        (out / "result.json").write_text(json.dumps(result))
    torch.distributed.barrier()  # every rank past its last collective before any closes its sockets
    torch.distributed.destroy_process_group()
    # Leave without the interpreter's teardown: with 4 processes on 2 cores, gloo's threads aborted it
    # ("terminate called without an active exception", SIGABRT) in 1 run of ~5-15 after every result
    # was written; 0 in 35 runs since. (Trainer processes have not shown it.)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(processes: int, layers: int, steps: int, layout: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(free_port()), __file__, "--rank-main", scratch,
            "--layers", str(layers), "--steps", str(steps), "--layout", layout,
        ]  # fmt: skip
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=3600)
        return json.loads((Path(scratch) / "result.json").read_text())


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--layers", type=int, default=2, help="decoder layers and action-head blocks")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--layout", choices=["ddp", "fsdp"], default="ddp", help="whole or sharded parameters"
    )
    parser.add_argument("--rank-main", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_main is not None:
        rank_main(args.rank_main, args.layers, args.steps, args.layout)
        return {}
    results = {n: measure(n, args.layers, args.steps, args.layout) for n in args.processes}
    base = results[min(results)]
    print(f"Pion step on {args.layers} + {args.layers} VLA-Adapter layers, {args.layout} layout, gloo, one "
          f"thread per process ({os.cpu_count()} cores here)")  # fmt: skip
    ratios = {}
    for n, result in results.items():
        ratios[n] = {
            "wall": result["seconds"] / base["seconds"],
            "cpu": result["cpu_seconds"] / base["cpu_seconds"],
        }
        print(
            f"  {n} process{'es' if n > 1 else '  '}: wall {result['seconds'] * 1000:7.0f} ms "
            f"({ratios[n]['wall']:.2f}×), busiest rank's CPU {result['cpu_seconds'] * 1000:7.0f} ms "
            f"({ratios[n]['cpu']:.2f}×)"
        )
    return ratios


if __name__ == "__main__":
    main()
