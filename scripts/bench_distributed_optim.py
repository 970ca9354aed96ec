"""Per-rank spectral optimizer step time at 1, 2 and 4 processes (gloo, one thread each), as ratios.

Under DDP each rank filters only the matrices it owns (``vla_train.optim.spectral``), so the step
should shrink with the process count. The matrices are VLA-Adapter's: the hidden matrices of the
first Qwen2.5-0.5B decoder layers and a VLA-Adapter-sized action head (the shapes of
``bench_optim.py``), stepped by Pion with fixed gradients. Only ratios measured in one run mean
anything on a shared machine; with fewer cores than processes the ranks compete for them.

    python scripts/bench_distributed_optim.py                  # 1, 2, 4 processes, 2 + 2 layers
    python scripts/bench_distributed_optim.py --processes 1 2  # a 2-core machine's honest comparison
"""

from __future__ import annotations

import argparse
import json
import os
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


def rank_main(out: Path, layers: int, steps: int) -> None:
    """One torchrun rank: time ``steps`` Pion steps (after one warm-up), write rank 0's median."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    config = Qwen2Config(**QWEN25_05B)
    specs = language_model_specs(config, layers) + action_head_specs(config.hidden_size, layers)
    params = make_parameters(specs, torch.device("cpu"))
    optimizer = Pion(params, lr=1e-4, compute_dtype="float32")
    timings = []
    for step in range(steps + 1):
        torch.distributed.barrier()
        start = time.perf_counter()
        optimizer.step()
        torch.distributed.barrier()
        if step:  # the first step allocates the momentum buffers
            timings.append(time.perf_counter() - start)
    if torch.distributed.get_rank() == 0:
        result = {"seconds": statistics.median(timings), "matrices": len(params)}
        (out / "result.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def measure(processes: int, layers: int, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(29600 + processes), __file__, "--rank-main", scratch,
            "--layers", str(layers), "--steps", str(steps),
        ]  # fmt: skip
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=3600)
        return json.loads((Path(scratch) / "result.json").read_text())


def main(argv: list[str] | None = None) -> dict[int, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--layers", type=int, default=2, help="decoder layers and action-head blocks")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank-main", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_main is not None:
        rank_main(args.rank_main, args.layers, args.steps)
        return {}
    seconds = {n: measure(n, args.layers, args.steps)["seconds"] for n in args.processes}
    base = seconds[min(seconds)]
    print(f"Pion step on {args.layers} + {args.layers} VLA-Adapter layers, gloo, one thread per process "
          f"({os.cpu_count()} cores here)")  # fmt: skip
    for n, value in seconds.items():
        print(f"  {n} process{'es' if n > 1 else '  '}: {value * 1000:8.0f} ms per step, {value / base:.2f}×")
    return {n: value / base for n, value in seconds.items()}


if __name__ == "__main__":
    main()
