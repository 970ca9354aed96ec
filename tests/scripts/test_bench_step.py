"""scripts/bench_step.py runs one timed training step (tiny sizes on CPU; full sizes need a GPU)."""

from __future__ import annotations

import pytest
from bench_step import main


@pytest.mark.parametrize(("backbone", "head"), [("tiny", "flow_tiny"), ("pi05_tiny", "pi05_tiny")])
def test_bench_step_times_a_training_step_on_cpu(backbone: str, head: str) -> None:
    result = main(["--backbone", backbone, "--head", head, "--batch", "2", "--steps", "1", "--device", "cpu"])
    assert result["step_ms"] > 0 and result["parameters_m"] > 0
    assert result["changed_fraction"] > 0.5  # the timed steps trained it (zero-gated parts wait: flow)
    assert result["forward_backward_ms"] > 0 and result["optimizer_ms"] > 0
    assert 0.1 < result["peak_gib"] < 64  # on a CPU the process's peak RSS


def test_bench_step_takes_option_overrides() -> None:
    plain = main(
        ["--backbone", "tiny", "--head", "flow_tiny", "--batch", "2", "--steps", "1", "--device", "cpu"]
    )
    overridden = main(
        [
            "--backbone",
            "tiny",
            "--head",
            "flow_tiny",
            "--batch",
            "2",
            "--steps",
            "1",
            "--device",
            "cpu",
            "head.width=96",
        ]
    )
    assert overridden["parameters_m"] > plain["parameters_m"]  # a wider DiT was built
