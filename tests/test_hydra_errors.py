"""Hydra's own refusals (found while composing a config) end in one ``error:`` line naming the override and
the options there are, like every other bad input; HYDRA_FULL_ERROR=1 keeps Hydra's full report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import HydraException

from vla_train.cli import exit_on_error, hydra_message

ROOT = Path(__file__).resolve().parents[1]


def composition_error(override: str) -> HydraException:
    from helpers import compose_train

    with pytest.raises(HydraException) as refusal:
        compose_train([override])
    return refusal.value


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "experiment=smok",
            "In 'train': Could not find 'experiment/smok'; Available options in 'experiment': demo, "
            "pi05_droid, smoke,",
        ),
        ("optimizer=sgd", "Available options in 'optimizer': adamw, lpmuon, lrmuon, muon, muon_all, pion,"),
        ("trainer.steps=abc", "could not be converted to Integer (full_key: trainer.steps)"),
        ("trainer.foo=1", "Could not override 'trainer.foo'; Key 'foo' not in 'TrainerConfig'"),
        ("env.cameras=[nope", "override 'env.cameras=[nope'; no viable alternative at input '[nope'"),
    ],
)
def test_hydras_report_becomes_one_line_naming_the_override(override: str, expected: str) -> None:
    message = hydra_message(composition_error(override))
    assert "\n" not in message and expected in message
    assert "_schema" not in message and "provider=" not in message  # Hydra's internals left out


@pytest.mark.parametrize("script", ["train.py", "train_rlvr.py"])
def test_a_misspelled_experiment_is_one_error_line_and_exit_2(script: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "VLA_TRAIN_TRACEBACK")}
    command = [sys.executable, str(ROOT / script), "experiment=smok", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'experiment/smok'" in lines[0]
    assert not (tmp_path / "run").exists()
    full = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert full.returncode == 1 and "Traceback" in full.stderr  # the full report when asked for


@pytest.mark.parametrize(
    ("override", "named"),
    [("experiment=smok", "'experiment/smok'"), ("trainer.foo=1", "'trainer.foo'"), ("a=[b", "'a=[b'")],
)
def test_scripts_that_compose_report_hydras_refusal_in_one_line(
    override: str, named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/plan.py and bench_eval.py call hydra.compose themselves: exit_on_error reports for them."""
    from helpers import compose_train

    monkeypatch.delenv("VLA_TRAIN_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exited:
        exit_on_error(compose_train)([override])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and error.startswith("error: ")
    assert named in error and "HYDRA_FULL_ERROR" not in error
