"""train_rlvr.py: the paper's presets, its checks, and a tiny Qwen3 trained end to end by GRPO and GMPO
with every optimizer of Table A2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import compose_rlvr

from vla_train.config import ConfigError
from vla_train.rlvr.training import grpo_arguments, train_rlvr, validate_rlvr_config
from vla_train.training import RunDirectoryInUse

#: Table A2 and the official verl scripts (RL/verl/examples/{grpo,gmpo}_trainer/*.sh), written out here
PAPER = {
    "rlvr_gsm8k": {
        "task._target_": "vla_train.rlvr.tasks.GSM8KTask",
        "rl.prompts_per_generation": 1024,
        "rl.prompts_per_step": 256,  # ppo_mini_batch_size: 4 updates per rollout
        "rl.steps": 40 * 4,  # 40 rollout steps
        "rl.group_size": 5,
        "rl.max_completion_length": 1024,
        "rl.temperature": 1.0,
        "optimizer.lr": 1e-6,
        "algorithm.beta": 0.001,
    },
    "rlvr_math": {
        "task._target_": "vla_train.rlvr.tasks.MathTask",
        "task.levels": [3, 4, 5],
        "eval_task.source": "HuggingFaceH4/MATH-500",
        "rl.prompts_per_step": 128,
        "rl.steps": 80,
        "rl.group_size": 8,
        "rl.max_completion_length": 3000,
        "rl.temperature": 1.0,
        "optimizer.lr": 1e-6,
    },
}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_presets_are_table_a2(preset: str) -> None:
    from omegaconf import OmegaConf

    cfg = compose_rlvr([f"experiment={preset}"])
    for key, value in PAPER[preset].items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.model.name_or_path == "Qwen/Qwen3-1.7B"
    assert cfg.optimizer.language == "pion" and list(cfg.optimizer.per_head_modalities) == ["language"]
    assert cfg.optimizer.kp == 0  # promotion_steps=0
    # RL/verl/verl/utils/muon.py: scale_factor=5.0 on sqrt(max(rows, cols)), momentum 0.95, no Nesterov
    assert cfg.optimizer.lr_scale_factor == 5.0 and cfg.optimizer.lr_scale == "moonlight"
    assert cfg.optimizer.momentum == 0.95 and cfg.optimizer.nesterov is False


def test_gmpo_clips_at_0_4_and_batches_map_onto_trl(tmp_path: Path) -> None:
    cfg = compose_rlvr(["experiment=rlvr_gsm8k", "algorithm=gmpo"], tmp_path)
    assert (cfg.algorithm.epsilon, cfg.algorithm.epsilon_high) == (0.4, 0.4)
    arguments = grpo_arguments(cfg, cpu=True)
    # 256 prompts × 5 completions per optimizer step in micro-batches of 16; 4 steps per rollout of 1024
    assert arguments.gradient_accumulation_steps == 256 * 5 // 16
    assert arguments.steps_per_generation == 4 * arguments.gradient_accumulation_steps
    assert arguments.num_generations == 5 and arguments.max_steps == 160


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("rl.group_size=1", "rl.group_size=1"),
        ("rl.micro_batch=7", "rl.micro_batch=7"),
        ("rl.prompts_per_generation=300", "rl.prompts_per_generation=300"),
        ("rl.temperature=0", "rl.temperature=0"),
        ("algorithm.name=ppo", "algorithm.name='ppo'"),
        ("algorithm.beta=-1", "algorithm.beta=-1"),
        ("optimizer.language=sgd", "optimizer.language='sgd'"),
        ("optimizer.lr=inf", "optimizer.lr=inf"),
        ("rl.steps=0", "rl.steps=0"),
        ("rl.seed=-1", "rl.seed=-1"),
        ("rl.eval_examples=0", "rl.eval_examples=0"),
        ("rl.eval_every=-1", "rl.eval_every=-1"),
        ("rl.max_prompt_length=0", "rl.max_prompt_length=0"),
        ("rl.use_vllm=true", "rl.use_vllm=true"),  # not installed here
        ("model.dtype=int8", "model.dtype='int8'"),
        ("model.name_or_path=/nope", "model.name_or_path=/nope: no such directory"),
        ("optimizer.betas=[0.9]", "optimizer.betas=[0.9]"),  # train.py's optimizer checks, shared
        ("optimizer.tau=5", "optimizer.tau=5.0"),
        ("+rl.foo=1", "rl.foo: no such key"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        validate_rlvr_config(compose_rlvr(["experiment=rlvr_gsm8k", override]))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "gmpo"])
@pytest.mark.parametrize("optimizer", ["adamw", "muon", "muon_per_head", "pion", "pion_per_head", "lpmuon"])
def test_a_tiny_qwen3_trains_with_each_optimizer_and_algorithm(
    algorithm: str, optimizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLA_TRAIN_CACHE", str(tmp_path / "cache"))
    overrides = ["experiment=rlvr_smoke", f"algorithm={algorithm}", f"optimizer={optimizer}", "rl.steps=2"]
    metrics = train_rlvr(compose_rlvr([*overrides, "rl.eval_examples=8"], tmp_path / "run"))
    assert metrics["step"] == 2 and 0 <= metrics["train/reward"] <= 1
    assert metrics["eval/examples"] == 8 and 0 <= metrics["eval/accuracy"] <= 1
    predictions = (tmp_path / "run" / "eval" / "step_2" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 8 and {"prompt", "completion", "answer", "reward"} <= set(
        json.loads(predictions[0])
    )
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "reward" in entry] == [1, 2]
    summary = (tmp_path / "run" / "optimizer_assignment.txt").read_text()
    assert optimizer.removesuffix("_per_head") in summary


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "gmpo"])
def test_a_stopped_run_resumes_to_the_same_rewards_and_weights(
    algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("VLA_TRAIN_CACHE", str(tmp_path / "cache"))
    overrides = ["experiment=rlvr_smoke", f"algorithm={algorithm}", "rl.save_every=2", "rl.eval_examples=4"]
    train_rlvr(compose_rlvr([*overrides, "rl.steps=4"], tmp_path / "whole"))
    train_rlvr(compose_rlvr([*overrides, "rl.steps=2"], tmp_path / "parts"))
    with pytest.raises(RunDirectoryInUse, match=r"rl\.resume=true"):  # never trains over a run by accident
        train_rlvr(compose_rlvr([*overrides, "rl.steps=4"], tmp_path / "parts"))
    changed = compose_rlvr(
        [*overrides, "rl.steps=4", "rl.resume=true", "rl.group_size=8"], tmp_path / "parts"
    )
    with pytest.raises(ConfigError, match=r"rl\.group_size: 4 in the run, 8 now"):  # what it trains: kept
        train_rlvr(changed)
    train_rlvr(compose_rlvr([*overrides, "rl.steps=4", "rl.resume=true"], tmp_path / "parts"))

    def rewards(run: str) -> list[tuple[int, float]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(e["step"], e["reward"]) for e in map(json.loads, lines) if "reward" in e]

    assert rewards("parts") == rewards("whole") and len(rewards("whole")) == 4
    whole = load_file(tmp_path / "whole" / "checkpoint-4" / "model.safetensors")
    parts = load_file(tmp_path / "parts" / "checkpoint-4" / "model.safetensors")
    assert whole.keys() == parts.keys()
    for name in whole:
        assert (whole[name] == parts[name]).all(), name


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_gradient_diagnostics_are_logged_per_module_and_leave_training_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("VLA_TRAIN_CACHE", str(tmp_path / "cache"))
    base = ["experiment=rlvr_smoke", "rl.steps=3", "rl.save_every=3", "rl.eval_every=0", "rl.eval_examples=4"]
    base += ["rl.group_size=8", "rl.micro_batch=64"]  # one micro-batch a step: the one measured
    train_rlvr(compose_rlvr([*base, "rl.diagnostics_every=1"], tmp_path / "measured"))
    train_rlvr(compose_rlvr([*base, "rl.diagnostics_every=0"], tmp_path / "plain"))

    measured = [e for e in logged(tmp_path / "measured") if "reward" in e]
    plain = [e for e in logged(tmp_path / "plain") if "reward" in e]
    assert any("grad_snr/attention" in entry for entry in measured)
    for entry in measured:  # the VLA trainer's keys, one per decoder module, where there is a gradient
        if entry["frac_reward_zero_std"] == 1.0:  # every group's rewards equal: nothing to measure
            assert not any(key.startswith("grad_snr") for key in entry)
            continue
        for key in ("grad_snr/attention", "grad_snr/mlp", "grad_snr/embeddings", "grad_erank/attention"):
            assert entry[key] > 0, (entry["step"], key)
    assert not any(key.startswith(("grad_snr", "grad_erank")) for entry in plain for key in entry)
    # the parts' own losses leave the step's logged metrics and the weights as they were
    for key in ("reward", "loss", "clip_ratio/region_mean", "entropy"):
        assert [e[key] for e in measured] == [e[key] for e in plain], key
    a = load_file(tmp_path / "measured" / "checkpoint-3" / "model.safetensors")
    b = load_file(tmp_path / "plain" / "checkpoint-3" / "model.safetensors")
    assert all((a[name] == b[name]).all() for name in a)


@pytest.mark.slow
def test_accuracy_is_measured_before_training_and_every_n_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLA_TRAIN_CACHE", str(tmp_path / "cache"))
    metrics = train_rlvr(compose_rlvr(["experiment=rlvr_smoke", "rl.steps=4", "rl.eval_every=2",
                                       "rl.eval_examples=6"], tmp_path / "run"))  # fmt: skip
    curve = [(e["step"], e["eval/accuracy"]) for e in logged(tmp_path / "run") if "eval/accuracy" in e]
    assert [step for step, _ in curve] == [0, 2, 4] and curve[-1][1] == metrics["eval/accuracy"]
    for step in (0, 2, 4):
        lines = (tmp_path / "run" / "eval" / f"step_{step}" / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 6


@pytest.mark.slow
def test_a_random_tiny_qwen3_learns_the_sums_from_reward_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #16's offline proof: rlvr_arithmetic with AdamW and GRPO (its README numbers, one run)."""
    monkeypatch.setenv("VLA_TRAIN_CACHE", str(tmp_path / "cache"))
    overrides = ["experiment=rlvr_arithmetic", "optimizer=adamw", "algorithm=grpo", "rl.diagnostics_every=0"]
    metrics = train_rlvr(compose_rlvr(overrides, tmp_path / "run"))
    entries = logged(tmp_path / "run")
    rewards = [e["reward"] for e in entries if "reward" in e]
    first, last = sum(rewards[:25]) / 25, sum(rewards[-25:]) / 25
    initial = next(e["eval/accuracy"] for e in entries if e["step"] == 0 and "eval/accuracy" in e)
    assert len(rewards) == 300
    assert last > 0.5 and last > 4 * first, (first, last)  # chance: a random model's ~1 in 15
    assert metrics["eval/accuracy"] > initial + 0.4, (initial, metrics["eval/accuracy"])


