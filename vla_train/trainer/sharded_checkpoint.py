"""Checkpoints of an FSDP2 run (``trainer.strategy=fsdp``): whole weights, sharded optimizer state.

The layout is :mod:`vla_train.trainer.checkpoint`'s, except that each process writes its own rows of
the optimizer state (``optimizer.rank000.pt``, …): optimizer memory stays ∝ 1/N when saving and
resuming, and no process ever holds another's state. ``model.safetensors`` holds the whole policy, as in
every other run, so ``scripts/eval.py``, ``scripts/serve.py`` and a resume under any strategy read it.
Everything is read back with ``safetensors`` or ``torch.load(weights_only=True)``; a resume needs the
same number of processes (the shards say how many).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.tensor import DTensor

from vla_train.trainer.checkpoint import (
    CHECKPOINT_DIR,
    STATE_FILE,
    TrainerState,
    _fitting,
    _reading,
    capture_rng_state,
    checkpoint_name,
    list_checkpoints,
    restore_rng_state,
)


def optimizer_shard_name(rank: int) -> str:
    return f"optimizer.rank{rank:03d}.pt"


def save_sharded_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    rank: int,
    world: int,
    barrier: Callable[[], None],
    keep: int | None = None,
) -> Path:
    """Every process calls this; process 0 writes the shared files and renames the checkpoint into place
    once every shard is written."""
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(state.step)
    partial = root / (final.name + ".partial")
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)  # every process takes part; 0 receives
    torch.save(_local(optimizer.state_dict()), partial / optimizer_shard_name(rank))
    barrier()
    if rank == 0:
        save_file(
            {name: tensor.contiguous() for name, tensor in weights.items()}, partial / "model.safetensors"
        )
        torch.save(scheduler.state_dict(), partial / "scheduler.pt")
        torch.save(capture_rng_state(), partial / "rng.pt")
        (partial / STATE_FILE).write_text(json.dumps({**asdict(state), "processes": world}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        if keep is not None and keep > 0:
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old)
    barrier()
    return final


def load_sharded_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int,
    world: int,
) -> TrainerState:
    """Restore what :func:`save_sharded_checkpoint` wrote, on every process."""
    path = Path(path)
    with _reading(path / STATE_FILE):
        saved = json.loads((path / STATE_FILE).read_text())
    processes = saved.pop("processes", None)
    if processes != world:
        raise RuntimeError(
            f"{path} holds optimizer state sharded over {processes} processes; resume it with "
            f"{processes} (this run has {world}), or start from its model.safetensors"
        )
    weights_file = path / "model.safetensors"
    with _reading(weights_file):
        weights = load_file(weights_file)
    with _fitting(weights_file, "model"):
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    shard = path / optimizer_shard_name(rank)
    with _reading(shard):
        optimizer_state = torch.load(shard, map_location="cpu", weights_only=True)
    with _fitting(shard, "optimizer"):
        optimizer.load_state_dict(optimizer_state)
        _reshard_state(optimizer)
    for name, target, apply in (
        ("scheduler.pt", "learning-rate schedule", scheduler.load_state_dict),
        ("rng.pt", "machine's random generators", restore_rng_state),
    ):
        with _reading(path / name):
            value = torch.load(path / name, map_location="cpu", weights_only=True)
        with _fitting(path / name, target):
            apply(value)
    with _fitting(path / STATE_FILE, "trainer"):
        return TrainerState(**saved)


def _local(value: Any) -> Any:
    """A state dict with each DTensor replaced by this process's rows (plain tensors load safely)."""
    if isinstance(value, DTensor):
        return value.to_local()
    if isinstance(value, dict):
        return {key: _local(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_local(item) for item in value]
    return value


def _reshard_state(optimizer: torch.optim.Optimizer) -> None:
    """Loaded per-parameter states are plain tensors: make those shaped like a sharded parameter's rows
    DTensors again, placed as the parameter is (scalars such as AdamW's step stay plain)."""
    inner = getattr(optimizer, "optimizers", {"": optimizer})
    for part in inner.values():
        for param, state in part.state.items():
            if not isinstance(param, DTensor):
                continue
            rows = param.to_local()
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape == rows.shape:
                    state[key] = DTensor.from_local(  # the global shape: shards may be uneven
                        value,
                        param.device_mesh,
                        param.placements,
                        run_check=False,
                        shape=param.shape,
                        stride=param.stride(),
                    )
