"""LIBERO-Plus: which perturbed tasks to run, as episodes, and the Table 1 aggregation of the results.

LIBERO-Plus (Fei et al., 2025) ships ``task_classification.json``: per suite, every perturbed task
with its 1-based ``id`` (``id − 1`` is its index in the installed benchmark), ``name``, perturbation
``category`` (seven dimensions) and ``difficulty_level``. Its protocol is **one trial per task**,
from initial state 0 of the task (LIBERO-Plus maps each perturbed task to its unperturbed task's
initial states itself), with LIBERO's step limits per suite.

No torch: env clients in the LIBERO-Plus environment import it.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.libero.env import task_key
from envs.libero.runtime import installed_benchmark_file
from vla_train.rollout.episodes import EpisodeSpec

#: Table 1's columns, in its order, for LIBERO-Plus's category names.
CATEGORY_COLUMNS = {
    "Camera Viewpoints": "Camera",
    "Robot Initial States": "Robot",
    "Language Instructions": "Language",
    "Light Conditions": "Light",
    "Background Textures": "Background",
    "Sensor Noise": "Noise",
    "Objects Layout": "Layout",
}
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


@dataclass(frozen=True)
class PlusTask:
    suite: str
    index: int
    name: str
    category: str
    difficulty: int | None


def installed_task_list() -> Path:
    """``task_classification.json`` of the LIBERO-Plus installed as ``libero`` in this environment."""
    path = installed_benchmark_file("task_classification.json")
    if path is None:
        raise FileNotFoundError("LIBERO-Plus is not installed here; pass the task list's path instead")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the installed `libero` is not LIBERO-Plus")
    return path


def load_task_list(path: str | Path | None = None) -> list[PlusTask]:
    """Every perturbed task of the list (the installed one when ``path`` is None)."""
    raw = json.loads(Path(path or installed_task_list()).read_text())
    tasks = []
    for suite, entries in raw.items():
        for entry in entries:
            if entry["category"] not in CATEGORY_COLUMNS:
                raise ValueError(f"unknown LIBERO-Plus category {entry['category']!r} (task {entry['name']})")
            tasks.append(
                PlusTask(
                    suite,
                    int(entry["id"]) - 1,
                    entry["name"],
                    entry["category"],
                    entry.get("difficulty_level"),
                )
            )
    return tasks


def select_tasks(
    tasks: Sequence[PlusTask],
    suites: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
    per_category: int | None = None,
    seed: int = 0,
) -> list[PlusTask]:
    """The whole benchmark, some suites, some categories (names or Table 1 columns), and/or a sample
    of ``per_category`` tasks per category (stratified, reproducible with ``seed``)."""
    wanted_suites = set(suites) if suites else set(SUITES)
    unknown = wanted_suites - set(SUITES)
    if unknown:
        raise ValueError(f"unknown LIBERO-Plus suites {sorted(unknown)}; known: {list(SUITES)}")
    wanted_categories = set(CATEGORY_COLUMNS)
    if categories:
        by_column = {column.lower(): name for name, column in CATEGORY_COLUMNS.items()}
        wanted_categories = set()
        for category in categories:
            name = category if category in CATEGORY_COLUMNS else by_column.get(category.lower())
            if name is None:
                raise ValueError(
                    f"unknown LIBERO-Plus category {category!r}; use one of {list(CATEGORY_COLUMNS.values())}"
                )
            wanted_categories.add(name)
    chosen = [t for t in tasks if t.suite in wanted_suites and t.category in wanted_categories]
    if per_category is not None:
        if per_category < 1:
            raise ValueError(f"per_category must be >= 1, got {per_category}")
        by_category: dict[str, list[PlusTask]] = defaultdict(list)
        for task in chosen:
            by_category[task.category].append(task)
        rng = random.Random(seed)
        chosen = [
            task
            for category in sorted(by_category)
            for task in rng.sample(by_category[category], min(per_category, len(by_category[category])))
        ]
    return sorted(chosen, key=lambda t: (SUITES.index(t.suite), t.index))


def plus_episodes(
    tasks: Sequence[PlusTask], max_steps: Mapping[str, int], seed: int = 7, videos_per_category: int = 0
) -> list[EpisodeSpec]:
    """One episode per task (initial state 0), grouped by category for the report."""
    videos: dict[str, int] = defaultdict(int)
    specs = []
    for task in tasks:
        videos[task.category] += 1
        specs.append(
            EpisodeSpec(
                task=task_key(task.suite, task.index),
                trial=0,
                seed=seed,
                max_steps=max_steps[task.suite],
                init_state=0,
                group=task.category,
                video=videos[task.category] <= videos_per_category,
            )
        )
    return specs


def table1_row(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Success rates in Table 1's layout: the LIBERO-Plus average over all episodes, then one column
    per perturbation category (None where a category was not run, or where every episode of it ended
    in an error: a simulator that could not run has no success rate, not 0 %)."""
    totals: dict[str, list[int]] = {column: [0, 0, 0] for column in CATEGORY_COLUMNS.values()}
    for record in records:
        column = CATEGORY_COLUMNS[record["group"]]
        totals[column][0] += bool(record.get("success"))
        totals[column][1] += 1
        totals[column][2] += record.get("error") is not None
    episodes = sum(count for _, count, _ in totals.values())
    errors = sum(errored for _, _, errored in totals.values())
    row: dict[str, float | None] = {
        "LIBERO-Plus": sum(s for s, _, _ in totals.values()) / episodes if episodes > errors else None
    }
    row.update({column: (s / n if n > e else None) for column, (s, n, e) in totals.items()})
    return row
