"""Progress off a terminal is plain lines (SLURM, nohup, CI); on a terminal, tqdm's bar."""

from __future__ import annotations

import io
from pathlib import Path

from helpers import compose_train
from tqdm.auto import tqdm

from vla_train import train
from vla_train.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_a_line_per_interval_and_the_last_step() -> None:
    stream = io.StringIO()
    progress = progress_bar(5, "train", initial=1, interval_s=3600, stream=stream)
    assert isinstance(progress, LineProgress)
    for step in range(4):
        progress.set_postfix(loss=f"{0.5 - step / 10:.4f}", lr="1.00e-04")
        progress.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in stream.getvalue()  # the interval is long: only the last step
    assert lines[0].startswith("train step 5/5 (100%) loss=0.2000 lr=1.00e-04 elapsed 0:00:00 ETA 0:00:00")
    every = io.StringIO()
    progress = LineProgress(total=3, interval_s=0, stream=every)
    for _ in range(3):
        progress.update(1)
    assert [line.split(" (")[0] for line in every.getvalue().splitlines()] == [
        "train step 1/3",
        "train step 2/3",
        "train step 3/3",
    ]


def test_on_a_terminal_it_is_tqdms_bar_and_other_ranks_print_nothing() -> None:
    bar = progress_bar(5, "train", stream=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    silent = io.StringIO()
    quiet = progress_bar(5, "train", enabled=False, stream=silent)
    quiet.update(5)
    quiet.close()
    assert silent.getvalue() == ""


def test_a_training_run_writes_plain_progress_lines_to_a_file(
    lift_dataset: Path, tmp_path: Path, capsys
) -> None:
    overrides = ["trainer=tiny", "trainer.steps=3", "logger=none", "evaluate=false"]
    overrides += [
        f"env.dataset.root={lift_dataset}",
        "env.dataset.num_demos=3",
        "trainer.progress_interval_s=1e-9",
    ]
    train(compose_train(overrides, tmp_path))
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [line.split(" (")[0] for line in err.splitlines() if line.startswith("train step")] == [
        "train step 1/3",
        "train step 2/3",
        "train step 3/3",
    ]
