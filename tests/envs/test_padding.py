"""env.action_padding and the OpenVLA bounds: what a chunk past an episode's end holds."""

from __future__ import annotations

import pytest
import torch

from envs.padding import TrainedPadding, complete_chunk_indices, zero_motion_padding
from policies.vla_policy import Normalizer


def test_complete_chunks_keep_the_frames_whose_chunk_lies_in_their_episode() -> None:
    episodes = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert complete_chunk_indices(episodes, 1) == list(range(9))
    assert complete_chunk_indices(episodes, 3) == [0, 1, 4]  # episode 2 is shorter than a chunk
    assert complete_chunk_indices(episodes, 10) == []


def test_zero_motion_zeroes_the_padded_deltas_and_keeps_the_gripper() -> None:
    actions = torch.arange(12.0).view(3, 4) + 1
    is_pad = torch.tensor([False, True, True])
    padded, flags = zero_motion_padding(actions, is_pad, motion_dims=3)
    assert torch.equal(padded[0], actions[0]) and torch.equal(padded[1:, :3], torch.zeros(2, 3))
    assert torch.equal(padded[:, 3], actions[:, 3]) and not flags.any()
    assert torch.equal(actions, torch.arange(12.0).view(3, 4) + 1)  # the frame's own tensor untouched

    frame = {"actions": actions, "action_is_pad": is_pad, "state": torch.ones(2)}
    sample = TrainedPadding(lambda frame: dict(frame), motion_dims=3)(frame)
    assert torch.equal(sample["actions"], padded) and torch.equal(sample["state"], torch.ones(2))
    assert not sample["action_is_pad"].any()
    repeated = TrainedPadding(lambda frame: dict(frame))(frame)  # openpi's: lerobot's values, trained on
    assert torch.equal(repeated["actions"], actions) and not repeated["action_is_pad"].any()


def test_bounds_q99_is_openvlas_normalization_clipped() -> None:
    normalizer = Normalizer(2, "bounds_q99")
    normalizer.set_statistics({"q01": [-1.0, 0.0], "q99": [1.0, 2.0]}, "action")
    x = torch.tensor([[0.5, 1.5], [3.0, -4.0]])
    expected = (2 * (x - torch.tensor([-1.0, 0.0])) / (torch.tensor([2.0, 2.0]) + 1e-8) - 1).clamp(-1, 1)
    torch.testing.assert_close(normalizer.normalize(x), expected)
    torch.testing.assert_close(normalizer.unnormalize(normalizer.normalize(x[:1])), x[:1])
    bounds = torch.tensor([[-1.0, 0.0], [1.0, 2.0]])  # a gripper's ±1 (column 0) maps to itself
    torch.testing.assert_close(normalizer.normalize(bounds), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_zero_motion_needs_delta_actions(tmp_path) -> None:
    from helpers import compose_train

    from vla_train.training import build_env_adapter

    cfg = compose_train(["env.action_padding=zero_motion", f"env.dataset.root={tmp_path / 'lift'}"], tmp_path)
    with pytest.raises(ValueError, match=r"env\.action_padding=zero_motion"):
        build_env_adapter(cfg.env).training_data()
