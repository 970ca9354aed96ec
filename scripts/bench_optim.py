"""Time one optimizer step on the weight shapes of a real VLA and print ratios to Muon.

Shapes: decoder layers of Qwen2.5-0.5B (VLA-Adapter's language model, built on the meta device from
its published config, no weights) plus an action head of VLA-Adapter's size (a transformer at the
LLM's width). Every optimizer steps the same hidden matrices with the same random gradients; this
machine is noisy, so each timing is the median of several steps and only ratios measured in this one
run are reported.

    python scripts/bench_optim.py                 # CPU defaults, a couple of minutes
    python scripts/bench_optim.py --layers 24     # the whole model (GPU)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from transformers import Qwen2Config, Qwen2ForCausalLM

from policies.backbones.architectures import QWEN25_05B
from vla_train.optim import LowRankMuon, Muon, Pion
from vla_train.optim.spectral import resolve_compute_dtype

ACTION_HEAD_MLP_RATIO = 4


@dataclass
class WeightSpec:
    name: str
    shape: tuple[int, int]
    head_axis: int | None  # per-head split axis for attention projections, None for MLPs


def language_model_specs(config: Qwen2Config, layers: int) -> list[WeightSpec]:
    """2-D hidden weights of the first ``layers`` decoder layers (no embeddings, no LM head)."""
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    specs = []
    for name, param in model.model.layers.named_parameters():
        if param.ndim != 2 or int(name.split(".")[0]) >= layers:
            continue
        axis = (
            0 if any(k in name for k in ("q_proj", "k_proj", "v_proj")) else 1 if "o_proj" in name else None
        )
        specs.append(WeightSpec(f"language.{name}", tuple(param.shape), axis))
    return specs


def action_head_specs(width: int, layers: int) -> list[WeightSpec]:
    """A transformer action head at the LLM width: q/k/v/o and a 4× MLP per block."""
    specs = []
    for i in range(layers):
        for proj in ("q", "k", "v"):
            specs.append(WeightSpec(f"action.{i}.{proj}_proj", (width, width), 0))
        specs.append(WeightSpec(f"action.{i}.o_proj", (width, width), 1))
        specs.append(WeightSpec(f"action.{i}.fc1", (ACTION_HEAD_MLP_RATIO * width, width), None))
        specs.append(WeightSpec(f"action.{i}.fc2", (width, ACTION_HEAD_MLP_RATIO * width), None))
    return specs


def make_parameters(specs: list[WeightSpec], device: torch.device) -> list[torch.nn.Parameter]:
    params = []
    generator = torch.Generator(device="cpu").manual_seed(0)
    for spec in specs:
        param = torch.nn.Parameter(torch.randn(spec.shape, generator=generator).mul_(0.02).to(device))
        param.grad = torch.randn(spec.shape, generator=generator).to(device)
        params.append(param)
    return params


def time_interleaved(builders: dict[str, Callable], params, device, repeats: int) -> dict[str, float]:
    """Median step time per optimizer, measured in interleaved rounds so machine drift hits all alike.

    All optimizers share the same parameters and gradients (each keeps its own state), so a round
    compares them on identical inputs.
    """
    optimizers = {name: build(params) for name, build in builders.items()}
    for optimizer in optimizers.values():
        optimizer.step()  # warm-up: allocates state
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for round_index in range(repeats):
        for name, optimizer in optimizers.items():
            _synchronize(device)
            start = time.perf_counter()
            optimizer.step()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
        print(f"  round {round_index + 1}/{repeats} done", flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best large-matmul rate over a few square sizes: this machine's practical peak for ``dtype``."""
    best = 0.0
    for size in (1024, 2048, 3072):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            a @ b
            _synchronize(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def newton_schulz_flops(specs: list[WeightSpec], steps: int = 5) -> float:
    """Matmul FLOPs of ``steps`` quintic steps on each matrix (Gram, Gram², poly·X on the short side)."""
    total = 0.0
    for spec in specs:
        short, long = sorted(spec.shape)
        total += steps * (4 * short * short * long + 2 * short**3)
    return total


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layers", type=int, default=2, help="decoder layers and action-head blocks to include"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per optimizer (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default=None, help="HF config id or path instead of Qwen2.5-0.5B's")
    parser.add_argument("--width-divisor", type=int, default=1, help="shrink every width (for smoke tests)")
    parser.add_argument("--skip-lrmuon", action="store_true", help="skip the SVD baselines")
    args = parser.parse_args()
    started = time.perf_counter()

    device = torch.device(args.device)
    if args.config:
        config = Qwen2Config.from_pretrained(args.config)
    else:
        shrink = args.width_divisor
        config = Qwen2Config(
            **QWEN25_05B
            | dict(
                hidden_size=QWEN25_05B["hidden_size"] // shrink,
                intermediate_size=QWEN25_05B["intermediate_size"] // shrink,
            )
        )
    head_dim = config.hidden_size // config.num_attention_heads
    specs = language_model_specs(config, args.layers) + action_head_specs(config.hidden_size, args.layers)
    head_specs = [s for s in specs if s.head_axis is not None]
    whole_specs = [s for s in specs if s.head_axis is None]
    count = sum(s.shape[0] * s.shape[1] for s in specs)
    print(
        f"device={device} threads={torch.get_num_threads()} layers={args.layers} "
        f"matrices={len(specs)} parameters={count / 1e6:.1f}M head_dim={head_dim} "
        f"NS compute dtype (auto)={resolve_compute_dtype('auto', device)}"
    )

    def per_head_groups(params, **options):
        """Attention projections per head (Alg. 3), MLP matrices whole."""
        by_axis: dict[int | None, list] = {0: [], 1: [], None: []}
        for spec, param in zip(specs, params, strict=True):
            by_axis[spec.head_axis].append(param)
        groups = [{"params": by_axis[None]}]
        for axis in (0, 1):
            groups.append({"params": by_axis[axis], "per_head": {"head_dim": head_dim, "axis": axis}})
        return groups

    candidates: dict[str, Callable] = {
        "AdamW (torch)": lambda ps: torch.optim.AdamW(ps, lr=1e-4),
        "Muon": lambda ps: Muon(ps, lr=1e-4),  # compute_dtype="auto", as every row below
        "Pion default (kp=2)": lambda ps: Pion(ps, lr=1e-4, kp=2),
        "Pion per-head (kp=2)": lambda ps: Pion(per_head_groups(ps), lr=1e-4, kp=2),
        "Muon fp32 (forced)": lambda ps: Muon(ps, lr=1e-4, compute_dtype="float32"),
        "Muon bf16 (forced)": lambda ps: Muon(ps, lr=1e-4, compute_dtype="bfloat16"),
        "torch.optim.Muon": lambda ps: torch.optim.Muon(ps, lr=1e-4, adjust_lr_fn="match_rms_adamw"),
    }
    if not args.skip_lrmuon:
        candidates["LRMuon k=16 (SVD)"] = lambda ps: LowRankMuon(ps, lr=1e-4, rank=16)
        candidates["LRMuon k=64 (SVD)"] = lambda ps: LowRankMuon(ps, lr=1e-4, rank=64)

    results = time_interleaved(candidates, make_parameters(specs, device), device, args.repeats)

    muon = results["Muon"]
    table = Table(title=f"one optimizer step, median of {args.repeats} interleaved rounds ({device})")
    table.add_column("optimizer")
    table.add_column("ms", justify="right")
    table.add_column("÷ Muon", justify="right")
    for name, seconds in results.items():
        table.add_row(name, f"{seconds * 1e3:.1f}", f"{seconds / muon:.3f}")
    Console(width=100).print(table)

    compute_dtype = resolve_compute_dtype("auto", device)
    peak = matmul_flops_per_second(device, compute_dtype)
    achieved = newton_schulz_flops(specs) / muon
    print(
        f"Newton–Schulz throughput in Muon's step: {achieved / 1e9:.1f} GFLOP/s = "
        f"{achieved / peak:.0%} of this machine's best large {compute_dtype} matmul "
        f"({peak / 1e9:.1f} GFLOP/s)"
    )
    print(f"Pion / Muon: {results['Pion default (kp=2)'] / muon:.3f}")
    per_head_ratio = results["Pion per-head (kp=2)"] / results["Pion default (kp=2)"]
    print(f"Pion per-head / Pion default: {per_head_ratio:.3f}")
    precision_ratio = results["Muon bf16 (forced)"] / results["Muon fp32 (forced)"]
    print(f"bf16 / fp32 Muon step on {device}: {precision_ratio:.2f}")
    if not args.skip_lrmuon:
        print(f"LRMuon k=16 / Muon: {results['LRMuon k=16 (SVD)'] / muon:.2f}")
    print(
        f"({len(head_specs)} attention projections, {len(whole_specs)} MLP matrices; "
        f"benchmark wall time {time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
