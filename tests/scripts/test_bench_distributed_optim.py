"""scripts/bench_distributed_optim.py runs the optimizer under torchrun: ratios, no timing asserts."""

from __future__ import annotations

import pytest
from bench_distributed_optim import main


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["ddp", "fsdp"])
def test_it_times_one_and_two_processes_on_vla_adapter_matrices(
    layout: str, capsys: pytest.CaptureFixture
) -> None:
    ratios = main(["--processes", "1", "2", "--layers", "1", "--steps", "1", "--layout", layout])
    assert set(ratios) == {1, 2} and ratios[1] == {"wall": 1.0, "cpu": 1.0}
    assert ratios[2]["wall"] > 0 and ratios[2]["cpu"] > 0
    assert "2 processes" in capsys.readouterr().out
