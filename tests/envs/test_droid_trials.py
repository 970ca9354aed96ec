"""Real-robot trials (Table A3) against a fake DROID RobotEnv through the policy server: the operator's
answers are recorded per trial, an interrupted session resumes, Ctrl-C ends an episode early, and the
report turns the trials of several runs into Table 3."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_train
from omegaconf import OmegaConf

from envs.droid.client import DroidPolicyClient
from envs.droid.trials import Operator, run_trials
from vla_train.rollout import ResultsFile
from vla_train.serving.server import PolicyServer

EXTERIOR, WRIST = "11111111_left", "33333333_left"


class FakeRobotEnv:
    """DROID's RobotEnv as far as the client uses it; ``stop_at`` simulates the operator's Ctrl-C."""

    def __init__(self, stop_at: dict[int, int] | None = None) -> None:
        self.resets, self.actions, self.stop_at = 0, [], stop_at or {}

    def reset(self) -> None:
        self.resets += 1
        self.steps = 0

    def get_observation(self) -> dict:
        image = np.zeros((180, 320, 4), np.uint8)
        return {
            "image": {EXTERIOR: image, WRIST: image},
            "robot_state": {"joint_positions": [0.0] * 7, "gripper_position": 0.2},
        }

    def step(self, action: np.ndarray) -> None:
        if self.stop_at.get(self.resets) == self.steps:
            raise KeyboardInterrupt
        self.actions.append(action)
        self.steps += 1


class ScriptedOperator(Operator):
    def __init__(self, answers: list[str]) -> None:
        super().__init__(self._next)
        self.answers, self.prompts = list(answers), []

    def _next(self, prompt: str) -> str:
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        if answer == "^C":
            raise KeyboardInterrupt
        return answer


@pytest.fixture
def server():
    metadata = {
        "state_dim": 8,
        "action_dim": 8,
        "chunk_size": 16,
        "image_size": 32,
        "checkpoint": "ckpt/step_9",
    }
    served = PolicyServer(
        lambda inputs: np.full((len(inputs), 16, 8), 0.7, np.float32), metadata, host="127.0.0.1", port=0
    ).start()
    yield served
    served.stop()


def trials(server, results: ResultsFile, operator: Operator, env: FakeRobotEnv) -> list[dict]:
    client = DroidPolicyClient(server.uri)
    try:
        return run_trials(
            env, client, ["put the cube on the plate", "put the cube in the bowl"], results, operator,
            EXTERIOR, WRIST, trials=2, max_steps=10, control_hz=10_000,
        )  # fmt: skip
    finally:
        client.close()


def test_trials_record_the_operators_verdicts_and_resume(server, tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "robot" / "episodes.jsonl")
    env = FakeRobotEnv(stop_at={2: 3})  # the second trial: stopped by the operator after 3 steps
    # trial 1: Enter, "y"; trial 2: Enter, "maybe" (asked again), "n"; then Ctrl-C at the next reset prompt
    with pytest.raises(KeyboardInterrupt):
        trials(server, results, ScriptedOperator(["", "y", "", "maybe", "n", "^C"]), env)
    first = results.records()
    assert [(r["task"], r["trial"], r["success"]) for r in first] == [
        ("put the cube on the plate", 0, True),
        ("put the cube on the plate", 1, False),
    ]
    assert first[0]["steps"] == 10 and not first[0]["stopped_by_operator"]
    assert first[1]["steps"] == 3 and first[1]["stopped_by_operator"]
    assert first[0]["checkpoint"] == "ckpt/step_9" and first[0]["mean_latency_ms"] > 0
    assert env.actions[0][-1] == 1.0  # gripper command 0.7 > 0.5: closed, as the client maps it
    operator = ScriptedOperator(["", "y", "", "y"])
    records = trials(server, results, operator, FakeRobotEnv())  # a new session: only what is missing
    assert len(records) == 4 and len({r["key"] for r in records}) == 4
    assert "put the cube in the bowl · trial 1/2" in operator.prompts[0] and not operator.answers


def test_report_builds_table_3_from_robot_trials(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from report import write_report

    verdicts = {"adamw": [[1, 0, 0], [0, 0, 1]], "pion": [[1, 1, 1], [1, 1, 0]]}
    for optimizer, per_task in verdicts.items():
        run = tmp_path / "sweep" / optimizer
        cfg = compose_train(["env=droid", f"optimizer={optimizer}"], run)
        (run / "eval" / "robot").mkdir(parents=True)
        OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), run / "config.yaml")
        (run / "metrics.jsonl").write_text(json.dumps({"step": 20000, "train/loss": 0.1}) + "\n")
        results = ResultsFile(run / "eval" / "robot" / "episodes.jsonl")
        from vla_train.rollout import EpisodeSpec

        for task, outcomes in zip(["Cube → Plate", "Cube → Bowl"], per_task, strict=True):
            for trial, success in enumerate(outcomes):
                results.append(EpisodeSpec(task, trial, trial, 300, group="robot"), success=bool(success))
    report = write_report(tmp_path / "sweep", tmp_path / "report").read_text()
    table = report.split("## Real-robot trials (Table 3)")[1]
    assert "| optimizer | Cube → Plate | Cube → Bowl | average | trials per task |" in table
    assert "| adamw | 33.3 | 33.3 | 33.3 | 3/3 |" in table
    assert "| pion | 100.0 | 66.7 | 83.3 | 3/3 |" in table
