"""One optimizer object over several algorithms, so that trainers, schedulers and checkpoints see one."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.optim import Optimizer


class _MergedState(Mapping):
    """Read-only view of the per-parameter state of every wrapped optimizer."""

    def __init__(self, optimizers: Mapping[str, Optimizer]) -> None:
        self._optimizers = optimizers

    def __getitem__(self, param: torch.Tensor) -> dict[str, Any]:
        for optimizer in self._optimizers.values():
            if param in optimizer.state:
                return optimizer.state[param]
        raise KeyError("parameter has no optimizer state yet")

    def __iter__(self) -> Iterator[torch.Tensor]:
        for optimizer in self._optimizers.values():
            yield from optimizer.state

    def __len__(self) -> int:
        return sum(len(optimizer.state) for optimizer in self._optimizers.values())


class ModalityOptimizer(Optimizer):
    """Steps several optimizers (AdamW, Muon, Pion, …) as one, over disjoint parameter groups.

    ``param_groups`` is a live view of the wrapped optimizers' own group dicts, so an LR scheduler or
    ``accelerate`` that edits ``group["lr"]`` edits the optimizer that uses it — also after
    ``load_state_dict``, which replaces every wrapped optimizer's group dicts with new ones. Each group
    carries ``name``, ``modality`` and ``algorithm`` keys for logging. Build it with
    :func:`vla_train.optim.build_modality_optimizer` rather than by hand.
    """

    def __init__(self, optimizers: Mapping[str, Optimizer], summary: str = "") -> None:
        if not optimizers:
            raise ValueError("ModalityOptimizer needs at least one optimizer")
        groups = [group for optimizer in optimizers.values() for group in optimizer.param_groups]
        # The base class rejects a parameter that appears in two groups: every parameter has one owner.
        super().__init__([{"params": group["params"]} for group in groups], {})
        self.optimizers = dict(optimizers)
        self.state = _MergedState(self.optimizers)  # type: ignore[assignment]
        self.summary = summary

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        optimizers = self.__dict__.get("optimizers")
        if optimizers is None:  # during Optimizer.__init__: the groups it builds for its checks
            return self.__dict__.setdefault("_construction_groups", [])
        return [group for optimizer in optimizers.values() for group in optimizer.param_groups]

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        if self.__dict__.get("optimizers") is not None:
            raise AttributeError("ModalityOptimizer.param_groups is a view; change the wrapped optimizers")
        self.__dict__["_construction_groups"] = groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.__dict__.get("optimizers") is not None:
            raise NotImplementedError("add parameters to one of ModalityOptimizer.optimizers instead")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("optimizers")
        if not isinstance(saved, Mapping) or set(saved) != set(self.optimizers):
            found = sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__
            raise ValueError(
                f"optimizer state was saved for algorithms {found}, "
                f"this optimizer has {sorted(self.optimizers)}"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved[name])

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}: {type(opt).__name__}" for name, opt in self.optimizers.items())
        return f"ModalityOptimizer({inner}; {len(self.param_groups)} groups)"
