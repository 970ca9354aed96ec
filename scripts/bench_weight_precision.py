"""How much of one optimizer step survives in the weights' dtype: why trained weights stay in fp32.

A fine-tuning step moves a weight by ~lr (AdamW) or ~0.2·lr (Muon/Pion with the moonlight scale) —
1e-3 of a typical weight's size at lr 1e-4 — while bf16 resolves only 2^-8 of it: rounded to the
nearest bf16, most of the step is lost, and more of Muon's than of AdamW's. This prints, for one step
on a 896×896 matrix (Qwen2.5-0.5B's width, weights ~N(0, 0.02²)) with a random gradient, the fraction
of entries that changed and the update's RMS relative to the fp32 step, per optimizer, lr and dtype.

    python scripts/bench_weight_precision.py [--size 896] [--lrs 1e-4 2.5e-5]
"""

from __future__ import annotations

import argparse

import torch

from vla_train.optim import Muon

OPTIMIZERS = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
    "muon": lambda params, lr: Muon(params, lr=lr, weight_decay=0.01, compute_dtype="float32"),
}


def one_step(name: str, lr: float, dtype: torch.dtype, size: int) -> tuple[float, float]:
    """(fraction of entries changed, update RMS) of one step from a fixed weight and gradient."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(size, size, generator=generator) * 0.02
    weight = torch.nn.Parameter(start.to(dtype))
    weight.grad = torch.randn(size, size, generator=generator).to(dtype)
    before = weight.detach().float().clone()
    OPTIMIZERS[name]([weight], lr).step()
    delta = weight.detach().float() - before
    return float((delta != 0).float().mean()), float(delta.pow(2).mean().sqrt())


def main(argv: list[str] | None = None) -> dict[tuple[str, float], dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=896)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 2.5e-5])
    args = parser.parse_args(argv)
    results = {}
    print(f"one step on a {args.size}×{args.size} matrix: entries changed, update RMS ÷ the fp32 update")
    for name in OPTIMIZERS:
        for lr in args.lrs:
            changed32, rms32 = one_step(name, lr, torch.float32, args.size)
            changed16, rms16 = one_step(name, lr, torch.bfloat16, args.size)
            results[(name, lr)] = {
                "fp32_changed": changed32,
                "bf16_changed": changed16,
                "bf16_rms_ratio": rms16 / rms32,
            }
            print(
                f"  {name:<6} lr={lr:<8g} fp32: {changed32:6.1%} changed   "
                f"bf16: {changed16:6.1%} changed, RMS ×{rms16 / rms32:.2f}"
            )
    return results


if __name__ == "__main__":
    main()
