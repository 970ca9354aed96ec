"""metrics.jsonl on resume: a torn last line (kill -9 mid-write) is dropped, other damage is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_train.trainer.metrics_log import MetricsLog, read_metrics


def test_resume_drops_a_torn_last_line_and_names_any_other_damage(tmp_path: Path) -> None:
    metrics = MetricsLog(tmp_path, "disabled", "test", {})
    for step in (1, 2, 3):
        metrics.log({"train/loss": 1.0 / step}, step)
    with metrics.path.open("a") as file:
        file.write('{"step": 4, "train/lo')  # killed mid-write
    metrics.truncate_after(2)
    assert [m["step"] for m in read_metrics(metrics.path)] == [1, 2]

    metrics.path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2, is not JSON"):
        metrics.truncate_after(2)
    assert metrics.path.read_text() == '{"step": 1}\nnot json\n{"step": 2}\n'  # nothing lost

    metrics.path.write_text('{"step": 1}\n{"a": 1}\n')  # someone else's JSON lines
    with pytest.raises(ValueError, match=r"line 2, is not a metrics record"):
        metrics.truncate_after(2)
    assert metrics.path.read_text() == '{"step": 1}\n{"a": 1}\n'
