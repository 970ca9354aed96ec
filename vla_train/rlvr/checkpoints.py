"""The checkpoint an RLVR run resumes from (TRL's ``checkpoint-<step>``), opened before training starts.

Transformers' Trainer reads these files halfway into ``train()`` and fails on a truncated one with a
bare deserialization error (``SafetensorError: incomplete metadata``, ``PytorchStreamReader failed``,
``OSError: Invalid argument``); :func:`check_resumable` names the file and the earlier checkpoints left.
The checks are cheap (a safetensors header, a zip directory, a JSON parse), never a full load.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open
from transformers.trainer_utils import get_last_checkpoint

from vla_train.trainer.checkpoint import CheckpointUnreadable


def _safetensors(path: Path) -> None:
    with safe_open(str(path), framework="pt") as file:
        list(file.keys())


def _torch_archive(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:  # torch.save's format: a truncated file has no central directory
        archive.namelist()


def _json(path: Path) -> None:
    json.loads(path.read_text())


#: file → (required, reader): what Trainer reads back on resume
FILES: dict[str, tuple[bool, Callable[[Path], None]]] = {
    "model.safetensors": (True, _safetensors),
    "trainer_state.json": (True, _json),
    "optimizer.pt": (False, _torch_archive),
    "scheduler.pt": (False, _torch_archive),
    "rng_state.pth": (False, _torch_archive),
}


def last_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint Trainer resumes from (the highest step), or None."""
    found = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    return Path(found) if found else None


def check_resumable(checkpoint: Path) -> None:
    """Every file of ``checkpoint`` that a resume reads opens; else :class:`CheckpointUnreadable` names it."""
    earlier = sorted(
        (p.name for p in checkpoint.parent.glob("checkpoint-*") if p != checkpoint and p.is_dir()),
        key=lambda name: int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else -1,
    )
    remedy = (
        f"move {checkpoint.name} out of {checkpoint.parent} to resume from {earlier[-1]}"
        if earlier
        else f"no earlier checkpoint in {checkpoint.parent}: start a new run with run_name=<new name>"
    )
    for name, (required, read) in FILES.items():
        path = checkpoint / name
        if not path.exists():
            if required:
                raise CheckpointUnreadable(f"{path} is missing; {remedy}")
            continue
        try:
            read(path)
        except Exception as error:
            first = (str(error).strip().splitlines() or [""])[0]
            raise CheckpointUnreadable(
                f"{path} cannot be read ({type(error).__name__}: {first}); {remedy}"
            ) from error
