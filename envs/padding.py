"""What a training sample's action chunk holds where it runs past its episode's end (``env.action_padding``).

lerobot's loader fills those steps with the last frame's action and flags them (``action_is_pad``); the
paper's official pipelines differ, and a preset reproduces each:

- ``masked``: the flagged steps are left out of the loss (lerobot's own policies, our default).
- ``repeat_last``: lerobot's values, the last action repeated, trained on like any other step — openpi
  (its LeRobot loader ignores the flags; its losses have no mask), so π0.5's official run.
- ``zero_motion``: no motion and the last gripper command, trained on like any other step — VLANeXt's
  ``src/datasets/libero_act.py`` (for delta actions, where zero means staying put).
- ``complete_chunks``: no such samples; a frame is a training sample only if its whole chunk lies in its
  episode — OpenVLA-OFT's ``chunk_act_obs`` (``effective_traj_len = traj_len − future_action_window_size``),
  which VLA-Adapter trains with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

ACTION_PADDINGS = ("masked", "repeat_last", "zero_motion", "complete_chunks")


def zero_motion_padding(
    actions: torch.Tensor, is_pad: torch.Tensor, motion_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded steps' first ``motion_dims`` (the end-effector delta) zeroed; the rest — the gripper
    command, repeated from the last frame by lerobot — kept; nothing flagged any more."""
    actions = actions.clone()
    actions[is_pad, :motion_dims] = 0
    return actions, torch.zeros_like(is_pad)


class TrainedPadding:
    """A training transform whose padded chunk steps are trained on: as lerobot filled them
    (``motion_dims=None``, ``repeat_last``) or with :func:`zero_motion_padding`. A class: data workers
    pickle it."""

    def __init__(
        self, transform: Callable[[Mapping[str, Any]], dict[str, Any]], motion_dims: int | None = None
    ) -> None:
        self.transform, self.motion_dims = transform, motion_dims

    def __call__(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        sample = self.transform(frame)
        actions, is_pad = sample["actions"], sample["action_is_pad"]
        if self.motion_dims is None:
            return {**sample, "action_is_pad": torch.zeros_like(is_pad)}
        actions, is_pad = zero_motion_padding(actions, is_pad, self.motion_dims)
        return {**sample, "actions": actions, "action_is_pad": is_pad}


def complete_chunk_indices(episode_of_frame: Sequence[int], chunk_size: int) -> list[int]:
    """Positions of the frames whose next ``chunk_size`` frames (their own included) are all of their
    episode; ``episode_of_frame`` lists each frame's episode, episodes contiguous as lerobot stores them."""
    episodes = np.asarray(episode_of_frame)
    last = len(episodes) - chunk_size  # the last frame that has chunk_size frames from it on
    if last < 0:
        return []
    same = episodes[: last + 1] == episodes[chunk_size - 1 :]
    return np.flatnonzero(same).tolist()
