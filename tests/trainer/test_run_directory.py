"""A run never writes into a directory of the user's; every command reports failure in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vla_train.cli import TRACEBACK_VARIABLE, exit_on_error
from vla_train.config import ConfigError
from vla_train.trainer.run_directory import RUN_MARKER, ForeignDirectory, claim_run_directory

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_directory_of_the_users_is_refused_untouched(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.yaml").write_text("my notes")
    (user / "metrics.jsonl").write_text('{"a": 1}\n')
    before = _snapshot(user)
    with pytest.raises(ForeignDirectory, match=r"config\.yaml, metrics\.jsonl") as refused:
        claim_run_directory(user)
    assert "Nothing was written" in str(refused.value)
    assert _snapshot(user) == before and not (user / RUN_MARKER).exists()

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ForeignDirectory, match=r"notes\.txt"):
        claim_run_directory(a_file)
    assert a_file.read_text() == "x"


def test_new_directories_hydra_leftovers_and_our_own_runs_are_accepted(tmp_path: Path) -> None:
    claim_run_directory(tmp_path / "new" / "run")  # created, parents too
    assert (tmp_path / "new" / "run" / RUN_MARKER).is_file()

    failed = tmp_path / "failed"  # a job refused by validation leaves only Hydra's files
    (failed / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (failed / ".hydra" / name).write_text("{}")
    (failed / "train.log").write_text("error\n")
    claim_run_directory(failed)
    assert (failed / RUN_MARKER).is_file()

    (failed / "metrics.jsonl").write_text('{"step": 1}\n')  # ours now: what it writes is accepted
    claim_run_directory(failed)

    before_markers = tmp_path / "old"  # a run from before markers: config next to its checkpoints
    (before_markers / "checkpoints").mkdir(parents=True)
    (before_markers / "config.yaml").write_text("trainer: {}\n")
    claim_run_directory(before_markers)

    strange = tmp_path / "strange"
    (strange / ".hydra").mkdir(parents=True)
    (strange / ".hydra" / "secrets.yaml").write_text("x")
    with pytest.raises(ForeignDirectory, match=r"\.hydra/secrets\.yaml"):
        claim_run_directory(strange)


@pytest.mark.slow
def test_train_py_refuses_a_users_directory_before_hydra_writes_into_it(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("my notes")
    (tmp_path / "metrics.jsonl").write_text('{"a": 1}\n')
    before = _snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "train.py", "experiment=smoke", "logger=none", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: output_dir=") and "Traceback" not in result.stderr
    assert _snapshot(tmp_path) == before and not (tmp_path / ".hydra").exists()


@pytest.mark.slow
def test_train_py_uses_and_guards_its_default_run_directory(tmp_path: Path, lift_dataset: Path) -> None:
    """No hydra.run.dir: outputs/<run_name>, whose name Hydra resolves from the chosen options."""
    command = [sys.executable, str(ROOT / "train.py"), "experiment=smoke", "logger=none", "evaluate=false",
               "trainer.steps=1", f"env.dataset.root={lift_dataset}"]  # fmt: skip
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "outputs" / "smoke-l1-pion"
    assert (run / RUN_MARKER).is_file() and (run / "checkpoints").is_dir()

    (tmp_path / "outputs" / "smoke-l1-adamw").mkdir()
    (tmp_path / "outputs" / "smoke-l1-adamw" / "notes.txt").write_text("mine")
    second = subprocess.run(
        [*command, "optimizer=adamw"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 2 and "notes.txt" in second.stderr
    assert (tmp_path / "outputs" / "smoke-l1-adamw" / "notes.txt").read_text() == "mine"


def _raise(error: BaseException) -> None:
    raise error


def test_errors_become_one_line_and_an_exit_status(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exited:
        exit_on_error(_raise)(ConfigError("optimizer.lr=-1.0: must be > 0"))
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: optimizer.lr=-1.0: must be > 0\n"

    with pytest.raises(SystemExit) as exited:
        exit_on_error(_raise)(FileNotFoundError("/nope/weights.safetensors"))
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: FileNotFoundError: /nope/weights.safetensors\n"

    from hydra.errors import InstantiationException

    wrapped = InstantiationException(
        "Error in call to target 'X':\nFileNotFoundError(...)\nfull_key: backbone"
    )
    wrapped.__cause__ = FileNotFoundError("backbone.checkpoint=/nope: no such file or directory")
    with pytest.raises(SystemExit) as exited:  # a part's own error, not Hydra's multi-line wrapper of it
        exit_on_error(_raise)(wrapped)
    assert exited.value.code == 2
    assert (
        capsys.readouterr().err
        == "error: FileNotFoundError: backbone.checkpoint=/nope: no such file or directory\n"
    )

    with pytest.raises(SystemExit) as exited:  # a third party's message over several lines: one line
        exit_on_error(_raise)(ValueError("while parsing a flow sequence\n  in 'config.yaml', line 1\n"))
    assert (
        capsys.readouterr().err
        == "error: ValueError: while parsing a flow sequence in 'config.yaml', line 1\n"
    )

    with pytest.raises(SystemExit) as exited:  # not about the input: a bug, said where
        exit_on_error(_raise)(RuntimeError("shapes differ"))
    assert exited.value.code == 1
    assert "error: RuntimeError: shapes differ (raised at " in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:  # Ctrl-C: one error line, the shell's status
        exit_on_error(_raise)(KeyboardInterrupt())
    assert exited.value.code == 130
    assert capsys.readouterr().err == "error: interrupted by Ctrl-C (what was written before it is kept)\n"

    with pytest.raises(SystemExit) as exited:  # what the command kept and how to continue, when it says
        exit_on_error(_raise)(
            KeyboardInterrupt("checkpoint run/step_2 saved; continue with trainer.resume=true")
        )
    assert exited.value.code == 130
    assert capsys.readouterr().err == (
        "error: interrupted by Ctrl-C (checkpoint run/step_2 saved; continue with trainer.resume=true)\n"
    )

    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(RuntimeError, match="shapes differ"):
        exit_on_error(_raise)(RuntimeError("shapes differ"))
