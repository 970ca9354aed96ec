"""A 2×2 sweep (two optimizers × two k_p) with the joblib launcher on CPU, and its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from report import find_runs, write_report

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_joblib_sweep_and_report_hold_the_runs_real_numbers(lift_dataset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        "optimizer=muon,pion",
        "optimizer.kp=1,2",
        "trainer=tiny",
        "trainer.steps=4",
        "logger=none",
        f"env.dataset.root={lift_dataset}",
        "env.dataset.generate=false",
        "env.eval.episodes=2",
        "env.eval.max_steps=5",
        "env.eval.videos=0",
        "env.eval.num_workers=1",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = find_runs(sweep)
    assert len(runs) == 4 and {(r.config.optimizer.action, r.config.optimizer.kp) for r in runs} == {
        ("muon", 1),
        ("muon", 2),
        ("pion", 1),
        ("pion", 2),
    }
    report = write_report(sweep, tmp_path / "report").read_text()
    for run in runs:  # every run's own final loss and success rate are in the runs table
        loss = f"{run.last('train/loss'):.4f}"
        assert all(r["error"] is None for r in run.episodes)  # env workers start inside joblib jobs too
        success = sum(r["success"] for r in run.episodes) / len(run.episodes)
        row = next(line for line in report.splitlines() if line.startswith(f"| {run.path.name} |"))
        assert loss in row and f"{100 * success:.1f}" in row and "| 2 |" in row
    assert "| pion kp=1 |" in report  # optimizer × suite table, k_p told apart
    assert (tmp_path / "report" / "grad_erank.png").stat().st_size > 0
    assert (tmp_path / "report" / "step_time.png").stat().st_size > 0


def test_missing_results_are_shown_as_missing(lift_dataset: Path, tmp_path: Path) -> None:
    from helpers import compose_train

    from vla_train import train

    run = tmp_path / "partial"
    train(
        compose_train(
            [
                "trainer=tiny",
                "trainer.steps=2",
                "logger=none",
                "evaluate=false",
                f"env.dataset.root={lift_dataset}",
                "env.dataset.generate=false",
            ],
            run,
        )
    )
    report = write_report(tmp_path, tmp_path / "report").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| partial |"))
    assert "| — |" in row and "| 0.0 |" not in row


def test_an_rlvr_sweep_reports_its_accuracy_curves(tmp_path: Path) -> None:
    """Fig. 6 from a real ``train_rlvr.py -m`` sweep: measured accuracies in the table, curves drawn."""
    import json

    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "train_rlvr.py",
        "-m",
        f"hydra.sweep.dir={sweep}",
        "experiment=rlvr_smoke",
        "optimizer=adamw,pion_per_head",
        "rl.steps=4",
        "rl.eval_every=2",
        "rl.eval_examples=8",
    ]
    env = {**os.environ, "VLA_TRAIN_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = find_runs(sweep)
    assert sorted(run.optimizer for run in runs) == ["adamw", "pion (per-head)"]
    report = write_report(sweep, tmp_path / "report").read_text()
    for run in runs:
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
        accuracy = [json.loads(line)["eval/accuracy"] for line in lines if "eval/accuracy" in line]
        assert len(accuracy) == 3  # before training, step 2, step 4
        row = next(line for line in report.splitlines() if line.startswith(f"| {run.path.name} |"))
        assert f"| {100 * accuracy[0]:.1f} | {100 * accuracy[-1]:.1f} |" in row
        assert "| arithmetic · tiny · grpo |" in row
    for figure in ("rlvr_accuracy_vs_step.png", "rlvr_reward_vs_step.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 0
