"""train_rlvr.py under torchrun with two processes (gloo on CPU): the per-process micro-batches differ, so
one process may have nothing to measure where the other does — the gradient diagnostics and the
evaluations (each process decodes a share) must still keep every collective matched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_measure_and_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    options = ["experiment=rlvr_smoke", "rl.steps=4", "rl.diagnostics_every=1", "rl.eval_every=2"]
    options.append("rl.eval_examples=8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    torchrun.append(f"--master_port={free_port()}")
    command = [*torchrun, "train_rlvr.py", *options, f"hydra.run.dir={run}"]
    env = {**os.environ, "VLA_TRAIN_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "eval/accuracy" in e] == [0, 2, 4]
    assert [e["step"] for e in entries if "reward" in e] == [1, 2, 3, 4]
    # each process decoded every other example; process 0 merged them back into the test split's order
    single = tmp_path / "single"
    command = [sys.executable, "train_rlvr.py", *options, f"hydra.run.dir={single}"]
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=600, env=env).returncode == 0
    for step in (0, 2, 4):
        merged = (run / "eval" / f"step_{step}" / "predictions.jsonl").read_text().splitlines()
        alone = (single / "eval" / f"step_{step}" / "predictions.jsonl").read_text().splitlines()
        prompts = [json.loads(line)["prompt"] for line in merged]
        assert len(merged) == 8 and prompts == [json.loads(line)["prompt"] for line in alone]
    assert sorted(p.name for p in (run / "eval" / "step_4").iterdir()) == ["predictions.jsonl"]
