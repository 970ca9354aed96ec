"""The control flow that Muon, Pion, LPMuon and LRMuon share: momentum, a spectral map, a scaled step.

Pion "inherits Muon's control flow and per-step cost and differs only in the coefficients of its NS
iteration" (paper §5). So the optimizers are one :class:`SpectralOptimizer` plus a one-method
subclass each that says which spectral map to apply to the momentum matrices.

Per step and per parameter group the base class:

1. updates the momentum ``M ← μM + G`` (Alg. 2, line 3), optionally with a Nesterov look-ahead;
2. views every update as a 2-D matrix (conv kernels are flattened to ``out × rest``) and, in
   per-head mode, splits it into per-head blocks (Alg. 3, line 4);
3. stacks the blocks of the same shape and runs the spectral map on them as **one** batched call (up
   to :data:`MAX_BATCH_ELEMENTS` at a time), so 24 identical layers cost one batched matmul chain
   instead of 24 Python-level iterations; each update is made just before its batch is filtered;
4. applies decoupled weight decay and ``θ ← θ − lr · scale(m, n) · X`` with an explicit scale rule.

Across processes each matrix is filtered by one rank: under DDP (whole matrices everywhere) the owners
share their results with one all-gather; under FSDP2 (rows sharded, :mod:`vla_train.optim.sharded`)
each owner assembles its matrices from every rank's rows and scatters the results back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch.optim import Optimizer

from vla_train.optim.sharded import check_row_sharded, filter_sharded, is_sharded, local

SpectralMap = Callable[[torch.Tensor], torch.Tensor]

#: each rule's factor unless ``lr_scale_factor`` says otherwise
LR_SCALE_DEFAULT_FACTORS = {"moonlight": 0.2, "keller": 1.0, "none": 1.0}
LR_SCALE_RULES = tuple(LR_SCALE_DEFAULT_FACTORS)


def spectral_lr_scale(rule: str, rows: int, cols: int, factor: float | None = None) -> float:
    """Multiplier on the learning rate for an ``rows × cols`` spectral update: ``factor × term(m, n)``.

    - ``moonlight``: ``0.2·sqrt(max(m, n))`` (Liu et al., 2025). An orthogonal ``m × n`` matrix has
      RMS ``1/sqrt(max(m, n))``, so this gives the update AdamW's typical RMS of 0.2 and lets the
      spectral and AdamW groups share one learning rate. The paper's VLA-Adapter and VLANeXt runs use
      factor 0.2; its π0.5 run (openpi) uses 2.0.
    - ``keller``: ``max(1, m/n)^0.5`` (Jordan et al., 2024), tuned for Muon-only learning rates.
    - ``none``: 1.

    ``factor`` (``None``: the rule's own, :data:`LR_SCALE_DEFAULT_FACTORS`) multiplies the shape term.
    """
    if rule not in LR_SCALE_DEFAULT_FACTORS:
        raise ValueError(f"lr_scale must be one of {LR_SCALE_RULES}, got {rule!r}")
    if factor is None:
        factor = LR_SCALE_DEFAULT_FACTORS[rule]
    elif not factor > 0:
        raise ValueError(f"lr_scale_factor must be > 0, got {factor!r}")
    if rule == "moonlight":
        return factor * math.sqrt(max(rows, cols))
    if rule == "keller":
        return factor * max(1.0, rows / cols) ** 0.5
    return factor


@dataclass(frozen=True)
class HeadLayout:
    """How an attention projection splits into heads for the per-head mode (Alg. 3).

    Exactly one of ``head_dim`` / ``num_heads``. Prefer ``head_dim``: with grouped-query attention
    Q and K/V have different head counts but the same head size, so one layout serves all four.

    Attributes:
        head_dim: size of one head along ``axis``.
        num_heads: number of heads along ``axis`` (alternative to ``head_dim``).
        axis: 0 when heads are stacked along the output rows (Q, K, V: ``(heads·d, hidden)``), 1 when
            they are stacked along the input columns (O: ``(hidden, heads·d)``).
    """

    head_dim: int | None = None
    num_heads: int | None = None
    axis: int = 0

    def __post_init__(self) -> None:
        if (self.head_dim is None) == (self.num_heads is None):
            raise ValueError(f"HeadLayout needs exactly one of head_dim or num_heads, got {self}")
        for name in ("head_dim", "num_heads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"HeadLayout.{name} must be a positive integer, got {value!r}")
        if self.axis not in (0, 1):
            raise ValueError(f"HeadLayout.axis must be 0 (Q/K/V rows) or 1 (O columns), got {self.axis!r}")

    def count(self, matrix_shape: tuple[int, int]) -> int:
        """Number of heads in a matrix of this shape; raises if the axis does not divide evenly."""
        length = matrix_shape[self.axis]
        if self.head_dim is not None:
            heads, rest = divmod(length, self.head_dim)
            what = f"head_dim={self.head_dim}"
        else:
            heads, rest = self.num_heads, length % self.num_heads
            what = f"num_heads={self.num_heads}"
        if rest:
            raise ValueError(
                f"per-head layout {what} does not divide axis {self.axis} of a matrix of shape {matrix_shape}"
            )
        return heads


def as_head_layout(per_head: bool | HeadLayout | Mapping[str, Any] | None) -> HeadLayout | None:
    """Normalize the ``per_head`` option of a parameter group (``False``, a mapping or a layout)."""
    if per_head is None or per_head is False:
        return None
    if per_head is True:
        raise ValueError("per_head=True needs a layout: pass {'head_dim': d, 'axis': 0 or 1} or a HeadLayout")
    if isinstance(per_head, HeadLayout):
        return per_head
    if isinstance(per_head, Mapping):
        return HeadLayout(**dict(per_head))
    raise TypeError(f"per_head must be False, a HeadLayout or a mapping, got {type(per_head).__name__}")


def split_heads(matrix: torch.Tensor, layout: HeadLayout | None) -> torch.Tensor:
    """``(m, n)`` → ``(heads, m', n')`` blocks, one per head (a single block when ``layout`` is None)."""
    if layout is None:
        return matrix.unsqueeze(0)
    heads = layout.count(tuple(matrix.shape))
    if layout.axis == 0:
        return matrix.reshape(heads, matrix.size(0) // heads, matrix.size(1))
    return matrix.reshape(matrix.size(0), heads, matrix.size(1) // heads).transpose(0, 1)


def merge_heads(blocks: torch.Tensor, layout: HeadLayout | None) -> torch.Tensor:
    """Inverse of :func:`split_heads`."""
    if layout is None:
        return blocks.squeeze(0)
    if layout.axis == 0:
        return blocks.reshape(-1, blocks.size(-1))
    return blocks.transpose(0, 1).reshape(blocks.size(1), -1)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), read from ``/proc/cpuinfo``."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_compute_dtype(option: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the spectral map runs in; ``auto`` picks the fast one for the device.

    ``auto``: bf16 on CUDA (tensor cores, as in Keller Jordan's Muon), and on CPUs with native bf16
    dot products, where ``scripts/bench_optim.py`` measured the NS step 3.7× faster than fp32 (AMD
    EPYC, AVX512-BF16); fp32 on other CPUs, where bf16 matmul is emulated and slower. The choice is
    a property of the machine, not of a timing, so a resumed run makes the same one.
    """
    if isinstance(option, torch.dtype):
        return option
    if option == "auto":
        fast_bf16 = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if fast_bf16 else torch.float32
    dtype = getattr(torch, str(option), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(
            f"compute_dtype must be 'auto' or a torch dtype name such as 'float32', got {option!r}"
        )
    return dtype


class SpectralOptions(TypedDict, total=False):
    """The keyword arguments every :class:`SpectralOptimizer` takes besides its own."""

    momentum: float
    nesterov: bool
    weight_decay: float
    lr_scale: str
    lr_scale_factor: float | None
    per_head: bool | HeadLayout | Mapping[str, Any] | None
    eps: float
    compute_dtype: str


class SpectralOptimizer(Optimizer):
    """Momentum + spectral map + scaled decoupled update, for 2-D (or flattened N-D) weights only.

    Subclasses implement :meth:`spectral_map`. Use these optimizers for hidden weight matrices;
    embeddings, output heads, norms and biases belong to AdamW (see
    :func:`vla_train.optim.assignment.build_modality_optimizer`, which routes them).
    """

    #: the fields of :class:`~vla_train.optim.options.ModalityOptimizerOptions` this class takes (the
    #: assignment passes these; ``lr`` and ``weight_decay`` every algorithm takes)
    config_options: tuple[str, ...] = ("momentum", "nesterov", "lr_scale", "lr_scale_factor", "compute_dtype")

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        *,
        lr: float = 1e-4,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        lr_scale: str = "moonlight",
        lr_scale_factor: float | None = None,
        per_head: bool | HeadLayout | Mapping[str, Any] | None = False,
        eps: float = 1e-7,
        compute_dtype: str = "auto",
        **algorithm_defaults: Any,
    ) -> None:
        """Args shared by every spectral optimizer (subclasses add their own, :class:`SpectralOptions`):
        momentum, nesterov: heavy-ball momentum and the Nesterov look-ahead.
        weight_decay: decoupled, ``θ ← θ(1 − lr·wd)``.
        lr_scale, lr_scale_factor: the shape rule of :func:`spectral_lr_scale`.
        per_head: ``False``, or a :class:`HeadLayout` / mapping for the per-head mode (Alg. 3).
        eps: the normalization guard of the spectral map.
        compute_dtype: the spectral map's dtype (:func:`resolve_compute_dtype`).
        """
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            lr_scale=lr_scale,
            lr_scale_factor=lr_scale_factor,
            per_head=per_head,
            eps=eps,
            compute_dtype=compute_dtype,
            **algorithm_defaults,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # state saved before the option existed
            group.setdefault("lr_scale_factor", None)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        spectral_lr_scale(group["lr_scale"], 1, 1, group["lr_scale_factor"])  # validates both
        layout = as_head_layout(group["per_head"])
        # Stored as a plain dict so that state_dict() stays loadable with torch.load(weights_only=True).
        group["per_head"] = asdict(layout) if layout is not None else False
        self.validate_group(group)
        for param in group["params"]:
            if param.ndim < 2:
                raise ValueError(
                    f"{type(self).__name__} updates matrices only, got a {param.ndim}-D parameter of shape "
                    f"{tuple(param.shape)}. Route biases, norms and other 1-D parameters to AdamW, e.g. with "
                    "vla_train.optim.build_modality_optimizer."
                )
            if layout is not None:
                layout.count((param.size(0), math.prod(param.shape[1:])))

    def validate_group(self, group: dict[str, Any]) -> None:
        """Check algorithm-specific options of a new parameter group (raise ``ValueError``)."""

    def spectral_map(self, group: dict[str, Any]) -> SpectralMap:
        """The map applied to a batch of momentum blocks ``(batch, m, n) → (batch, m, n)``."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        layout = as_head_layout(group["per_head"])
        buckets: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        sharded: list[tuple[torch.Tensor, torch.Tensor]] = []  # FSDP2: (parameter, this rank's rows)
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            buffer = state["momentum_buffer"]
            buffer.mul_(group["momentum"]).add_(param.grad)
            if is_sharded(param):
                check_row_sharded(param, f"{type(self).__name__} parameter of shape {tuple(param.shape)}")
                rows = local(self._update(group, param))
                sharded.append((param, rows.reshape(rows.size(0), math.prod(param.shape[1:]))))
                continue
            # the blocks' shape only (meta): each update is made when its batch is filtered, so that
            # Nesterov's look-ahead never holds a second copy of every gradient at once
            shape = split_heads(torch.empty(param.size(0), math.prod(param.shape[1:]), device="meta"), layout)
            buckets.setdefault((tuple(shape.shape[-2:]), param.device), []).append((param, shape))

        spectral_map = self.spectral_map(group)
        if sharded:
            self._step_sharded(group, spectral_map, sharded, layout)
        ranks = distributed_ranks()
        if ranks is None:  # a batch at a time: its updates and their filtered forms are freed after it
            for key, members in buckets.items():
                for batch in batches_of(members):
                    made = self._updates(group, batch, layout)
                    self._apply(group, key, made, self._filter(group, spectral_map, key, made, layout))
            return
        # several processes: each filters the matrices it owns, then every rank gets every result
        if not buckets:
            return
        owners = assign_owners([blocks for members in buckets.values() for _, blocks in members], ranks[1])
        flat = iter(owners)
        updates: dict[torch.Tensor, torch.Tensor] = {}
        for key, members in buckets.items():
            mine = [member for member in members if next(flat) == ranks[0]]
            for batch in batches_of(mine):
                made = self._updates(group, batch, layout)
                updates.update(self._filter(group, spectral_map, key, made, layout))
        updates = share_updates(buckets, owners, updates, ranks)
        for key, members in buckets.items():
            self._apply(group, key, members, updates)

    def _update(self, group: dict[str, Any], param: torch.Tensor) -> torch.Tensor:
        """The matrix the spectral map sees: the momentum, or Nesterov's ``G + μM``."""
        buffer = self.state[param]["momentum_buffer"]
        return param.grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer

    def _updates(
        self, group: dict[str, Any], batch: list[tuple[torch.Tensor, torch.Tensor]], layout: HeadLayout | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        made = []
        for param, _ in batch:
            update = self._update(group, param)
            made.append((param, split_heads(update.reshape(update.size(0), -1), layout)))
        return made

    def _step_sharded(
        self,
        group: dict[str, Any],
        spectral_map: SpectralMap,
        members: list[tuple[torch.Tensor, torch.Tensor]],
        layout: HeadLayout | None,
    ) -> None:
        """FSDP2: each matrix filtered whole on its owner (:func:`~vla_train.optim.sharded.filter_sharded`),
        bucketed there as in one process; every rank then steps its own rows."""
        params = [param for param, _ in members]
        blocks = [
            split_heads(torch.empty(param.size(0), rows.size(1), device="meta"), layout)
            for param, rows in members
        ]
        owners = assign_owners(blocks, params[0].device_mesh.size())

        def filter_owned(indices: list[int], matrices: list[torch.Tensor]) -> list[torch.Tensor]:
            buckets: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for index, matrix in zip(indices, matrices, strict=True):
                split = split_heads(matrix, layout)
                buckets.setdefault((tuple(split.shape[-2:]), split.device), []).append((params[index], split))
            filtered: dict[torch.Tensor, torch.Tensor] = {}
            for key, bucket in buckets.items():
                filtered.update(self._filter(group, spectral_map, key, bucket, layout))
            return [filtered[params[i]].reshape(m.shape) for i, m in zip(indices, matrices, strict=True)]

        rows = filter_sharded(params, [update for _, update in members], owners, filter_owned)
        for param, shape, update in zip(params, blocks, rows, strict=True):
            key = (tuple(shape.shape[-2:]), None)
            self._apply(group, key, [(param, shape)], {param: update})

    @staticmethod
    def _filter(
        group: dict[str, Any],
        spectral_map: SpectralMap,
        key: tuple[Any, ...],
        members: list[tuple[torch.Tensor, torch.Tensor]],
        layout: HeadLayout | None,
    ) -> dict[torch.Tensor, torch.Tensor]:
        """The spectral map on a bucket's blocks as one batched call; each parameter's update."""
        _, device = key
        stacked = torch.cat([blocks for _, blocks in members]).to(
            resolve_compute_dtype(group["compute_dtype"], device)
        )
        filtered = spectral_map(stacked)
        updates, start = {}, 0
        for param, blocks in members:
            chunk = filtered[start : start + blocks.size(0)]
            start += blocks.size(0)
            updates[param] = merge_heads(chunk, layout).reshape(param.shape).to(param.dtype)
        return updates

    @staticmethod
    def _apply(
        group: dict[str, Any],
        key: tuple[Any, ...],
        members: list[tuple[torch.Tensor, torch.Tensor]],
        updates: Mapping[torch.Tensor, torch.Tensor],
    ) -> None:
        """Decoupled weight decay and ``θ ← θ − lr · scale(m, n) · update``."""
        (rows, cols), _ = key
        step_size = group["lr"] * spectral_lr_scale(group["lr_scale"], rows, cols, group["lr_scale_factor"])
        for param, _ in members:
            weights = local(param)  # FSDP2: this rank's rows, updated in place
            if group["weight_decay"]:
                weights.mul_(1.0 - group["lr"] * group["weight_decay"])
            weights.add_(updates[param].view_as(weights), alpha=-step_size)


#: the most matrix elements stacked into one batched spectral call (128 MiB in fp32): the stack, its
#: Newton–Schulz temporaries and the results of a larger bucket would each be a copy of all of it
MAX_BATCH_ELEMENTS = 2**25


def batches_of(
    members: list[tuple[torch.Tensor, torch.Tensor]], limit: int | None = None
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """A bucket's members in consecutive batches of at most ``limit`` elements (default
    :data:`MAX_BATCH_ELEMENTS`; one member at least per batch)."""
    limit = MAX_BATCH_ELEMENTS if limit is None else limit
    batches: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    size = 0
    for member in members:
        elements = member[1].numel()
        if not batches or size + elements > limit:
            batches.append([])
            size = 0
        batches[-1].append(member)
        size += elements
    return batches


def distributed_ranks() -> tuple[int, int] | None:
    """``(rank, world size)`` when several processes train together (DDP), else None."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world = torch.distributed.get_world_size()
    return (torch.distributed.get_rank(), world) if world > 1 else None


def spectral_cost(blocks: torch.Tensor) -> int:
    """Multiply-adds of one Newton–Schulz step on ``(heads, m, n)`` blocks, up to a constant:
    ``heads · min(m, n)² · max(m, n)`` (the Gram matrix and its products are on the smaller side)."""
    heads, rows, cols = blocks.shape
    return heads * min(rows, cols) ** 2 * max(rows, cols)


def assign_owners(items: list[torch.Tensor], world: int) -> list[int]:
    """The rank that filters each matrix (its ``(heads, m, n)`` blocks), balancing the spectral work,
    not the tensor count: the largest first, each to the least-loaded rank (ties: the lowest rank) —
    the same assignment on every rank."""
    costs = [spectral_cost(blocks) for blocks in items]
    owners, loads = [0] * len(items), [0] * world
    for index in sorted(range(len(items)), key=lambda i: (-costs[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
    return owners


def share_updates(
    buckets: Mapping[Any, list[tuple[torch.Tensor, torch.Tensor]]],
    owners: list[int],
    updates: dict[torch.Tensor, torch.Tensor],
    ranks: tuple[int, int],
) -> dict[torch.Tensor, torch.Tensor]:
    """Every rank's filtered matrices to every rank: one all-gather of each rank's updates, flattened
    and padded to the longest (exact: the updates travel in their own dtype)."""
    rank, world = ranks
    params = [param for members in buckets.values() for param, _ in members]
    by_owner: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for param, owner in zip(params, owners, strict=True):
        by_owner[owner].append(param)
    sizes = [sum(p.numel() for p in owned) for owned in by_owner]
    reference = params[0]
    local = torch.zeros(max(sizes), dtype=reference.dtype, device=reference.device)
    if by_owner[rank]:
        local[: sizes[rank]] = torch.cat([updates[p].reshape(-1) for p in by_owner[rank]])
    gathered = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(gathered, local)
    shared: dict[torch.Tensor, torch.Tensor] = {}
    for owner, owned in enumerate(by_owner):
        offset = 0
        for param in owned:
            shared[param] = gathered[owner][offset : offset + param.numel()].view_as(param)
            offset += param.numel()
    return shared
