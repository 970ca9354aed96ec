"""The parallel evaluator: batching over workers, resumable results, retries and recorded errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from fake_envs import make_counting_env, make_unrenderable_env

from vla_train.rollout import EpisodeSpec, ResultsFile, run_episodes, summarize


def specs(tasks: list[str], trials: int = 2, max_steps: int = 10) -> list[EpisodeSpec]:
    return [
        EpisodeSpec(
            task=task,
            trial=trial,
            seed=trial,
            max_steps=max_steps,
            group=task.split("-")[0],
            video=trial == 0,
        )
        for task in tasks
        for trial in range(trials)
    ]


class StepPolicy:
    """Chunks of +1 steps; remembers the batch sizes it was called with."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_after = fail_after

    def __call__(self, inputs: list[dict]) -> np.ndarray:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise KeyboardInterrupt  # the user stops the evaluation
        self.batches.append(len(inputs))
        return np.ones((len(inputs), 4, 2), np.float32)


def test_episodes_run_in_parallel_batches_and_are_recorded(tmp_path: Path) -> None:
    policy = StepPolicy()
    results = ResultsFile(tmp_path / "episodes.jsonl")
    records = run_episodes(
        specs(["a-0", "b-0"]),
        functools.partial(make_counting_env, None),
        policy,
        results,
        num_workers=2,
        replan_steps=2,
        video_dir=tmp_path / "videos",
        progress=False,
    )
    assert len(records) == 4 and all(r["success"] and r["error"] is None for r in records)
    # seed 0 starts at 0 (3 steps to the goal), seed 1 at 1 (2 steps); 2 actions per policy call
    assert sorted((r["trial"], r["steps"]) for r in records) == [(0, 3), (0, 3), (1, 2), (1, 2)]
    assert max(policy.batches) == 2  # one forward pass for both workers
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "a-0_trial000_success.mp4",
        "b-0_trial000_success.mp4",
    ]
    summary = summarize(records)
    assert summary.overall.success_rate == 1.0 and set(summary.groups) == {"a", "b"}
    assert summary.metrics()["eval/success_rate/a"] == 1.0


def test_an_interrupted_evaluation_resumes_without_duplicates(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "episodes.jsonl")
    episodes = specs(["a-0", "a-1"], trials=2)
    factory = functools.partial(make_counting_env, None)
    with pytest.raises(KeyboardInterrupt):
        run_episodes(
            episodes,
            factory,
            StepPolicy(fail_after=2),
            results,
            num_workers=1,
            replan_steps=2,
            progress=False,
        )
    first = results.records()
    assert len(first) == 1  # the episode that finished before the interruption is kept
    with results.path.open("a") as file:
        file.write('{"key": "a-1#1", "task"')  # a line torn by a kill mid-write
    records = run_episodes(
        episodes, factory, StepPolicy(), results, num_workers=2, replan_steps=2, progress=False
    )
    assert sorted(r["key"] for r in records) == sorted(s.key for s in episodes)
    assert records[0] == first[0]
    assert all(json.loads(line) for line in results.path.read_text().splitlines()[2:])


def test_results_of_another_protocol_are_never_mixed_in(tmp_path: Path) -> None:
    """Continuing a results file with other episode settings (max_steps, seed, initial states) would report
    episodes measured two ways as one success rate: refused, naming the episode and the setting."""
    results = ResultsFile(tmp_path / "episodes.jsonl")
    factory = functools.partial(make_counting_env, None)
    run_episodes(specs(["a-0"], trials=2, max_steps=5), factory, StepPolicy(), results, progress=False)
    with pytest.raises(
        ValueError, match=r"a-0#0 run with max_steps=5; this evaluation runs max_steps=10.*--name"
    ):
        run_episodes(specs(["a-0"], trials=3, max_steps=10), factory, StepPolicy(), results, progress=False)
    assert len(results.records()) == 2
    # more trials, or fewer, under the same settings: continued
    records = run_episodes(
        specs(["a-0"], trials=3, max_steps=5), factory, StepPolicy(), results, progress=False
    )
    assert [r["key"] for r in records] == ["a-0#0", "a-0#1", "a-0#2"]


