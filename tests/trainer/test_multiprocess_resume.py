"""Two processes under torchrun (gloo on CPU, as NCCL runs them on GPUs), ``trainer.strategy=ddp`` (whole
policy per process, each matrix filtered by its owner) and ``fsdp`` (FSDP2 shards, optimizer state
sharded): a run stopped and resumed reproduces the uninterrupted run exactly — every loss and the final
weights."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vla_train.trainer.checkpoint import list_checkpoints
from vla_train.trainer.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_train(dataset: Path, run_dir: Path, strategy: str, *overrides: str) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        "train.py", "trainer=tiny", "logger=none", "evaluate=false", f"env.dataset.root={dataset}",
        "env.dataset.generate=false", "trainer.cpu=true", f"trainer.strategy={strategy}", "trainer.steps=6",
        "trainer.batch_size=4", "trainer.log_every=1", "trainer.checkpoint_every=3",
        "trainer.diagnostics_every=2", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = "\n".join(line for line in result.stderr.splitlines() if "Gloo" not in line)
    assert result.returncode == 0, errors[-6000:]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_run_stopped_and_resumed_equals_the_uninterrupted_run(
    strategy: str, lift_dataset: Path, tmp_path: Path
) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    # the final evaluation reads the saved whole weights (the sharded policy needs every process)
    evaluation = ["evaluate=true", "env.eval.episodes=1", "env.eval.max_steps=5", "env.eval.videos=0"]
    torchrun_train(lift_dataset, straight, strategy, *evaluation)
    assert any("eval/success_rate" in m for m in read_metrics(straight / "metrics.jsonl"))
    torchrun_train(lift_dataset, interrupted, strategy, "trainer.stop_at_step=3")
    stopped = list_checkpoints(interrupted)[-1]
    assert stopped.name == "step_0000003"
    if strategy == "fsdp":
        shards = sorted(p.name for p in stopped.glob("optimizer.rank*.pt"))
        assert shards == ["optimizer.rank000.pt", "optimizer.rank001.pt"]
        sizes = [sum(t.numel() for t in _tensors(torch.load(stopped / s, weights_only=True))) for s in shards]
        assert abs(sizes[0] - sizes[1]) < 0.2 * max(sizes)  # each process keeps about half the state
    torchrun_train(lift_dataset, interrupted, strategy, "trainer.resume=true")

    losses = [
        [(m["step"], m["train/loss"]) for m in read_metrics(run / "metrics.jsonl") if "train/loss" in m]
        for run in (straight, interrupted)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    a = load_file(list_checkpoints(straight)[-1] / "model.safetensors")
    b = load_file(list_checkpoints(interrupted)[-1] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("backbone.") for k in a)  # whole weights, under the unsharded names


def _tensors(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list):
        for item in value:
            yield from _tensors(item)
