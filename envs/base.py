"""What every environment provides: its training data and the transforms shared by training and rollout.

As in openpi, the mapping between an environment's raw observations/actions and the policy's inputs is
one small piece of code per environment, used both by the data loader (on dataset frames) and by the
evaluator (on live observations), so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig


@dataclass
class TrainingData:
    """A map-style dataset of policy samples plus what the policy needs to normalize them."""

    dataset: torch.utils.data.Dataset
    stats: Mapping[str, Mapping[str, torch.Tensor]]
    state_key: str
    action_key: str


class EnvAdapter:
    """Base class of ``env.adapter`` classes; built with the whole ``env`` config group.

    A policy sample / observation is a dict with ``images`` ``(cameras, 3, H, W)`` float in [0, 1],
    ``state`` ``(S,)`` float, ``instruction`` str, and for training ``actions`` ``(chunk, A)`` and
    ``action_is_pad`` ``(chunk,)``.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    # --- data -------------------------------------------------------------------------------------
    def training_data(self) -> TrainingData:
        raise NotImplementedError

    # --- rollouts ---------------------------------------------------------------------------------
    def make_env(self) -> Any:
        """A rollout environment (simulator imported lazily) with ``reset(seed) -> observation``,
        ``step(action) -> (observation, success, done)``, ``render() -> HxWx3 uint8`` and ``close()``."""
        raise NotImplementedError

    def observation_to_policy(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Live observation → one unbatched policy input (the same layout as training samples)."""
        raise NotImplementedError

    def action_to_env(self, action: np.ndarray) -> np.ndarray:
        """One policy action ``(A,)`` → the simulator's action."""
        return action
