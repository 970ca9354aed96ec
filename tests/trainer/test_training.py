"""Train the tiny policy for a few steps on a real (tiny) LeRobot dataset recorded in robosuite."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import compose_train
from safetensors.torch import load_file

from envs.robosuite.lift import RobosuiteLiftAdapter
from vla_train.trainer.checkpoint import list_checkpoints
from vla_train.trainer.loop import TrainingDiverged
from vla_train.trainer.metrics_log import read_metrics
from vla_train.training import RunDirectoryInUse, train

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def tiny_run(dataset: Path, output: Path, *overrides: str):
    return compose_train(
        [
            "trainer=tiny",
            "logger=none",
            "evaluate=false",
            f"env.dataset.root={dataset}",
            "env.dataset.generate=false",
            *overrides,
        ],
        output,
    )


def poison_training_samples(monkeypatch: pytest.MonkeyPatch, poison) -> None:
    """Make the Lift adapter's training transform call ``poison(frame, sample)`` on every sample."""
    clean = RobosuiteLiftAdapter.sample_to_policy

    def poisoned(self, frame):
        sample = clean(self, frame)
        poison(frame, sample)
        return sample

    monkeypatch.setattr(RobosuiteLiftAdapter, "sample_to_policy", poisoned)


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["train/loss"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in m}


@pytest.mark.parametrize(
    "optimizer", ["adamw", "muon", "pion", "pion_per_head", "muon_all", "lrmuon", "lpmuon"]
)
def test_each_optimizer_trains(optimizer: str, lift_dataset: Path, tmp_path: Path) -> None:
    metrics = train(tiny_run(lift_dataset, tmp_path, f"optimizer={optimizer}"))
    assert metrics["step"] == 6 and math.isfinite(metrics["train/loss"])
    assert len(losses(tmp_path)) == 6
    middle, final = (load_file(c / "model.safetensors") for c in list_checkpoints(tmp_path)[-2:])
    for name in (
        "head.model.mlp_resnet_blocks.0.k_task.weight",  # action hidden matrix
        "backbone.language.layers.0.mlp.gate_proj.weight",  # language hidden matrix
        "backbone.vision.blocks.0.attn.qkv.weight",  # vision hidden matrix
        "head.model.fc2.weight",
    ):  # AdamW in every configuration
        assert torch.isfinite(final[name]).all()
        assert not torch.equal(middle[name], final[name]), f"{name} did not change between steps 3 and 6"
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize(
    "head, steps, optimizer",
    # The flow head's adaLN-Zero blocks start as the identity (as in DiT and VLANeXt): spectral
    # updates take a few hundred steps to open them at this scale, AdamW a few dozen. VLA-Adapter-Pro's
    # rows start identical (zero inputs, told apart by RoPE only): slower at first than the bridge head.
    [("l1", 60, "pion"), ("l1_bridge", 30, "pion"), ("flow_tiny", 120, "adamw")],
)
def test_each_head_trains_and_the_loss_falls(
    head: str, steps: int, optimizer: str, lift_dataset: Path, tmp_path: Path
) -> None:
    train(
        tiny_run(
            lift_dataset,
            tmp_path,
            f"head={head}",
            f"optimizer={optimizer}",
            f"trainer.steps={steps}",
            "trainer.batch_size=8",
            "optimizer.lr=1e-3",
            "trainer.checkpoint_every=0",
            "trainer.diagnostics_every=0",
            "trainer.warmup_steps=5",  # the lr must reach the wrapped optimizers through the schedule
            "trainer.schedule=cosine",
        )
    )
    curve = list(losses(tmp_path).values())
    assert sum(curve[-5:]) / 5 < 0.9 * sum(curve[:5]) / 5
    logged_lr = [m["train/lr"] for m in read_metrics(tmp_path / "metrics.jsonl") if "train/lr" in m]
    assert logged_lr[0] == 0.0 and max(logged_lr) == pytest.approx(1e-3) and logged_lr[-1] < 1e-4