def test_prompts_longer_than_max_prompt_length_are_dropped_as_verl_does() -> None:
    import datasets

    from vla_train.rlvr.evaluation import drop_overlong_prompts
    from vla_train.rlvr.models import character_tokenizer

    tokenizer = character_tokenizer("0123456789+=")
    rows = datasets.Dataset.from_list(
        [{"prompt": "1+2=", "answer": "3"}, {"prompt": "10+20=", "answer": "30"}]
    )
    assert drop_overlong_prompts(rows, tokenizer, None, "train") is rows
    assert drop_overlong_prompts(rows, tokenizer, 6, "train")["prompt"] == ["1+2=", "10+20="]
    assert drop_overlong_prompts(rows, tokenizer, 5, "train")["prompt"] == ["1+2="]
    with pytest.raises(ValueError, match=r"rl\.max_prompt_length=3: no test prompt"):
        drop_overlong_prompts(rows, tokenizer, 3, "test")
    cfg = compose_rlvr(["experiment=rlvr_gsm8k"])
    assert cfg.rl.max_prompt_length == 512  # data.max_prompt_length of the official GSM8K runs


def test_a_task_that_refuses_its_options_is_named_and_experiments_fit_every_task(tmp_path: Path) -> None:
    from vla_train.rlvr.tasks import GSM8KTask
    from vla_train.rlvr.training import build_task

    cfg = compose_rlvr(["experiment=rlvr_smoke", "task.operands=1"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"task \(vla_train\.rlvr\.tasks\.ArithmeticTask\): task\.operands=1"
    ):
        build_task(cfg.task, "task")
    for experiment in ("rlvr_smoke", "rlvr_arithmetic"):  # they set no task option: any task fits
        cfg = compose_rlvr([f"experiment={experiment}", "task=gsm8k"], tmp_path)
        assert isinstance(build_task(cfg.task, "task"), GSM8KTask)
