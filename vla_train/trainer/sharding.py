"""``trainer.strategy=fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) over a policy.

Each repeated block (every member of an ``nn.ModuleList`` of two or more: transformer layers, ViT
blocks, DiT blocks) becomes its own unit, so only one block's full weights exist at a time in forward
and backward; the rest of the policy is the root unit. Parameters become DTensors split along dim 0,
gradients are reduce-scattered, and the optimizer's state stays sharded (the spectral optimizers
assemble each matrix on one rank: :mod:`vla_train.optim.sharded`).

Applied here rather than through accelerate's FSDP plugin because accelerate supports FSDP only on
GPUs; the same ``fully_shard`` runs on CPUs (gloo) in the tests and on GPUs (NCCL) in real runs.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

log = logging.getLogger(__name__)


def shard_policy(policy: nn.Module, device: torch.device) -> DeviceMesh | None:
    """Shard ``policy`` in place across every process; None (nothing done) with one process."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        log.info("trainer.strategy=fsdp with one process: nothing to shard")
        return None
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    units = [
        block
        for module in policy.modules()
        if isinstance(module, nn.ModuleList) and len(module) > 1
        for block in module
        if any(True for _ in block.parameters())
    ]
    for block in reversed(units):  # inner blocks before the blocks that hold them
        if not isinstance(next(block.parameters()), DTensor):
            fully_shard(block, mesh=mesh)
    fully_shard(policy, mesh=mesh)
    log.info("FSDP2: %d blocks + the root sharded over %d processes", len(units), mesh.size())
    return mesh


def local_rows(tensor: torch.Tensor) -> torch.Tensor:
    """This process's rows of a DTensor, or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective: every rank must call it), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
