"""A VLA policy = a backbone + an action head, with the normalization statistics of its training data."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import torch
from torch import nn

from policies.base import ActionHead, Backbone, BackboneOutput, OptimizerRules
from policies.contract import check_fits

NORMALIZATION_MODES = ("mean_std", "min_max", "quantile", "bounds_q99", "identity")
STATISTICS = {
    "mean_std": ("mean", "std"),
    "min_max": ("min", "max"),
    "quantile": ("q01", "q99"),
    "bounds_q99": ("q01", "q99"),
}
#: what each bounds mode adds to ``q99 − q01``: openpi's and OpenVLA's
BOUNDS_EPSILON = {"quantile": 1e-6, "bounds_q99": 1e-8}


class Normalizer(nn.Module):
    """Maps a feature to a normalized space and back; statistics live in buffers, so in checkpoints.

    ``mean_std``: ``(x − mean) / std``; ``min_max``: to [−1, 1] (the bounds normalization of
    OpenVLA-style ℓ1 heads); ``quantile``: the 1st and 99th percentiles to [−1, 1], as openpi computes
    it for π0.5 (``(x − q01) / (q99 − q01 + 1e-6) · 2 − 1``, no clipping); ``bounds_q99``: the same
    bounds as OpenVLA's ``BOUNDS_Q99`` (``+ 1e-8``), clipped to [−1, 1] (VLA-Adapter's official run: its
    gripper, ±1 in LIBERO, maps to itself, as OpenVLA leaves it); ``identity``: unchanged.
    """

    def __init__(self, size: int, mode: str = "mean_std") -> None:
        super().__init__()
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
        self.mode = mode
        self.register_buffer("shift", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))

    def set_statistics(self, stats: Mapping[str, torch.Tensor | list[float]], name: str) -> None:
        """Take ``mean``/``std`` or ``min``/``max`` (as in a LeRobot dataset's ``meta.stats[name]``)."""
        if self.mode == "identity":
            return
        keys = STATISTICS[self.mode]
        missing = [key for key in keys if key not in stats]
        if missing:
            hint = (
                "; datasets written before lerobot 0.4 lack quantiles: add them with "
                "`python -m lerobot.datasets.v30.augment_dataset_quantile_stats --repo-id=<id>`"
                if self.mode in BOUNDS_EPSILON
                else ""
            )
            raise KeyError(
                f"normalization statistics for {name!r} lack {missing} (have {sorted(stats)}){hint}"
            )
        first, second = (torch.as_tensor(stats[key], dtype=torch.float32).reshape(-1) for key in keys)
        if first.numel() != self.shift.numel():
            raise ValueError(
                f"statistics for {name!r} have size {first.numel()}, expected {self.shift.numel()}"
            )
        if self.mode == "mean_std":
            self.shift.copy_(first)
            self.scale.copy_(second.clamp_min(1e-6))
        elif self.mode == "min_max":
            self.shift.copy_((first + second) / 2)
            self.scale.copy_(((second - first) / 2).clamp_min(1e-6))
        else:  # from q01 rather than the midpoint: exact where q01 = q99 (a constant dimension)
            self.shift.copy_(first)
            self.scale.copy_((second - first + BOUNDS_EPSILON[self.mode]) / 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        normalized = (x - self.shift) / self.scale - self.offset
        return normalized.clamp(-1.0, 1.0) if self.mode == "bounds_q99" else normalized

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.offset) * self.scale + self.shift

    @property
    def offset(self) -> float:
        return 1.0 if self.mode in BOUNDS_EPSILON else 0.0


class VLAPolicy(nn.Module):
    """Images + instruction + state → action chunk; trains in normalized space, acts in the env's.

    Args:
        backbone: any :class:`Backbone`.
        head: a factory (a Hydra ``_partial_`` of an :class:`ActionHead`) taking the backbone's
            :class:`~policies.contract.BackboneSpec` as ``backbone`` and ``action_dim``, ``state_dim``,
            ``chunk_size``, so that a head fits any backbone offering what it requires, without
            hand-matched widths (:func:`~policies.contract.check_fits`).
        n_action_steps: actions executed from each predicted chunk before predicting again.
        state_normalization, action_normalization: :class:`Normalizer` modes; None: the head's own.
        augmentation: ``(images, generator) -> images`` applied to training batches, with the step's
            generator, and whose ``evaluation_view(images)`` is applied to every other input (e.g.
            :class:`~policies.augmentation.ImageAugmentation`: the frames as they are).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: Callable[..., ActionHead],
        action_dim: int,
        state_dim: int,
        chunk_size: int,
        n_action_steps: int | None = None,
        state_normalization: str | None = None,
        action_normalization: str | None = None,
        augmentation: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        n_action_steps = chunk_size if n_action_steps is None else n_action_steps
        if not 1 <= n_action_steps <= chunk_size:
            raise ValueError(f"n_action_steps must be in [1, chunk_size={chunk_size}], got {n_action_steps}")
        self.backbone = backbone
        head_class = getattr(head, "func", head)  # a Hydra partial: the head's class and its options
        if isinstance(head_class, type) and issubclass(head_class, ActionHead):
            check_fits(type(backbone), head_class, getattr(head, "keywords", {}))
        self.head = head(
            backbone=backbone.spec, action_dim=action_dim, state_dim=state_dim, chunk_size=chunk_size
        )
        self.action_dim, self.state_dim, self.chunk_size = action_dim, state_dim, chunk_size
        self.n_action_steps = n_action_steps
        self.augmentation = augmentation
        self.state_normalizer = Normalizer(state_dim, state_normalization or self.head.normalization)
        self.action_normalizer = Normalizer(action_dim, action_normalization or self.head.normalization)
        self._action_queue: deque[torch.Tensor] = deque()

    def set_normalization(
        self, stats: Mapping[str, Mapping[str, torch.Tensor]], state_key: str, action_key: str
    ) -> None:
        self.state_normalizer.set_statistics(stats[state_key], state_key)
        self.action_normalizer.set_statistics(stats[action_key], action_key)

    def forward(
        self, batch: Mapping[str, torch.Tensor | list[str]], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training loss of a batch: images, instruction, state, actions, action_is_pad."""
        if self.augmentation is not None:
            images = batch["images"]
            view = (
                self.augmentation(images, generator)
                if self.training
                else self.augmentation.evaluation_view(images)
            )
            batch = {**batch, "images": view}
        states = self.state_normalizer.normalize(batch["state"])
        features, state = self.encode(batch, states)
        return self.head.loss(
            features,
            state,
            self.action_normalizer.normalize(batch["actions"]),
            batch["action_is_pad"],
            generator=generator,
        )

    def encode(
        self, inputs: Mapping[str, torch.Tensor | list[str]], states: torch.Tensor
    ) -> tuple[BackboneOutput, torch.Tensor]:
        """Backbone features of images + instruction (with the head's queries and prefix, if it has
        any, and the current state if the backbone reads it), and the current state.

        ``states``: normalized ``(B, S)``, or ``(B, H, S)`` recent states with the current one last
        (``env.state_history``); heads and state-reading backbones get the current state, the head's
        :meth:`~policies.base.ActionHead.backbone_prefix` the whole history.
        """
        images = inputs["images"]
        history = states if states.dim() == 3 else states.unsqueeze(1)
        state = history[:, -1]
        queries = self.head.backbone_queries(len(images))
        prefix = self.head.backbone_prefix(history)
        extra = {} if prefix is None else {"prefix": prefix}
        features = self.backbone(images, inputs["instruction"], queries=queries, state=state, **extra)
        return features, state

    @torch.no_grad()
    def predict_action_chunk(
        self, observation: Mapping[str, torch.Tensor | list[str]], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(B, chunk, A)`` actions in the environment's units."""
        if self.augmentation is not None:  # the evaluation half of the training augmentation
            observation = {**observation, "images": self.augmentation.evaluation_view(observation["images"])}
        features, state = self.encode(observation, self.state_normalizer.normalize(observation["state"]))
        chunk = self.head.predict(features, state, generator)
        return self.action_normalizer.unnormalize(chunk)

    @torch.no_grad()
    def select_action(
        self, observation: Mapping[str, torch.Tensor | list[str]], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(B, A)``: the next action, predicting a new chunk every ``n_action_steps`` calls."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(observation, generator)
            self._action_queue.extend(chunk[:, : self.n_action_steps].unbind(dim=1))
        return self._action_queue.popleft()

    def reset(self) -> None:
        """Forget queued actions (call at every episode start)."""
        self._action_queue.clear()

    def optimizer_rules(self) -> OptimizerRules:
        """Modality rules for every trainable parameter, as defined by the backbone and the head."""
        return self.backbone.optimizer_rules().prefixed("backbone") + self.head.optimizer_rules().prefixed(
            "head"
        )
