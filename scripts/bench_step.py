"""Time one training step (forward + backward + optimizer) of a full-size policy, random weights.

Builds the published architectures without downloading weights (as ``param_counts.py`` does), fp32
weights under bf16 autocast, as the trainer runs on a GPU, and reports the median
step time and the peak GPU memory. The ``_tiny`` backbones run anywhere (that is how it is tested).

    python scripts/bench_step.py --backbone prismatic_qwen25 --head l1 --batch 8     # VLA-Adapter, GPU
    python scripts/bench_step.py --backbone qwen3_vl --head flow --batch 8           # VLANeXt, GPU
    python scripts/bench_step.py --backbone pi05 --head pi05 --batch 8 --chunk 16    # π0.5 (DROID), GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from policies.vla_policy import VLAPolicy
from vla_train.options import build_policy, options


def build(backbone_name: str, head_name: str, chunk: int, device: torch.device) -> VLAPolicy:
    """The options as ``train.py`` builds them, with random weights and nothing downloaded."""
    with device:
        policy = build_policy(
            backbone_name, head_name, action_dim=7, state_dim=8, chunk_size=chunk, random_init=True
        )
    return policy  # fp32 weights, bf16 autocast on GPUs: as the trainer runs the full-size configs


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="prismatic_qwen25", choices=options("backbone"))
    parser.add_argument("--head", default="l1", choices=options("head"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    policy = build(args.backbone, args.head, args.chunk, device)
    size = policy.backbone.image_size
    batch = {
        "images": torch.rand(args.batch, args.cameras, 3, size, size, device=device),
        "instruction": ["put the black bowl on the plate"] * args.batch,
        "state": torch.randn(args.batch, 8, device=device),
        "actions": torch.randn(args.batch, args.chunk, 7, device=device),
        "action_is_pad": torch.zeros(args.batch, args.chunk, dtype=torch.bool, device=device),
    }
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    before = {name: p.detach().clone() for name, p in policy.named_parameters() if p.requires_grad}
    timings = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.steps + 1):  # the first step warms up kernels and allocations
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = policy(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    trained = {name: p for name, p in policy.named_parameters() if p.requires_grad}
    result = {
        # tensors the timed steps changed: a step that skipped backward or the optimizer would be cheap
        "changed_fraction": sum(not torch.equal(before[n], trained[n]) for n in before) / len(before),
        "parameters_m": sum(p.numel() for p in policy.parameters()) / 1e6,
        "step_ms": 1000 * statistics.median(timings[1:]),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else float("nan"),
    }
    print(
        f"{args.backbone} + {args.head}, batch {args.batch} × {args.cameras} cameras on {device}: "
        f"{result['parameters_m']:.0f} M parameters, {result['step_ms']:.0f} ms per step "
        f"(median of {args.steps}), peak memory {result['peak_gib']:.1f} GiB"
    )
    return result


if __name__ == "__main__":
    main()