def epochs(run_dir: Path) -> dict[int, int]:
    return {
        m["step"]: m["train/epoch"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/epoch" in m
    }


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_across_epochs_reproduces_the_uninterrupted_run_exactly(
    num_workers: int, lift_dataset: Path, tmp_path: Path
) -> None:
    """Stopped in epoch 0, again in epoch 1 and again in epoch 2 (one of them on an epoch boundary),
    then resumed to the end: every loss and the final weights equal the uninterrupted run's, bit for bit."""
    settings = [
        "head=flow_tiny",
        "env.dataset.episodes=[0]",
        "trainer.batch_size=16",
        "trainer.steps=12",
        f"trainer.num_workers={num_workers}",
        "trainer.gradient_accumulation_steps=2",
        "trainer.schedule=cosine",
        "trainer.warmup_steps=2",
        "trainer.checkpoint_every=4",
        "trainer.diagnostics_every=3",
    ]
    straight = tmp_path / "straight"
    train(tiny_run(lift_dataset, straight, *settings))
    epoch_of = epochs(straight)
    stops = [2, 6, 8]  # 51 frames, micro-batches of 8: 3 steps an epoch; step 6 ends epoch 1
    assert [epoch_of[step] for step in stops] == [0, 1, 2], epoch_of
    assert epoch_of[12] == 3

    interrupted = tmp_path / "interrupted"
    stopped = train(tiny_run(lift_dataset, interrupted, *settings, f"trainer.stop_at_step={stops[0]}"))
    assert stopped["step"] == stops[0] and not stopped["interrupted"]
    with pytest.raises(RunDirectoryInUse, match=r"trainer\.resume=true"):
        train(tiny_run(lift_dataset, interrupted, *settings))
    for stop in stops[1:]:
        train(
            tiny_run(
                lift_dataset, interrupted, *settings, "trainer.resume=true", f"trainer.stop_at_step={stop}"
            )
        )
    train(tiny_run(lift_dataset, interrupted, *settings, "trainer.resume=true"))

    assert losses(straight) == losses(interrupted)  # every step, bit for bit
    assert list(losses(interrupted)) == list(range(1, 13))
    a = load_file(list_checkpoints(straight)[-1] / "model.safetensors")
    b = load_file(list_checkpoints(interrupted)[-1] / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    def written() -> dict[Path, int]:
        return {f: f.stat().st_mtime_ns for f in (interrupted / "checkpoints").rglob("*") if f.is_file()}

    before = written()  # a finished run resumed: its checkpoint is not rewritten (nor one saved twice)
    assert train(tiny_run(lift_dataset, interrupted, *settings, "trainer.resume=true"))["step"] == 12
    assert written() == before


def test_resuming_with_other_training_settings_is_refused_naming_each(
    lift_dataset: Path, tmp_path: Path
) -> None:
    from vla_train.config import ConfigError

    base = ["trainer.steps=4", "trainer.diagnostics_every=0"]
    train(tiny_run(lift_dataset, tmp_path, *base, "trainer.stop_at_step=2"))
    saved = (tmp_path / "config.yaml").read_text()
    changed = ["trainer.resume=true", "optimizer.lr=1e-3", "trainer.batch_size=8"]
    with pytest.raises(
        ConfigError, match=r"optimizer\.lr: 0\.0001 in the run, 0\.001 now; trainer\.batch_size: 4"
    ):
        train(tiny_run(lift_dataset, tmp_path, *base, *changed))
    # what does not change the training may change; the run keeps the config it was started with
    train(
        tiny_run(lift_dataset, tmp_path, *base, "trainer.resume=true", "trainer.log_every=2", "logger=none")
    )
    assert (tmp_path / "config.yaml").read_text() == saved
    assert list(losses(tmp_path)) == [1, 2, 4]


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process; this test changes it, so it starts
    from, and leaves, a clean state (a training job in its own process never needs this)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.mark.parametrize("head", ["l1", "flow_tiny"])
@pytest.mark.usefixtures("fresh_accelerator_state")
def test_official_bf16_weights_switch_trains_and_resumes(
    head: str, lift_dataset: Path, tmp_path: Path
) -> None:
    """trainer.weight_dtype=bfloat16: the official runs' bf16 weights and optimizer states, under bf16
    autocast (turned on by mixed_precision=auto); resume stays exact."""
    settings = [
        f"head={head}",
        "trainer.weight_dtype=bfloat16",
        "trainer.mixed_precision=auto",
        "trainer.steps=4",
    ]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(tiny_run(lift_dataset, straight, *settings, "trainer.diagnostics_every=0"))
    train(
        tiny_run(
            lift_dataset, interrupted, *settings, "trainer.diagnostics_every=0", "trainer.stop_at_step=2"
        )
    )
    train(
        tiny_run(lift_dataset, interrupted, *settings, "trainer.diagnostics_every=0", "trainer.resume=true")
    )
    assert losses(straight) == losses(interrupted) and all(
        math.isfinite(v) for v in losses(straight).values()
    )
    weights = load_file(list_checkpoints(straight)[-1] / "model.safetensors")
    trained = [k for k in weights if k.startswith("head.") and "norm" not in k and k.endswith("weight")]
    assert trained and all(weights[k].dtype == torch.bfloat16 for k in trained)
    first = load_file(list_checkpoints(straight)[0] / "model.safetensors")
    assert any(not torch.equal(first[k], weights[k]) for k in trained)  # bf16 steps still move them


def test_a_damaged_checkpoint_or_a_missing_camera_is_named(lift_dataset: Path, tmp_path: Path) -> None:
    from vla_train.trainer.checkpoint import CheckpointUnreadable

    base = ["trainer.steps=4", "trainer.diagnostics_every=0"]
    train(tiny_run(lift_dataset, tmp_path, *base, "trainer.stop_at_step=2"))
    checkpoint = list_checkpoints(tmp_path)[-1]
    optimizer_state = (checkpoint / "optimizer.pt").read_bytes()
    (checkpoint / "optimizer.pt").write_bytes(optimizer_state[: len(optimizer_state) // 2])  # torn copy
    with pytest.raises(CheckpointUnreadable, match=r"optimizer\.pt cannot be read"):
        train(tiny_run(lift_dataset, tmp_path, *base, "trainer.resume=true"))
    (checkpoint / "optimizer.pt").write_bytes(optimizer_state)
    weights = (checkpoint / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointUnreadable, match=r"model\.safetensors cannot be read"):
        train(tiny_run(lift_dataset, tmp_path, *base, "trainer.resume=true"))
    (checkpoint / "model.safetensors").write_bytes(weights)
    (checkpoint / "trainer_state.json").write_text('{"step": 2, "epo')
    with pytest.raises(CheckpointUnreadable, match=r"trainer_state\.json cannot be read"):
        train(tiny_run(lift_dataset, tmp_path, *base, "trainer.resume=true"))
    with pytest.raises(ValueError, match=r"env\.cameras=\['agentview', 'nope'\].*no camera 'nope'"):
        train(tiny_run(lift_dataset, tmp_path / "cameras", *base, "env.cameras=[agentview,nope]"))
    with pytest.raises(ValueError, match=r"env\.state_dim=9, but dataset .* shape \(8,\)"):
        train(tiny_run(lift_dataset, tmp_path / "state", *base, "env.state_dim=9"))
    with pytest.raises(ValueError, match=r"env\.fps=10, but dataset .* at 20 fps"):
        train(tiny_run(lift_dataset, tmp_path / "fps", *base, "env.fps=10"))


def test_a_nan_batch_is_skipped_and_counted(
    lift_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nan_state_every_fifth_frame(frame, sample):
        if int(frame["index"]) % 5 == 0:
            sample["state"] = torch.full_like(sample["state"], float("nan"))

    poison_training_samples(monkeypatch, nan_state_every_fifth_frame)
    metrics = train(tiny_run(lift_dataset, tmp_path, "trainer.steps=10", "trainer.diagnostics_every=0"))
    skipped = metrics["train/skipped_steps"]
    assert 1 <= skipped < 10
    logged = losses(tmp_path)
    assert sum(not math.isfinite(v) for v in logged.values()) == skipped
    weights = load_file(list_checkpoints(tmp_path)[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_too_many_non_finite_steps_stop_with_a_clear_error(
    lift_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def infinite_actions(frame, sample):
        sample["actions"] = sample["actions"] * float("inf")

    poison_training_samples(monkeypatch, infinite_actions)
    with pytest.raises(TrainingDiverged, match=r"3 non-finite steps in a row.*optimizer\.lr="):
        train(
            tiny_run(lift_dataset, tmp_path, "trainer.max_nonfinite_steps=3", "trainer.diagnostics_every=0")
        )


def test_non_finite_weights_are_never_saved_as_a_good_checkpoint(
    lift_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finite loss with an infinite step (optimizer.lr=1e38 and the like) leaves infinite weights."""
    from vla_train.optim import ModalityOptimizer

    step = ModalityOptimizer.step

    def overflowing_step(self, closure=None):
        result = step(self, closure)
        if self.optimizers["adamw"].state:  # after every step
            next(iter(self.optimizers["adamw"].state)).data.fill_(float("inf"))
        return result

    monkeypatch.setattr(ModalityOptimizer, "step", overflowing_step)
    with pytest.raises(TrainingDiverged, match=r"not finite at step 3.*not saved.*optimizer\.lr="):
        train(
            tiny_run(lift_dataset, tmp_path, "trainer.diagnostics_every=0", "trainer.max_nonfinite_steps=5")
        )
    assert list_checkpoints(tmp_path) == []


def test_evaluation_reports_success_rate_and_writes_videos(lift_dataset: Path, tmp_path: Path) -> None:
    metrics = train(
        tiny_run(
            lift_dataset,
            tmp_path,
            "evaluate=true",
            "trainer.steps=2",
            "env.eval.episodes=2",
            "env.eval.max_steps=8",
            "env.eval.videos=1",
        )
    )
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0 and metrics["eval/episodes"] == 2
    eval_dir = tmp_path / "eval" / "step_0000002"  # the checkpoint's name, as scripts/eval.py names it
    (video,) = (eval_dir / "videos").iterdir()  # eval.videos=1: the first episode only
    assert video.name.startswith("robosuite_lift_trial000_") and video.stat().st_size > 0
    results = (eval_dir / "episodes.jsonl").read_text()
    assert len(results.splitlines()) == 2
    assert "max_steps: 8" in (eval_dir / "protocol.yaml").read_text()  # the protocol beside its numbers

    from eval import main as evaluate_checkpoint

    # scripts/eval.py continues the final evaluation (an interrupted one included), never mixes protocols
    assert evaluate_checkpoint([str(tmp_path)])["eval/episodes"] == 2
    assert (eval_dir / "episodes.jsonl").read_text() == results  # nothing left to run
    with pytest.raises(ValueError, match=r"run with max_steps=8; this evaluation runs max_steps=9"):
        evaluate_checkpoint([str(tmp_path), "env.eval.max_steps=9"])


def _train_command(dataset: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "trainer=tiny",
        "logger=none",
        "evaluate=false",
        f"env.dataset.root={dataset}",
        "env.dataset.generate=false",
        *overrides,
    ]


def test_multirun_over_kp_runs_three_jobs(lift_dataset: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            *_train_command(lift_dataset, "trainer.steps=2", "trainer.diagnostics_every=0")[2:],
            "optimizer.kp=0,1,2",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.glob("*/config.yaml"))
    assert len(runs) == 3
    kps = sorted(
        int(
            next(
                line
                for line in (r / "config.yaml").read_text().splitlines()
                if line.strip().startswith("kp:")
            ).split(":")[1]
        )
        for r in runs
    )
    assert kps == [0, 1, 2]
    assert all(len(losses(r)) == 2 for r in runs)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(lift_dataset: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            *_train_command(
                lift_dataset,
                "trainer.steps=100000",
                "trainer.checkpoint_every=0",
                "trainer.diagnostics_every=0",
            ),
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 240
    while not (tmp_path / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    checkpoints = list_checkpoints(tmp_path)
    assert checkpoints and int(checkpoints[-1].name.removeprefix("step_")) >= 1
    last_line = output.strip().splitlines()[-1]  # one error line: what was saved, how to continue
    assert last_line == (
        f"error: interrupted by Ctrl-C (checkpoint {checkpoints[-1]} saved; continue with "
        "trainer.resume=true)"
    )


def test_diagnostics_do_not_change_training(lift_dataset: Path, tmp_path: Path) -> None:
    settings = ["head=flow_tiny", "trainer.steps=4", "trainer.checkpoint_every=0"]
    train(tiny_run(lift_dataset, tmp_path / "without", *settings, "trainer.diagnostics_every=0"))
    train(tiny_run(lift_dataset, tmp_path / "with", *settings, "trainer.diagnostics_every=2"))
    assert losses(tmp_path / "without") == losses(tmp_path / "with")
    logged = read_metrics(tmp_path / "with" / "metrics.jsonl")
    diagnostics = [m for m in logged if "grad_erank/action" in m]
    assert [m["step"] for m in diagnostics] == [1, 3]
    # step 1: the flow head's zero-initialized output layer passes no gradient upstream yet (rank 0)
    assert diagnostics[0]["grad_erank/vision"] == diagnostics[0]["grad_erank/action"] == 0.0
    assert diagnostics[-1]["grad_erank/action"] >= 1.0 and diagnostics[-1]["grad_snr/vision"] > 0


@pytest.mark.parametrize(
    ("backbone", "head", "optimizer", "extra"),
    [
        # VLANeXt-shaped, with its proprio path (3 recent states as tokens before the prompt)
        ("qwen3_vl_tiny", "flow", "pion", ("head.state_input=backbone", "env.state_history=3")),
        ("prismatic_tiny", "l1", "pion", ()),  # VLA-Adapter-shaped
    ],
)
def test_real_backbone_classes_train_and_evaluate(
    backbone: str, head: str, optimizer: str, extra: tuple[str, ...], lift_dataset: Path, tmp_path: Path
) -> None:
    metrics = train(
        tiny_run(
            lift_dataset,
            tmp_path,
            f"backbone={backbone}",
            f"head={head}",
            f"optimizer={optimizer}",
            *extra,
            "evaluate=true",
            "trainer.steps=4",
            "env.eval.episodes=1",
            "env.eval.max_steps=5",
            "env.eval.videos=0",
        )
    )
    assert metrics["step"] == 4 and math.isfinite(metrics["train/loss"])
    assert metrics["eval/episodes"] == 1


def test_two_process_ddp_run_trains_with_the_single_process_schedule(
    lift_dataset: Path, tmp_path: Path
) -> None:
    """DDP on CPU (gloo) through torchrun, as `accelerate launch --multi_gpu` runs it on GPUs."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ["trainer.steps=4", "trainer.batch_size=4", "trainer.log_every=1", "trainer.cpu=true"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        *_train_command(lift_dataset, *settings, f"hydra.run.dir={tmp_path / 'ddp'}")[1:],
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    train(tiny_run(lift_dataset, tmp_path / "single", *settings))
    ddp, single = (read_metrics(tmp_path / run / "metrics.jsonl") for run in ("ddp", "single"))
    learning_rates = [[m["train/lr"] for m in log if "train/lr" in m] for log in (ddp, single)]
    assert (
        learning_rates[0] == learning_rates[1] and len(learning_rates[0]) == 4
    )  # logged once, same schedule
    assert all(math.isfinite(m["train/loss"]) for m in ddp if "train/loss" in m)
    assert list_checkpoints(tmp_path / "ddp")[-1].name == "step_0000004"
