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
    errored = table1_row(
        [*records, {"group": "Light Conditions", "success": False, "error": "FileNotFoundError"}]
    )
    assert errored["Light"] is None and errored["LIBERO-Plus"] == 0.6  # errored: no rate, not 0 %
    assert table1_row([{"group": "Light Conditions", "success": False, "error": "x"}])["LIBERO-Plus"] is None


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


def test_every_plus_task_gives_the_policy_an_instruction_without_its_perturbation_suffix(tasks) -> None:
    """LIBERO-Plus sets ``language`` from the task's name, suffix included: the policy must get the
    unperturbed task's instruction (as hf-libero words it), or the rewritten one of a Language task."""
    from envs.libero.runtime import suite_instructions, task_instruction

    instructions = {suite: suite_instructions(suite) for suite in {t.suite for t in tasks}}
    for task in tasks:
        language = " ".join(task.name.split("_"))  # what LIBERO-Plus's task table holds
        instruction = task_instruction(task.name, language)
        if task.category == "Language Instructions":
            assert instruction == language, task.name
        else:
            assert instruction in instructions[task.suite], (task.name, instruction)
    for suite in ("libero_spatial", "libero_10", "libero_90"):  # LIBERO's own names stay as they are
        for instruction in suite_instructions(suite):
            name = instruction.replace(" ", "_")
            assert task_instruction(name, instruction) == instruction


def test_a_plus_install_must_hold_its_assets_in_its_own_package(tmp_path: Path, monkeypatch) -> None:
    """LIBERO-Plus ignores config.yaml's ``assets``: pointing elsewhere is an error naming the place."""
    import importlib.machinery
    import importlib.util

    from envs.libero.runtime import CONFIG_VARIABLE, LiberoSetupError, write_libero_config

    monkeypatch.delenv(CONFIG_VARIABLE, raising=False)  # restored afterwards: the call below sets it

    package = tmp_path / "LIBERO-plus" / "libero"
    (package / "libero" / "benchmark").mkdir(parents=True)
    (package / "libero" / "benchmark" / "task_classification.json").write_text("{}")
    spec = importlib.machinery.ModuleSpec("libero", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "libero" else None)
    elsewhere = tmp_path / "assets"
    elsewhere.mkdir()
    with pytest.raises(LiberoSetupError, match=r"loads its assets from .*libero/libero/assets only"):
        write_libero_config(tmp_path / "config", elsewhere.resolve())
    (package / "libero" / "assets").symlink_to(elsewhere)
    config = write_libero_config(tmp_path / "config", elsewhere.resolve())
    assert f"assets: {elsewhere.resolve()}" in config.read_text()
