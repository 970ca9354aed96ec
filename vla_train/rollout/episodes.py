"""What one evaluation episode is, and the append-only file that records finished episodes."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode of a protocol; everything a worker needs to reproduce it.

    Attributes:
        task: the key the env factory builds an environment from (e.g. ``libero_object/3``).
        trial: index of the trial within the task.
        seed: seed applied to the environment before the episode.
        max_steps: policy steps before the episode counts as a failure.
        init_state: index of the task's fixed initial state, when the benchmark has them.
        group: what results are aggregated by besides the task (suite, perturbation category).
        video: record this episode as an MP4.
    """

    task: str
    trial: int
    seed: int
    max_steps: int
    init_state: int | None = None
    group: str = ""
    video: bool = False

    @property
    def key(self) -> str:
        return f"{self.task}#{self.trial}"


#: what an :class:`EpisodeSpec` fixes about how its episode runs (not which episode it is)
PROTOCOL_FIELDS = ("seed", "max_steps", "init_state")


class ResultsFile:
    """``episodes.jsonl``: one JSON line per finished episode, flushed and fsync'ed when it ends.

    Re-running an evaluation reads it first and skips the episodes it holds, so an interrupted run
    loses at most the episodes in flight. A torn last line (killed mid-write) is ignored.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a killed process was writing
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError(
                    f"{self.path}:{number}: not an episode record (no 'key'); this file was not written by "
                    "an evaluation: results go elsewhere (scripts/eval.py --name)"
                )
            records.append(record)
        return records

    def finished(self) -> set[str]:
        return {record["key"] for record in self.records()}

    def check_same_protocol(self, specs: Sequence[EpisodeSpec]) -> None:
        """Every finished episode of ``specs`` was run as its spec says (seed, step limit, initial state):
        continuing a file measured under other settings would report two protocols as one success rate.
        More or fewer trials or tasks are fine: episodes are keyed by task and trial."""
        wanted = {spec.key: spec for spec in specs}
        for record in self.records():
            spec = wanted.get(record["key"])
            if spec is None:
                continue
            differ = [f for f in PROTOCOL_FIELDS if f in record and record[f] != getattr(spec, f)]
            if differ:
                then = ", ".join(f"{f}={record[f]}" for f in differ)
                now = ", ".join(f"{f}={getattr(spec, f)}" for f in differ)
                raise ValueError(
                    f"{self.path} holds episode {record['key']} run with {then}; this evaluation runs {now}: "
                    "results of two protocols would be mixed. Evaluate under another name "
                    "(scripts/eval.py --name) or with the settings those episodes used"
                )

    def append(self, spec: EpisodeSpec, **outcome: Any) -> dict[str, Any]:
        record = {"key": spec.key, **asdict(spec), **outcome}
        torn = self._ends_mid_line()
        with self.path.open("a") as file:
            if torn:  # keep the new record off the half-written line
                file.write("\n")
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())
        return record

    def _ends_mid_line(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
