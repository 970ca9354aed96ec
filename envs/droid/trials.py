"""Real-robot trials as Table A3 runs them: tasks × trials from randomized initial poses, at most 300
control steps each, success judged by the operator; recorded like simulated evaluations.

On the robot laptop, with the fine-tuned policy served from the GPU host (``scripts/serve.py``):

    python -m envs.droid.trials --server ws://<gpu host>:8765 --output results/pi05-droid-pion \\
        --exterior <serial>_left --wrist <serial>_left \\
        --task "put the cucumber on the plate" --task "put the cube on the plate" \\
        --task "put the cube in the bowl" --trials 30

Before each trial the operator randomizes the scene and presses Enter; during it, Ctrl-C stops the
robot early (task done, or hopeless); after it, they answer y/n. Each answer is appended to
``episodes.jsonl`` at once, so an interrupted session resumes where it stopped. Copy the file to
``<run>/eval/robot/`` and ``scripts/report.py`` puts it in Table 3 (success per optimizer and task).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from envs.droid.client import DroidPolicyClient, run_episode
from vla_train.rollout import EpisodeSpec, ResultsFile, summarize

#: Table A3: trials per (optimizer, task) and the control-step limit of each
PAPER_TRIALS, PAPER_MAX_STEPS = 30, 300
ROBOT_GROUP = "robot"


class Operator:
    """The person at the robot: asked to reset the scene and to judge each trial (stdin by default)."""

    def __init__(self, ask: Callable[[str], str] = input) -> None:
        self.ask = ask

    def reset_scene(self, task: str, trial: int, trials: int) -> None:
        self.ask(f"[{task} · trial {trial + 1}/{trials}] randomize the initial pose, then press Enter ")

    def judge(self) -> bool:
        while True:
            answer = self.ask("success? [y/n] ").strip().lower()
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")


def run_trials(
    env: Any,
    client: DroidPolicyClient,
    tasks: Sequence[str],
    results: ResultsFile,
    operator: Operator,
    exterior_camera: str,
    wrist_camera: str,
    trials: int = PAPER_TRIALS,
    max_steps: int = PAPER_MAX_STEPS,
    control_hz: float = 15.0,
) -> list[dict[str, Any]]:
    """Run every (task, trial) not yet in ``results``; returns all records of ``results``.

    ``env`` is DROID's ``RobotEnv`` (``reset()`` homes the arm, ``get_observation()``, ``step()``).
    """
    if not tasks:
        raise ValueError("name at least one task (the instruction the policy is given)")
    checkpoint = str(client.policy.metadata.get("checkpoint", ""))
    finished = results.finished()
    for task in tasks:
        for trial in range(trials):
            spec = EpisodeSpec(task=task, trial=trial, seed=trial, max_steps=max_steps, group=ROBOT_GROUP)
            if spec.key in finished:
                continue
            operator.reset_scene(task, trial, trials)
            env.reset()
            requests = len(client.latencies)
            start = time.perf_counter()
            episode = run_episode(
                env, client, task, exterior_camera, wrist_camera, max_steps, control_hz=control_hz
            )
            seconds = time.perf_counter() - start
            latencies = client.latencies[requests:]
            results.append(
                spec,
                success=operator.judge(),
                steps=episode.steps,
                stopped_by_operator=episode.stopped_by_operator,
                seconds=round(seconds, 2),
                mean_latency_ms=round(1000 * float(np.mean(latencies)), 1) if latencies else None,
                checkpoint=checkpoint,
                error=None,
            )
    return results.records()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the policy server, ws://<host>:<port>")
    parser.add_argument("--output", type=Path, required=True, help="directory of episodes.jsonl")
    parser.add_argument("--task", action="append", required=True, help="an instruction; repeat per task")
    parser.add_argument("--exterior", required=True, help="RobotEnv image key of the exterior camera")
    parser.add_argument("--wrist", required=True, help="RobotEnv image key of the wrist camera")
    parser.add_argument("--trials", type=int, default=PAPER_TRIALS)
    parser.add_argument("--max-steps", type=int, default=PAPER_MAX_STEPS)
    parser.add_argument("--hz", type=float, default=15.0)
    args = parser.parse_args(argv)

    from droid.robot_env import RobotEnv  # DROID's control stack: only on the robot laptop

    client = DroidPolicyClient(args.server)
    env = RobotEnv(action_space=client.action_space, gripper_action_space="position")
    results = ResultsFile(args.output / "episodes.jsonl")
    try:
        records = run_trials(
            env,
            client,
            args.task,
            results,
            Operator(),
            args.exterior,
            args.wrist,
            trials=args.trials,
            max_steps=args.max_steps,
            control_hz=args.hz,
        )
    finally:
        client.close()
    Console().print(summarize(records).table("robot trials"))
    print(f"episodes: {results.path}")


if __name__ == "__main__":
    main()
