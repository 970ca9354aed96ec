"""LIBERO-Plus task selection and Table 1 aggregation, on the real task list."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from libero_data import REPO_ROOT

from envs.libero.env import PROTOCOL_MAX_STEPS
from envs.libero.plus import CATEGORY_COLUMNS, load_task_list, plus_episodes, select_tasks, table1_row

TASK_LIST = REPO_ROOT.parent / "shared" / "libero-plus" / "task_classification.json"


@pytest.fixture(scope="module")
def tasks():
    if not TASK_LIST.is_file():
        pytest.skip(f"LIBERO-Plus task list not found at {TASK_LIST}")
    return load_task_list(TASK_LIST)


def test_the_task_list_has_the_benchmark_shape(tasks) -> None:
    assert len(tasks) == 10_030
    assert set(Counter(t.category for t in tasks)) == set(CATEGORY_COLUMNS)
    first = tasks[0]
    assert (first.suite, first.index, first.name) == (
        "libero_spatial",
        0,
        next(t.name for t in tasks if t.suite == "libero_spatial" and t.index == 0),
    )
    per_suite = Counter(t.suite for t in tasks)
    for suite, count in per_suite.items():  # ids are 1..n without gaps: index = id − 1
        assert sorted(t.index for t in tasks if t.suite == suite) == list(range(count))


def test_selection_by_suite_category_and_stratified_sample(tasks) -> None:
    camera = select_tasks(tasks, suites=["libero_object"], categories=["Camera"])
    assert camera and {(t.suite, t.category) for t in camera} == {("libero_object", "Camera Viewpoints")}
    assert select_tasks(tasks, categories=["Camera Viewpoints"]) == select_tasks(tasks, categories=["camera"])
    sample = select_tasks(tasks, per_category=5, seed=1)
    assert Counter(t.category for t in sample) == dict.fromkeys(CATEGORY_COLUMNS, 5)
    assert (
        sample == select_tasks(tasks, per_category=5, seed=1) != select_tasks(tasks, per_category=5, seed=2)
    )
    assert len(select_tasks(tasks)) == len(tasks)
    with pytest.raises(ValueError, match="unknown LIBERO-Plus category"):
        select_tasks(tasks, categories=["Weather"])
    with pytest.raises(ValueError, match="unknown LIBERO-Plus suites"):
        select_tasks(tasks, suites=["libero_90"])


def test_one_trial_per_task_from_initial_state_zero(tasks) -> None:
    chosen = select_tasks(tasks, suites=["libero_10", "libero_goal"], per_category=3)
    specs = plus_episodes(chosen, PROTOCOL_MAX_STEPS, videos_per_category=1)
    assert len(specs) == len(chosen) == len({s.key for s in specs})
    assert all(s.trial == 0 and s.init_state == 0 and s.seed == 7 for s in specs)
    assert {s.max_steps for s in specs if s.task.startswith("libero_10/")} == {520}
    assert sum(s.video for s in specs) == len(CATEGORY_COLUMNS)  # one per category


def test_table1_row_averages_episodes_and_leaves_missing_categories_empty() -> None:
    records = [
        {"group": "Camera Viewpoints", "success": True},
        {"group": "Camera Viewpoints", "success": False},
        {"group": "Sensor Noise", "success": True},
        {"group": "Sensor Noise", "success": True, "error": None},
    ]
    row = table1_row(records)
    assert list(row) == ["LIBERO-Plus", *CATEGORY_COLUMNS.values()]
    assert row["LIBERO-Plus"] == 0.75 and row["Camera"] == 0.5 and row["Noise"] == 1.0
    assert row["Light"] is None


def test_protocol_step_limits_agree_with_the_configs() -> None:
    from omegaconf import OmegaConf

    for suite, steps in PROTOCOL_MAX_STEPS.items():
        config = OmegaConf.load(Path(REPO_ROOT) / "configs" / "env" / f"{suite}.yaml")
        assert config.eval.max_steps == steps, suite


def test_env_libero_plus_builds_the_selected_episodes(tasks, tmp_path: Path) -> None:
    from helpers import compose_train

    from vla_train.training import build_env_adapter

    cfg = compose_train(
        [
            "env=libero_plus",
            f"env.simulator.plus.task_list={TASK_LIST}",
            "env.simulator.plus.suites=[libero_spatial]",
            "env.simulator.plus.categories=[Light,Layout]",
            "env.simulator.plus.per_category=4",
        ],
        tmp_path,
    )
    specs = build_env_adapter(cfg.env).evaluation_episodes()
    assert Counter(s.group for s in specs) == {"Light Conditions": 4, "Objects Layout": 4}
    assert {s.max_steps for s in specs} == {220} and all(s.task.startswith("libero_spatial/") for s in specs)
