"""Spectral maps on parameters that FSDP2 shards (``fully_shard``: DTensors split along dim 0).

A spectral map needs a whole matrix, and every rank holds only a block of rows of each. So each matrix
gets one owner rank (:func:`~vla_train.optim.spectral.assign_owners`, balanced by Newton–Schulz work):
every rank sends each owner its rows (one ``gather`` per owner, all that owner's matrices in one
buffer), the owners run the map on their assembled matrices at the same time, and each sends every
rank its rows of the result back (one ``scatter`` per owner). The momentum stays sharded, so optimizer
memory per rank is ∝ 1/N, and each full matrix exists on exactly one rank, only during the step — the
scheme dion uses, with gathers in place of its all-to-all.

Rows are split as ``torch.chunk`` splits them (``ceil(rows / N)`` per rank, the last ranks shorter or
empty), which is how DTensor places ``Shard(0)``; buffers are padded to equal sizes for the collectives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

#: ``(indices into params, their full 2-D updates) → the filtered updates``, run by each matrix's owner
FilterFn = Callable[[list[int], list[torch.Tensor]], list[torch.Tensor]]


def is_sharded(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's rows on this rank (the same storage), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def check_row_sharded(param: DTensor, name: str) -> None:
    """Only FSDP2's layout is assembled here: a 1-D mesh, rows split (``Shard(0)``)."""
    if param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
        raise ValueError(
            f"{name}: a sharded parameter must be split along dim 0 on a 1-D mesh (FSDP2's fully_shard), "
            f"got placements {tuple(param.placements)} on a {param.device_mesh.ndim}-D mesh"
        )


def row_counts(rows: int, world: int) -> list[int]:
    """Rows of each rank under ``torch.chunk``'s split."""
    chunk = math.ceil(rows / world)
    return [max(0, min(chunk, rows - rank * chunk)) for rank in range(world)]


def filter_sharded(
    params: Sequence[DTensor],
    updates: Sequence[torch.Tensor],
    owners: Sequence[int],
    filter_fn: FilterFn,
) -> list[torch.Tensor]:
    """This rank's rows of each filtered update.

    Args:
        params: the sharded parameters (for their global shape and mesh), in the same order on
            every rank.
        updates: this rank's rows of each update, as ``(local_rows, cols)`` matrices.
        owners: the rank (in the mesh) that filters each matrix.
        filter_fn: the spectral map on the full matrices an owner holds (called on the owner only).
    """
    mesh = params[0].device_mesh
    group, rank, world = mesh.get_group(), mesh.get_local_rank(), mesh.size()
    shapes = [
        (update.size(-1), row_counts(param.size(0), world))
        for param, update in zip(params, updates, strict=True)
    ]
    # Three phases, so that the owners filter at the same time: every owner first receives all its
    # matrices, then each filters its own, then every owner sends the rows back. (Gathering, filtering
    # and scattering owner by owner would make every rank wait for each owner's filter in turn.)
    owned_by = [[index for index, o in enumerate(owners) if o == owner] for owner in range(world)]
    sizes_by = [[max(shapes[i][1]) * shapes[i][0] for i in owned] for owned in owned_by]
    received: list[torch.Tensor] | None = None
    sends: list[torch.Tensor | None] = [None] * world
    for owner, (owned, sizes) in enumerate(zip(owned_by, sizes_by, strict=True)):
        if not owned:
            continue
        # the owner's matrices, each this rank's rows padded to ceil(rows / N), in one buffer
        send = sends[owner] = torch.cat(
            [_padded(updates[i].reshape(-1), size) for i, size in zip(owned, sizes, strict=True)]
        )
        buffers = [torch.empty_like(send) for _ in range(world)] if rank == owner else None
        dist.gather(send, buffers, dst=dist.get_global_rank(group, owner), group=group)
        if rank == owner:
            received = buffers
    pieces = None
    owned, sizes = owned_by[rank], sizes_by[rank]
    if owned:
        assert received is not None
        full = [_assemble(received, _offsets(sizes)[k], shapes[i]) for k, i in enumerate(owned)]
        del received
        filtered = filter_fn(owned, full)
        del full
        pieces = [
            torch.cat(
                [
                    _padded(_rows_of(result, shapes[i][1], r).reshape(-1), size)
                    for result, i, size in zip(filtered, owned, sizes, strict=True)
                ]
            )
            for r in range(world)
        ]
        del filtered
    results: list[torch.Tensor | None] = [None] * len(params)
    for owner, (owned, sizes) in enumerate(zip(owned_by, sizes_by, strict=True)):
        if not owned:
            continue
        back = sends[owner]  # sent already: it receives this rank's rows of the result
        assert back is not None
        dist.scatter(
            back, pieces if rank == owner else None, src=dist.get_global_rank(group, owner), group=group
        )
        for k, index in enumerate(owned):
            start = _offsets(sizes)[k]
            cols, counts = shapes[index]
            results[index] = back[start : start + counts[rank] * cols].view(counts[rank], cols)
    return results  # type: ignore[return-value]


def _padded(flat: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.pad(flat, (0, size - flat.numel()))


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += size
    return offsets


def _assemble(received: Sequence[torch.Tensor], offset: int, shape: tuple[int, list[int]]) -> torch.Tensor:
    cols, counts = shape
    return torch.cat(
        [
            buffer[offset : offset + count * cols].view(count, cols)
            for buffer, count in zip(received, counts, strict=True)
        ]
    )


def _rows_of(matrix: torch.Tensor, counts: Sequence[int], rank: int) -> torch.Tensor:
    start = sum(counts[:rank])
    return matrix[start : start + counts[rank]]
