"""Checkpoints that resume exactly and never unpickle code.

Layout of ``<run>/checkpoints/step_0000500/``:

- ``model.safetensors``: the unwrapped policy's weights (normalization statistics included);
- ``optimizer.pt``, ``scheduler.pt``: state dicts, read back with ``torch.load(weights_only=True)``;
- ``rng.pt``: Python, NumPy and torch (CPU and CUDA) generator states as plain tensors and lists;
- ``trainer_state.json``: step, data position (epoch, batches into the epoch) and counters.

accelerate's ``save_state`` would pickle RNG states and read them back with full unpickling, so the
trainer uses accelerate for devices and distribution and writes its own checkpoint. A checkpoint is
written to a temporary directory and renamed into place, so an interrupted save never leaves a
half-written checkpoint behind that a later resume would pick up.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    step: int = 0
    epoch: int = 0
    batches_into_epoch: int = 0
    skipped_steps: int = 0
    nonfinite_streak: int = 0
    wandb_run_id: str | None = None


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    keep: int | None = None,
) -> Path:
    """Write a checkpoint for ``state.step`` atomically; keep only the newest ``keep`` ones."""
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(state.step)
    partial = root / (final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(model, str(partial / "model.safetensors"))
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    torch.save(scheduler.state_dict(), partial / "scheduler.pt")
    torch.save(capture_rng_state(), partial / "rng.pt")
    (partial / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    if keep is not None and keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and re.fullmatch(r"step_\d+", p.name) and (p / STATE_FILE).is_file()
    ]  # step_N.partial: a checkpoint still (or never) being written
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_").split(".")[0]))


def resolve_resume(resume: bool | str | None, run_dir: Path) -> Path | None:
    """``trainer.resume``: false → None; true → the run's latest checkpoint; a path → that checkpoint
    (or the latest one inside that run directory)."""
    if resume in (None, False, "false", "False"):
        return None
    if resume in (True, "true", "True"):
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            raise FileNotFoundError(
                f"trainer.resume=true but {Path(run_dir) / CHECKPOINT_DIR} has no checkpoint"
            )
        return checkpoints[-1]
    path = Path(str(resume))
    if (path / STATE_FILE).is_file():
        return path
    checkpoints = list_checkpoints(path)
    if checkpoints:
        return checkpoints[-1]
    raise FileNotFoundError(
        f"trainer.resume={resume!r}: neither a checkpoint nor a run directory with checkpoints"
    )


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    map_location: Any = "cpu",
) -> TrainerState:
    """Restore everything :func:`save_checkpoint` wrote; returns the trainer state."""
    path = Path(path)
    weights = path / "model.safetensors"
    with _reading(weights), safe_open(str(weights), framework="pt"):
        pass  # a torn or foreign file fails here, on its header, naming the file
    with _fitting(weights, "model"):
        missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {sorted(missing)[:10]}, "
            f"unexpected {sorted(unexpected)[:10]} — was it saved with another backbone/head config?"
        )
    for name, target, apply in (
        ("optimizer.pt", "optimizer", optimizer.load_state_dict),
        ("scheduler.pt", "learning-rate schedule", scheduler.load_state_dict),
        ("rng.pt", "machine's random generators", restore_rng_state),
    ):
        with _reading(path / name):
            state = torch.load(path / name, map_location=map_location, weights_only=True)
        with _fitting(path / name, target):
            apply(state)
    with _reading(path / STATE_FILE):
        saved = json.loads((path / STATE_FILE).read_text())
    with _fitting(path / STATE_FILE, "trainer"):
        return TrainerState(**saved)


class CheckpointUnreadable(RuntimeError):
    """A file of a checkpoint is missing, truncated or not what this version writes."""


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """A failure to read or parse ``file``: name it, and how to resume from an earlier checkpoint."""
    try:
        yield
    except Exception as error:
        raise CheckpointUnreadable(
            f"{file} cannot be read ({_first_line(error)}); resume from an earlier checkpoint with "
            f"trainer.resume=<its directory> under {file.parent.parent}"
        ) from error


@contextlib.contextmanager
def _fitting(file: Path, target: str) -> Iterator[None]:
    """A readable file that does not fit: the config (or the code, or the machine) differs from the run's."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise RuntimeError(
            f"{file} does not fit this {target} ({_first_line(error)}): was the run made with another "
            "config or version? Earlier checkpoints of the run will not fit either"
        ) from error


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def capture_rng_state() -> dict[str, Any]:
    """Generator states as tensors, ints and lists only (loadable with ``weights_only=True``)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
