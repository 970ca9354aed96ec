"""Per-GPU memory and Newton–Schulz work of a configured run, before renting the GPUs.

From the composed config, built on the meta device (no weights, no compute):

- weights, gradients and optimizer state from the parameters and the modality-wise assignment
  (AdamW two moments, the spectral optimizers one momentum buffer; in ``trainer.weight_dtype``);
- activations, when asked (they need a real forward pass): the policy built on the CPU with random
  weights runs one loss at micro-batches of 1 and 2 while every storage autograd saves for the backward
  is added up (``saved_tensors_hooks``, weights left out); the difference is the activation memory
  per sample at the configured images, prompt, queries and gradient checkpointing. That forward is
  fp32 (CPUs have no fast bf16 autocast everywhere); under the GPUs' bf16 autocast the matmul inputs
  are saved in bf16, which the plan counts as half of it. (The meta device cannot stand in: the
  language models' masks and Qwen3-VL's rope positions read tensor values.)
- Newton–Schulz multiply-adds per step from each spectral matrix's shape (``ns_steps`` × (4·m²n +
  2·m³) for ``m ≤ n``), split over ranks by the trainer's own owner assignment.

DDP keeps everything whole on every GPU; FSDP2 divides weights, gradients and optimizer state by the
GPUs and adds the largest block gathered whole (twice: the one computing and the one prefetched).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from vla_train.optim.assignment import assign_parameters
from vla_train.optim.spectral import assign_owners, split_heads
from vla_train.options import instantiate_policy

GIB = 2**30
MODALITIES = ("vision", "language", "action", "other")


@dataclass
class RunFootprint:
    """What one optimizer step of the configured run holds and computes, in bytes and multiply-adds."""

    weights: int
    gradients: int
    optimizer_state: int
    activations_per_sample: int | None  # None: not measured
    largest_block: int  # weights of the largest FSDP unit below the root
    spectral_macs: list[int]  # per spectral matrix, one step
    spectral_blocks: list[torch.Tensor]  # per spectral matrix, its (heads, m, n) blocks on meta


@dataclass
class GpuPlan:
    strategy: str
    weights: float
    gradients: float
    optimizer_state: float
    activations: float
    gathered: float  # FSDP2: whole blocks gathered for compute
    spectral_macs_per_rank: int

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer_state + self.activations + self.gathered


def footprint(cfg: DictConfig, measure_activations: bool = False) -> RunFootprint:
    """Build ``cfg``'s policy on the meta device and count what a training step holds; with
    ``measure_activations``, also build it on the CPU (random weights) and measure them."""
    env, trainer = cfg.env, cfg.trainer
    with torch.device("meta"):
        policy = _policy(cfg)
    item = 2 if trainer.weight_dtype == "bfloat16" else 4
    trainable = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
    rules = policy.optimizer_rules()
    algorithms = {m: str(cfg.optimizer[m]) for m in MODALITIES if m in cfg.optimizer}
    assignments = assign_parameters(trainable, rules.modality_rules, algorithms, rules.adamw_patterns)
    state_elements, blocks = 0, []
    for assignment in assignments:
        parameter = assignment.parameter
        if assignment.algorithm == "adamw":
            state_elements += 2 * parameter.numel()
        else:
            state_elements += parameter.numel()
            matrix = torch.empty(parameter.size(0), math.prod(parameter.shape[1:]), device="meta")
            blocks.append(split_heads(matrix, None))
    activations = None
    if measure_activations:
        torch.manual_seed(0)
        real = _policy(cfg)
        one, two = (_saved_bytes(real, env, batch) for batch in (1, 2))
        activations = max(two - one, 0)
    return RunFootprint(
        weights=sum(p.numel() for p in policy.parameters()) * item,
        gradients=sum(p.numel() for _, p in trainable) * item,
        optimizer_state=state_elements * item,
        activations_per_sample=activations,
        largest_block=max((_block_bytes(m, item) for m in _fsdp_blocks(policy)), default=0),
        spectral_macs=[_newton_schulz_macs(b, int(cfg.optimizer.ns_steps)) for b in blocks],
        spectral_blocks=blocks,
    )


def _policy(cfg: DictConfig) -> torch.nn.Module:
    env = cfg.env
    return instantiate_policy(
        cfg.copy(),
        action_dim=env.action_dim,
        state_dim=env.state_dim,
        chunk_size=env.chunk_size,
        random_init=True,
    )


def plan(run: RunFootprint, gpus: int, micro_batch: int, bf16_activations: bool) -> list[GpuPlan]:
    """Per-GPU figures (GiB) under DDP and FSDP2 with ``gpus`` GPUs and ``micro_batch`` samples each."""
    measured = run.activations_per_sample or 0
    activations = measured * micro_batch * (0.5 if bf16_activations else 1.0) / GIB
    owners = assign_owners(run.spectral_blocks, gpus) if run.spectral_blocks else []
    per_rank = [0] * gpus
    for owner, macs in zip(owners, run.spectral_macs, strict=True):
        per_rank[owner] += macs
    most = max(per_rank, default=0)
    whole = (run.weights / GIB, run.gradients / GIB, run.optimizer_state / GIB)
    return [
        GpuPlan("ddp", *whole, activations, 0.0, most),
        GpuPlan("fsdp", *(part / gpus for part in whole), activations, 2 * run.largest_block / GIB, most),
    ]


def _newton_schulz_macs(blocks: torch.Tensor, steps: int) -> int:
    heads, rows, cols = blocks.shape
    small, large = min(rows, cols), max(rows, cols)
    return heads * steps * (4 * small * small * large + 2 * small**3)


def _fsdp_blocks(policy: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The units :func:`vla_train.trainer.sharding.shard_policy` makes below the root."""
    for module in policy.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            yield from module


def _block_bytes(module: torch.nn.Module, item: int) -> int:
    return sum(p.numel() for p in module.parameters()) * item


def _saved_bytes(policy: torch.nn.Module, env: DictConfig, batch: int) -> int:
    """Bytes autograd saves for the backward of one loss at ``batch`` samples (CPU, fp32)."""
    size = int(env.image_size)
    history = int(env.get("state_history", 1))
    state_shape = (batch, env.state_dim) if history == 1 else (batch, history, env.state_dim)
    inputs = {
        "images": torch.rand(batch, len(env.cameras), 3, size, size),
        "instruction": ["put the black bowl in the bottom drawer of the cabinet and close it"] * batch,
        "state": torch.zeros(state_shape),
        "actions": torch.zeros(batch, env.chunk_size, env.action_dim),
        "action_is_pad": torch.zeros(batch, env.chunk_size, dtype=torch.bool),
    }
    weights = {p.untyped_storage().data_ptr() for p in policy.parameters()}
    policy.train()
    with _counting_saved_tensors(weights) as total:
        loss = policy(inputs)
    del loss
    return total[0]


@contextmanager
def _counting_saved_tensors(skip: set[int]) -> Iterator[list[int]]:
    """Every distinct storage saved for backward, except the weights' (``skip``)."""
    total, seen = [0], set(skip)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total
