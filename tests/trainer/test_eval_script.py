"""scripts/eval.py: a checkpoint evaluated from its run's saved config, resumable, with overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from eval import main as evaluate_checkpoint
from helpers import compose_train

from vla_train import train

pytestmark = pytest.mark.slow


def test_eval_script_evaluates_and_resumes(lift_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(
        compose_train(
            [
                "trainer=tiny",
                "logger=none",
                "evaluate=false",
                f"env.dataset.root={lift_dataset}",
                "env.dataset.generate=false",
                "trainer.steps=2",
            ],
            run,
        )
    )
    overrides = ["env.eval.episodes=3", "env.eval.max_steps=6", "env.eval.videos=0", "env.eval.num_workers=2"]
    metrics = evaluate_checkpoint([str(run), *overrides])
    assert metrics["eval/episodes"] == 3 and metrics["eval/errors"] == 0
    results = run / "eval" / "step_0000002" / "episodes.jsonl"
    first = results.read_text()
    assert len(first.splitlines()) == 3
    evaluate_checkpoint([str(run / "checkpoints" / "step_0000002"), *overrides])  # nothing left to run
    assert results.read_text() == first
    with pytest.raises(KeyError, match=r"no key 'env\.eval\.trials'"):
        evaluate_checkpoint([str(run), "env.eval.trials=3"])
    from vla_train.config import ConfigError

    with pytest.raises(ConfigError, match=r"env\.eval\.num_workers=0"):  # re-validated: no endless loop
        evaluate_checkpoint([str(run), "env.eval.num_workers=0"])
    # what the checkpoint was trained as is kept: another chunk size would load and act wrongly
    for override in ("head.num_queries=4", "env.chunk_size=4", "env.cameras=[agentview]"):
        key = override.split("=")[0]
        with pytest.raises(
            ConfigError, match=rf"{re.escape(override)}: the checkpoint was trained with {key}="
        ):
            evaluate_checkpoint([str(run), override])
    with pytest.raises(ValueError, match=r"env\.eval\.tasks=\[5\]: robosuite_lift has one task"):
        evaluate_checkpoint([str(run), *overrides, "env.eval.tasks=[5]"])
    with pytest.raises(ValueError, match=r"env\.eval\.episodes=0: nothing to evaluate"):
        evaluate_checkpoint([str(run), "env.eval.episodes=0"])
    for key, value in (("task", "Lfit"), ("robot", "Pandaa"), ("controller", "OSC")):  # not 0 % per episode
        with pytest.raises(ValueError, match=rf"env\.simulator\.{key}='{value}': robosuite has no such"):
            evaluate_checkpoint([str(run), *overrides, f"env.simulator.{key}={value}"])

    # a run saved before options were added (optimizer.other, trainer.weight_dtype, …) still evaluates
    from omegaconf import OmegaConf

    saved = OmegaConf.load(run / "config.yaml")
    for node, key in (("optimizer", "other"), ("optimizer", "aux_lr_ratio"), ("trainer", "weight_dtype")):
        del saved[node][key]
    OmegaConf.save(saved, run / "config.yaml")
    assert evaluate_checkpoint([str(run), *overrides, "--name", "old"])["eval/episodes"] == 3

    from vla_train.trainer.checkpoint import CheckpointUnreadable

    weights = run / "checkpoints" / "step_0000002" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = next(iter(tensors))
    save_file({**tensors, name: torch.full_like(tensors[name], float("nan"))}, weights)  # edited to NaN
    with pytest.raises(CheckpointUnreadable, match=rf"non-finite weights .* \['{re.escape(name)}'\]"):
        evaluate_checkpoint([str(run), *overrides, "--name", "nan"])
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointUnreadable, match=r"step_0000002/model\.safetensors cannot be read"):
        evaluate_checkpoint([str(run), *overrides, "--name", "truncated"])


@pytest.mark.parametrize("name", ["../../x", "/home/me/results", "", "..", "a/b"])
def test_results_stay_inside_the_runs_eval_directory(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:  # argparse: before a checkpoint is loaded
        evaluate_checkpoint(["outputs/any-run", "--name", name])
    assert refused.value.code == 2 and "not a plain directory name" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["evaluate=2", "evaluate=0", "evaluate=yes"])
def test_a_boolean_of_the_saved_config_takes_only_true_or_false(override: str) -> None:
    from omegaconf import OmegaConf

    from vla_train.config import ConfigError
    from vla_train.inference import apply_overrides

    with pytest.raises(ConfigError, match=rf"{override}: must be true or false"):
        apply_overrides(OmegaConf.create({"evaluate": True}), [override])
    assert apply_overrides(OmegaConf.create({"evaluate": True}), ["evaluate=false"]).evaluate is False


@pytest.mark.parametrize("override", ["=5", "env.chunk_size", "+=1"])
def test_overrides_without_a_key_and_a_value_are_named(override: str) -> None:
    from omegaconf import OmegaConf

    from vla_train.inference import apply_overrides

    with pytest.raises(ValueError, match=r"must be key=value"):
        apply_overrides(OmegaConf.create({"env": {"chunk_size": 8}}), [override])


@pytest.mark.parametrize(
    ("content", "problem"), [(": : [not yaml\n\t-", "is not readable YAML"), ("- a\n", "list")]
)
def test_a_damaged_config_yaml_is_named(tmp_path: Path, content: str, problem: str) -> None:
    from vla_train.inference import load_policy
    from vla_train.trainer.checkpoint import STATE_FILE

    checkpoint = tmp_path / "checkpoints" / "step_0000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / STATE_FILE).write_text("{}")
    (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.yaml'} .*{problem}"):
        load_policy(tmp_path)
    from vla_train.training import check_resumed_config

    with pytest.raises(
        ValueError, match=rf"{tmp_path / 'config.yaml'} .*{problem}"
    ):  # resuming train.py or RLVR
        check_resumed_config(tmp_path / "config.yaml", compose_train([]))


def test_a_checkpoint_still_being_written_is_not_resumed(tmp_path: Path) -> None:
    from vla_train.trainer.checkpoint import STATE_FILE, list_checkpoints

    for name in ("step_0000010", "step_0000020.partial"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / STATE_FILE).write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000010"]