def test_failures_are_retried_once_then_recorded(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "episodes.jsonl")
    records = run_episodes(
        specs(["ok-0", "raise-0", "exit-0", "flaky-0"], trials=1),
        functools.partial(make_counting_env, str(tmp_path)),
        StepPolicy(),
        results,
        num_workers=2,
        replan_steps=4,
        worker_timeout=60,
        progress=False,
    )
    by_task = {r["task"]: r for r in records}
    assert len(records) == 4
    assert by_task["ok-0"]["success"] and by_task["ok-0"]["attempts"] == 1
    assert by_task["flaky-0"]["success"] and by_task["flaky-0"]["attempts"] == 2  # retried after its error
    assert "FloatingPointError" in by_task["raise-0"]["error"] and by_task["raise-0"]["attempts"] == 2
    assert "FloatingPointError: physics diverged (raised at " in by_task["raise-0"]["error"]
    assert "fake_envs.py:39 in step)" in by_task["raise-0"]["error"]  # where, not only what
    assert "exited with code 3" in by_task["exit-0"]["error"] and by_task["exit-0"]["attempts"] == 2
    assert summarize(records).overall.errors == 2


def test_an_env_that_is_not_a_rollout_env_is_named_with_what_it_lacks(tmp_path: Path) -> None:
    records = run_episodes(
        specs(["ok-0"], trials=1),
        make_unrenderable_env,
        StepPolicy(),
        ResultsFile(tmp_path / "episodes.jsonl"),
        worker_timeout=60,
        progress=False,
    )
    assert "Unrenderable is not a RolloutEnv: it lacks ['render']" in records[0]["error"]


def test_bad_inputs_fail_before_any_worker_starts(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "episodes.jsonl")
    factory = functools.partial(make_counting_env, None)
    with pytest.raises(ValueError, match="unique"):
        run_episodes(specs(["a"]) + specs(["a"]), factory, StepPolicy(), results, progress=False)
    with pytest.raises(ValueError, match="replan_steps"):
        run_episodes(specs(["a"]), factory, StepPolicy(), results, replan_steps=0, progress=False)


class CountingAdapter:
    """The evaluation side of an env adapter over :class:`fake_envs.CountingEnv` tasks."""

    def __init__(self, tasks: list[str]) -> None:
        from omegaconf import OmegaConf

        self.tasks = tasks
        self.cfg = OmegaConf.create(
            {"name": "counting", "n_action_steps": 2, "eval": {"num_workers": 1}, "simulator": {}}
        )

    def evaluation_episodes(self) -> list[EpisodeSpec]:
        return specs(self.tasks)

    def env_factory(self):
        return functools.partial(make_counting_env, None)


def test_an_evaluation_where_every_episode_errors_fails_instead_of_reporting_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from vla_train import evaluation

    monkeypatch.setattr(evaluation, "local_policy_fn", lambda policy: StepPolicy())
    policy = torch.nn.Linear(1, 1)
    with pytest.raises(evaluation.EvaluationFailed, match=r"all 2 evaluation episodes.*physics diverged"):
        evaluation.evaluate_policy(policy, CountingAdapter(["raise"]), tmp_path / "broken")
    during_training = evaluation.evaluate_policy(
        policy, CountingAdapter(["raise"]), tmp_path / "periodic", fail_if_all_errored=False
    )
    assert during_training["eval/errors"] == during_training["eval/episodes"] == 2  # logged, run goes on
    metrics = evaluation.evaluate_policy(policy, CountingAdapter(["raise", "reach"]), tmp_path / "half")
    assert metrics["eval/errors"] == 2 and metrics["eval/episodes"] == 4  # some errors: still measured


def test_a_results_directory_of_the_users_is_refused_and_foreign_records_are_named(tmp_path: Path) -> None:
    from vla_train.evaluation import check_results_directory
    from vla_train.rollout import ResultsFile

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"mine holds files no evaluation wrote \(notes\.txt\)"):
        check_results_directory(mine)
    assert (mine / "notes.txt").read_text() == "my notes"
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "protocol.yaml").write_text("name: x\n")
    check_results_directory(ours)  # an interrupted evaluation's own files: continued
    check_results_directory(tmp_path / "new")
    foreign = tmp_path / "episodes.jsonl"
    foreign.write_text('{"my": "own results"}\n')
    with pytest.raises(ValueError, match=r"episodes\.jsonl:1: not an episode record"):
        ResultsFile(foreign).finished()


def test_env_workers_leave_ctrl_c_to_the_evaluator() -> None:
    """Ctrl-C reaches the whole process group: the workers ignore it (no traceback from each of them
    mid-step), and the evaluator, which gets it too, stops and closes them."""
    import os
    import signal

    from vla_train.rollout.worker import EnvWorker

    worker = EnvWorker(0, functools.partial(make_counting_env, None), None, timeout=60.0)
    try:
        worker.send("reset", specs(["a-0"])[0])
        assert worker.receive()[0] == "observation"
        os.kill(worker.process.pid, signal.SIGINT)
        worker.send("act", np.ones((1, 2), np.float32))
        assert worker.receive()[0] == "observation" and worker.process.is_alive()
    finally:
        worker.close()
    assert worker.process.exitcode == 0
