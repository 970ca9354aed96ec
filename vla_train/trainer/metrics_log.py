"""Metrics to ``metrics.jsonl`` (always) and to wandb (offline unless asked), from the main process."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends one JSON line per logged step; mirrors to wandb when ``mode`` is not ``disabled``.

    wandb's files stay in ``<run>/wandb`` and its caches under ``<run>/.cache/wandb``, never in the
    user's home. On resume the same wandb run id is reused, so the curve continues.
    """

    def __init__(
        self,
        run_dir: Path,
        mode: str,
        project: str,
        config: Mapping[str, Any],
        entity: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wandb_run = None
        if mode != "disabled":
            # Set before wandb is imported: with dir= alone it still writes logs under ~/.cache/wandb.
            for variable, sub in (
                ("WANDB_DIR", ""),
                ("WANDB_CACHE_DIR", ".cache/wandb"),
                ("WANDB_CONFIG_DIR", ".cache/wandb-config"),
                ("WANDB_DATA_DIR", ".cache/wandb-data"),
                ("WANDB_ARTIFACT_DIR", ".cache/wandb-artifacts"),
            ):
                os.environ.setdefault(variable, str((Path(run_dir) / sub).resolve()))
            import wandb

            self._wandb_run = wandb.init(
                project=project,
                entity=entity,
                name=name,
                tags=tags,
                config=dict(config),
                mode=mode,
                dir=str(run_dir),
                id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(console="off", silent=True),
            )

    @property
    def wandb_run_id(self) -> str | None:
        return self._wandb_run.id if self._wandb_run is not None else None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self._wandb_run is not None:
            self._wandb_run.log(dict(metrics), step=step)

    def truncate_after(self, step: int) -> None:
        """Drop lines past ``step`` (a resumed run rewrites them, so the file holds one curve)."""
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line]
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if number == len(lines):  # torn by a kill mid-write: the last record only
                    log.warning("%s: dropping a torn last line (%d characters)", self.path, len(line))
                    break
                raise ValueError(
                    f"{self.path}, line {number}, is not JSON ({error}); fix or remove it"
                ) from error
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError(
                    f"{self.path}, line {number}, is not a metrics record of this project (no integer "
                    "'step'); fix or remove it"
                )
            if record["step"] <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


class ThroughputWindow:
    """Samples and wall time since the last read: the throughput of the steps between two logs."""

    def __init__(self) -> None:
        self.start, self.samples = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def read(self, batch_size: int) -> tuple[float, float]:
        """``(samples per second, seconds per step of batch_size)``, and start a new window."""
        elapsed = time.perf_counter() - self.start
        result = (self.samples / max(elapsed, 1e-9), elapsed * batch_size / max(self.samples, 1))
        self.start, self.samples = time.perf_counter(), 0
        return result
