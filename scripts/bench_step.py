"""Time one training step of a full-size policy, random weights: forward + backward, then the step of
the configured modality-wise optimizer (``--optimizer``, default ``pion``), and the peak memory.

Builds the published architectures without downloading weights (as ``param_counts.py`` does), fp32
weights under bf16 autocast on GPUs, as the trainer runs, and reports the medians of both parts and
the peak GPU memory (on a CPU, the process's peak RSS). The ``_tiny`` backbones run anywhere (that is
how it is tested).

    python scripts/bench_step.py --backbone prismatic_qwen25 --head l1 --batch 8     # VLA-Adapter, GPU
    python scripts/bench_step.py --backbone qwen3_vl --head flow --batch 8           # VLANeXt, GPU
    python scripts/bench_step.py --backbone pi05 --head pi05 --batch 8 --chunk 16    # π0.5 (DROID), GPU
    python scripts/bench_step.py --backbone qwen3_vl --head flow head.gradient_checkpointing=true
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Sequence

import torch
from hydra.utils import instantiate

from policies.vla_policy import VLAPolicy
from vla_train.options import build_policy, option_node, options


def return_freed_memory_at_once() -> None:
    """glibc keeps freed blocks below its mmap threshold (which grows to 32 MiB as big blocks are freed)
    in the heap, so a CPU process's RSS holds the forward pass's freed activations long after; serving
    every block of 64 KiB or more by mmap returns it on free, and the peak RSS measures what the step
    really holds (as a GPU's allocator statistics do). No effect where glibc is not the allocator."""
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("c")
    if library is not None:
        mallopt = ctypes.CDLL(library).mallopt
        m_mmap_threshold = -3
        mallopt(m_mmap_threshold, 64 * 1024)


def build(
    backbone_name: str, head_name: str, chunk: int, device: torch.device, overrides: Sequence[str] = ()
) -> VLAPolicy:
    """The options as ``train.py`` builds them, with random weights and nothing downloaded."""
    with device:
        policy = build_policy(
            backbone_name,
            head_name,
            action_dim=7,
            state_dim=8,
            chunk_size=chunk,
            random_init=True,
            overrides=overrides,
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
    parser.add_argument("--optimizer", default="pion", choices=options("optimizer"))
    parser.add_argument(
        "--autocast", default="auto", choices=["auto", "bf16", "no"], help="auto: bf16 on GPUs, none on CPUs"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="option overrides, e.g. backbone.gradient_checkpointing=true head.gradient_checkpointing=true",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        return_freed_memory_at_once()
    torch.manual_seed(0)
    policy = build(args.backbone, args.head, args.chunk, device, args.overrides)
    size = policy.backbone.image_size
    batch = {
        "images": torch.rand(args.batch, args.cameras, 3, size, size, device=device),
        "instruction": ["put the black bowl on the plate"] * args.batch,
        "state": torch.randn(args.batch, 8, device=device),
        "actions": torch.randn(args.batch, args.chunk, 7, device=device),
        "action_is_pad": torch.zeros(args.batch, args.chunk, dtype=torch.bool, device=device),
    }
    rules = policy.optimizer_rules()
    optimizer = instantiate(option_node("optimizer", args.optimizer))(
        policy, rules.modality_rules, adamw_patterns=rules.adamw_patterns, per_head_rules=rules.per_head_rules
    )
    before = checksums(policy)
    autocast = args.autocast == "bf16" or (args.autocast == "auto" and device.type == "cuda")
    forward_backward, optimizer_step = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.steps + 1):  # the first step warms up kernels and allocates optimizer state
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = policy(batch)
        loss.backward()
        synchronize(device)
        middle = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        forward_backward.append(middle - start)
        optimizer_step.append(time.perf_counter() - middle)
    after = checksums(policy)
    result = {
        # tensors the timed steps changed: a step that skipped backward or the optimizer would be cheap
        "changed_fraction": sum(before[n] != after[n] for n in before) / len(before),
        "parameters_m": sum(p.numel() for p in policy.parameters()) / 1e6,
        "forward_backward_ms": 1000 * statistics.median(forward_backward[1:]),
        "optimizer_ms": 1000 * statistics.median(optimizer_step[1:]),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # the process's peak RSS
    }
    result["step_ms"] = result["forward_backward_ms"] + result["optimizer_ms"]
    # what a step must hold at least: weights, their gradients, the optimizer's state
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    result["training_state_gib"] = (
        sum(p.numel() * p.element_size() * (2 if p.requires_grad else 1) for p in policy.parameters())
        + sum(t.numel() * t.element_size() for t in state)
    ) / 2**30
    result["peak_over_state"] = result["peak_gib"] / result["training_state_gib"]
    memory = "peak GPU memory" if device.type == "cuda" else "peak RSS"
    print(
        f"{args.backbone} + {args.head}, optimizer={args.optimizer}, batch {args.batch} × {args.cameras} "
        f"cameras on {device}: {result['parameters_m']:.0f} M parameters; medians of {args.steps} steps: "
        f"forward+backward {result['forward_backward_ms']:.0f} ms, "
        f"optimizer {result['optimizer_ms']:.0f} ms; {memory} {result['peak_gib']:.1f} GiB = "
        f"{result['peak_over_state']:.2f}× the training state (weights + gradients + optimizer state, "
        f"{result['training_state_gib']:.1f} GiB)"
    )
    return result


def checksums(policy: VLAPolicy) -> dict[str, float]:
    """One float64 sum per trainable tensor: tells a changed tensor without a second copy of the model."""
    return {n: p.detach().double().sum().item() for n, p in policy.named_parameters() if p.requires_grad}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
