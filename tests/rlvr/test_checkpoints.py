"""A resumed RLVR run opens its checkpoint's files first: a truncated one is named, with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vla_train.rlvr.checkpoints import check_resumable, last_checkpoint
from vla_train.trainer.checkpoint import CheckpointUnreadable


def write_checkpoint(directory: Path) -> Path:
    directory.mkdir(parents=True)
    save_file({"weight": torch.ones(4, 4)}, directory / "model.safetensors")
    (directory / "trainer_state.json").write_text('{"global_step": 2}')
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": torch.zeros(8)}, directory / name)
    return directory


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.json", "optimizer.pt", "rng_state.pth"])
def test_a_truncated_file_is_named_with_the_checkpoint_to_fall_back_to(name: str, tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "checkpoint-2")
    latest = write_checkpoint(tmp_path / "checkpoint-10")
    assert last_checkpoint(tmp_path) == latest  # by step, not by name
    check_resumable(latest)
    size = (latest / name).stat().st_size
    with (latest / name).open("r+b") as file:
        file.truncate(size // 2)
    with pytest.raises(
        CheckpointUnreadable, match=rf"checkpoint-10/{name} cannot be read .*resume from checkpoint-2"
    ):
        check_resumable(latest)


def test_a_missing_model_is_named_and_with_no_earlier_checkpoint_a_new_run_advised(
    tmp_path: Path,
) -> None:
    only = write_checkpoint(tmp_path / "checkpoint-4")
    (only / "model.safetensors").unlink()
    with pytest.raises(CheckpointUnreadable, match=r"model\.safetensors is missing; no earlier checkpoint"):
        check_resumable(only)
    assert last_checkpoint(tmp_path / "nothing") is None
