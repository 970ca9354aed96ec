"""Bad input is never silent: ~160 bad overrides, each refused naming its key.

Nearly all are validation only (compose + ``validate_config``, refused before anything is built), so
the file runs in seconds and keeps every check of issue 17's list from regressing: ranges, choices,
types, unknown keys (also through Hydra's ``+`` append), misspelled group options and incompatible
parts; sizes that must divide are checked as the parts are built.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import compose_rlvr, compose_train
from hydra.errors import ConfigCompositionException, HydraException

from vla_train.config import ConfigError, validate_config

#: key → values it must refuse (written out here, independently of the checks in vla_train/config.py)
BAD_VALUES = {
    "optimizer.lr": ["0", "-1e-4", "inf", "nan"],
    "optimizer.aux_lr_ratio": ["0", "-1", "inf"],
    "optimizer.lr_scale_factor": ["0", "-2", "nan"],
    "optimizer.weight_decay": ["-0.1", "inf"],
    "optimizer.momentum": ["-0.1", "1", "1.5"],
    "optimizer.adamw_eps": ["0", "-1e-8"],
    "optimizer.betas": ["[0.9]", "[0.9,1.0]", "[-0.1,0.9]", "[0.9,0.99,0.999]"],
    "optimizer.kp": ["-1", "6", "7"],
    "optimizer.ns_steps": ["0", "-3", "18446744073709551616"],
    "optimizer.rank": ["0", "-16"],
    "optimizer.tau": ["0.55", "0", "1.0"],
    "optimizer.vision": ["sgd", "Muon"],
    "optimizer.language": ["lion", "MUON"],
    "optimizer.action": ["pion2", ""],
    "optimizer.other": ["sgd", "none"],
    "optimizer.lr_scale": ["adam", "Moonlight"],
    "optimizer.compute_dtype": ["int8", "fp32"],
    "optimizer.per_head_modalities": ["[actions]", "[vision,audio]"],
    "trainer.steps": ["0", "-5", "18446744073709551616"],
    "trainer.seed": ["-1", "99999999999999999999"],
    "env.cameras": ["[]"],
    "trainer.batch_size": ["0", "-64"],
    "trainer.gradient_accumulation_steps": ["0", "-2"],
    "trainer.log_every": ["0"],
    "trainer.progress_interval_s": ["0", "-1", "inf"],
    "trainer.max_nonfinite_steps": ["0"],
    "trainer.warmup_steps": ["-1", "-10"],
    "trainer.decay_steps": ["1", "-1"],
    "trainer.milestones": ["[-5]", "[0]"],
    "trainer.gamma": ["0", "-1", "inf"],
    "trainer.min_lr_ratio": ["-0.1", "2"],
    "trainer.max_grad_norm": ["0", "-1", "inf"],
    "trainer.num_workers": ["-1"],
    "trainer.checkpoint_every": ["-1"],
    "trainer.eval_every": ["-1"],
    "trainer.diagnostics_every": ["-1"],
    "trainer.keep_checkpoints": ["-1", "-5"],
    "trainer.stop_at_step": ["0", "-1"],
    "trainer.schedule": ["linear", "Cosine"],
    "trainer.mixed_precision": ["fp8", "bf32"],
    "env.eval.tasks": ["[]"],  # LIBERO would evaluate no task; null selects all
    "trainer.strategy": ["fsdp2", "deepspeed", "DDP"],
    "trainer.weight_dtype": ["float16", "int8"],
    "logger.mode": ["on", "Online"],
    "env.n_action_steps": ["0", "9", "-1"],
    "env.state_history": ["0", "-8"],
    "env.chunk_size": ["0", "-8"],
    "env.image_size": ["0", "-64"],
    "env.fps": ["0", "-10"],
    "env.dataset.num_demos": ["0", "-3"],
    "env.eval.episodes": ["-1"],
    "env.eval.max_steps": ["0", "-200"],
    "env.eval.videos": ["-1"],
    "env.eval.num_workers": ["0", "-1"],
}
RANGE_CASES = [(key, value) for key, values in BAD_VALUES.items() for value in values]

#: (overrides, text the error must contain)
OTHER_CASES = [
    (["env=libero_object", "env.state_layout=raw"], "env.state_layout='raw'"),
    (["env.state_normalization=zscore"], "env.state_normalization"),
    # unknown keys, also through Hydra's append syntax, which slips past the schemas by itself
    (["+trainer.foo=1"], "trainer.foo"),
    (["+optimizer.bar=2"], "optimizer.bar"),
    (["+env.eval.trials=3"], "env.eval.trials"),
    (["+env.dataset.path=x"], "env.dataset.path"),
    (["+logger.level=3"], "logger.level"),
    (["+backbone.width=3"], "backbone.width"),
    (["+head.depth=3"], "head.depth"),
    (["trainer.stepz=1"], "stepz"),
    (["optimizer.kpp=1"], "kpp"),
    (["env.dataset.repo=x"], "repo"),
    (["+foo=1"], "foo"),
    (["+env.foo=1"], "env.foo"),
    (["+env.dataset.foo=1"], "env.dataset.foo"),
    (["+optimizer.kp_steps=1"], "optimizer.kp_steps"),
    (["+trainer.lr=1e-4"], "trainer.lr"),
    # env.simulator is typed per simulator
    (["+env.simulator.foo=1"], "env.simulator.foo"),
    (["env.simulator.expert_noise=lots"], "env.simulator.expert_noise"),
    (["env=libero_goal", "env.simulator.hard_reset=maybe"], "env.simulator.hard_reset"),
    (["env=libero_goal", "+env.simulator.camera=front"], "env.simulator.camera"),
    (["env=libero_plus", "env.simulator.plus.per_category=many"], "env.simulator.plus.per_category"),
    (["env=droid", "+env.simulator.x=1"], "env.simulator.x"),
    # wrong types
    (["trainer.steps=abc"], "trainer.steps"),
    (["trainer.batch_size=1.5"], "trainer.batch_size"),
    (["optimizer.lr=fast"], "optimizer.lr"),
    (["optimizer.nesterov=maybe"], "optimizer.nesterov"),
    (["env.eval.episodes=1.5"], "env.eval.episodes"),
    (["optimizer.betas=0.9"], "optimizer.betas"),
    (["trainer.cpu=perhaps"], "trainer.cpu"),
    (["env.dataset.episodes=first"], "env.dataset.episodes"),
    (["trainer.gamma=high"], "trainer.gamma"),
    (["env.fps=ten"], "env.fps"),
    (["trainer.stop_at_step=later"], "trainer.stop_at_step"),
    (["optimizer.kp=two"], "optimizer.kp"),
    (["trainer.milestones=[a]"], "trainer.milestones"),
    (["evaluate=maybe"], "evaluate"),
    (["optimizer.momentum=high"], "optimizer.momentum"),
    (["trainer.warmup_steps=1.5"], "trainer.warmup_steps"),
    (["env.eval.num_workers=two"], "env.eval.num_workers"),
    (["env.dataset.generate=sometimes"], "env.dataset.generate"),
    # misspelled group options: an error, never the default run
    (["backbone=nope"], "nope"),
    (["head=nope"], "nope"),
    (["optimizer=nope"], "nope"),
    (["env=libero_object2"], "libero_object2"),
    (["trainer=fast"], "fast"),
    (["logger=tensorboard"], "tensorboard"),
    (["experiment=smok"], "smok"),
    (["ablation=S10"], "S10"),
    # parts that do not fit together
    (["backbone=pi05_tiny", "head=l1"], "head=pi05"),
    (["backbone=tiny", "head=pi05_tiny"], "backbone=pi05"),
    (["env.chunk_size=4", "env.n_action_steps=8"], "env.n_action_steps=8"),
    (["trainer.weight_dtype=bfloat16", "trainer.mixed_precision=no"], "trainer.mixed_precision"),
    (["trainer.steps=100", "trainer.decay_steps=50"], "trainer.decay_steps=50"),
    (["trainer.schedule=constant", "trainer.decay_steps=3000"], "trainer.decay_steps=3000"),
    (["trainer.strategy=fsdp", "trainer.eval_every=5"], "trainer.eval_every=5"),
    (["trainer.warmup_steps=200", "trainer.steps=100", "trainer.decay_steps=150"], "trainer.decay_steps=150"),
    (["optimizer.ns_steps=3", "optimizer.kp=4"], "optimizer.kp=4"),
    (["experiment=pi05_droid", "head=flow"], "head=pi05"),
    (["experiment=vla_adapter", "optimizer.lr=-1"], "optimizer.lr"),
    # a part's own limits (its check_options), before anything is built
    (["backbone.patch_size=7"], "backbone.image_size / backbone.patch_size = 64 / 7"),
    (["backbone.patch_size=0"], "backbone.patch_size=0"),
    (["backbone.vision_width=0"], "backbone.vision_width=0"),
    (["backbone.language_layers=0"], "backbone.language_layers=0"),
    (["backbone.max_instruction_tokens=0"], "backbone.max_instruction_tokens=0"),
    (["backbone.vision_heads=3"], "backbone.vision_width / backbone.vision_heads"),
    (["backbone.language_heads=3"], "backbone.language_width / backbone.language_heads"),
    # the user typed env.image_size: the backbone option it sets is named with where it comes from
    (["env.image_size=63"], "backbone.image_size is ${env.image_size}"),
    (["backbone.language_kv_heads=3"], "backbone.language_heads / backbone.language_kv_heads"),
    (["head=flow_tiny", "head.heads=5"], "head.heads=5"),
    (["head=flow_tiny", "head.num_inference_steps=0"], "head.num_inference_steps=0"),
    (["head=flow_tiny", "head.time_sampling=gauss"], "head.time_sampling='gauss'"),
    (["head=flow_tiny", "head.dct_loss_weight=-1"], "head.dct_loss_weight=-1"),
    (["head=flow_tiny", "head.state_input=both"], "head.state_input='both'"),
    (["head=flow_tiny", "head.mlp_ratio=0"], "head.mlp_ratio=0"),
    (["head.input_noise_std=nan"], "head.input_noise_std=nan"),
    (["head.num_queries=-1"], "head.num_queries=-1"),
    (["evaluate=2"], "evaluate=2: must be true or false"),  # OmegaConf alone reads it as true
    (["optimizer.nesterov=2"], "optimizer.nesterov=2: must be true or false"),
    (["env.dataset.generate=0"], "env.dataset.generate=0: must be true or false"),
    (["evaluate=true", "env.eval.episodes=0"], "env.eval.episodes=0 with evaluate=true"),
    (["head.heads=0"], "head.heads=0"),
]


def refused(overrides: list[str]) -> str:
    """The error text a bad config gets (composition or validation); fails the test if it is accepted."""
    try:
        validate_config(compose_train(overrides))
    except (ConfigError, ConfigCompositionException, HydraException) as error:
        return f"{error} {error.__cause__ or ''}"
    pytest.fail(f"accepted: {overrides}")


@pytest.mark.parametrize(("key", "value"), RANGE_CASES, ids=[f"{k}={v}" for k, v in RANGE_CASES])
def test_out_of_range_values_are_refused_naming_the_key(key: str, value: str) -> None:
    assert key.rsplit(".", 1)[-1] in refused([f"{key}={value}"])


@pytest.mark.parametrize(("overrides", "named"), OTHER_CASES, ids=[" ".join(o) for o, _ in OTHER_CASES])
def test_unknown_keys_wrong_types_options_and_misfits_are_refused(overrides: list[str], named: str) -> None:
    assert named in refused(overrides)


#: train_rlvr.py's options: key → values it must refuse (its optimizer group is train.py's, checked above)
RLVR_BAD_VALUES = {
    "rl.steps": ["0", "-1"],
    "rl.prompts_per_step": ["0", "-8"],
    "rl.group_size": ["1", "0"],
    "rl.micro_batch": ["0", "7"],
    "rl.prompts_per_generation": ["0", "12"],
    "rl.max_completion_length": ["0"],
    "rl.max_prompt_length": ["0", "-5"],
    "rl.temperature": ["0", "-1", "inf", "nan"],
    "rl.seed": ["-1", "4294967296"],
    "rl.log_every": ["0"],
    "rl.save_every": ["0"],
    "rl.eval_every": ["-1"],
    "rl.diagnostics_every": ["-1"],
    "rl.eval_examples": ["0", "-4"],
    "rl.eval_batch_size": ["0"],
    "rl.mixed_precision": ["fp16", "fp8"],
    "algorithm.name": ["ppo", "GRPO"],
    "algorithm.epsilon": ["-0.1", "inf"],
    "algorithm.epsilon_high": ["-1"],
    "algorithm.beta": ["-1", "nan"],
    "model.dtype": ["int8", "fp32"],
    "optimizer.lr": ["0", "inf"],
    "optimizer.betas": ["[0.9]"],
    "optimizer.language": ["sgd"],
    "optimizer.tau": ["0.55"],
}
RLVR_CASES = [(key, value) for key, values in RLVR_BAD_VALUES.items() for value in values]


@pytest.mark.parametrize(("key", "value"), RLVR_CASES, ids=[f"{k}={v}" for k, v in RLVR_CASES])
def test_rlvr_values_out_of_range_are_refused_naming_the_key(key: str, value: str) -> None:
    from vla_train.rlvr.training import validate_rlvr_config

    with pytest.raises(ConfigError) as refusal:
        validate_rlvr_config(compose_rlvr(["experiment=rlvr_smoke", f"{key}={value}"]))
    assert key in str(refusal.value)


def test_the_fuzz_covers_at_least_150_cases_and_every_range_checked_key() -> None:
    from vla_train.config import RANGES

    assert len(RANGE_CASES) + len(OTHER_CASES) >= 150
    assert set(RANGES) <= set(BAD_VALUES)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("env.eval.tasks=[5]", r"env\.eval\.tasks=\[5\]: robosuite_lift has one task, index 0"),
        (
            "env.simulator.task=Lfit",
            r"env\.simulator\.task='Lfit': robosuite has no such task; it has \[.*'Lift'",
        ),
        (
            "env.simulator.robot=panda",
            r"env\.simulator\.robot='panda': robosuite has no such robot; .*'Panda'",
        ),
    ],
)
def test_a_task_the_env_lacks_is_refused_before_anything_is_recorded_or_trained(
    override: str, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task robosuite_lift lacks (``env.eval.tasks=[5]``: it has one; a misspelled robosuite task or
    robot) is named with what is allowed when the run starts, not when its final evaluation does, where
    every episode would fail."""
    from envs.robosuite.lift import RobosuiteLiftAdapter
    from vla_train.training import train

    def reached(self: RobosuiteLiftAdapter) -> None:
        pytest.fail(f"the training data was built before {override} was checked")

    monkeypatch.setattr(RobosuiteLiftAdapter, "training_data", reached)
    cfg = compose_train(["env=robosuite_lift", override], output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=named):
        train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["head.heads=3"], "head.heads=3"),  # widths that depend on the backbone's
        (["head=l1_bridge", "head.heads=3"], "head.heads=3"),
    ],
)
def test_sizes_that_do_not_divide_are_named_when_the_policy_is_built(
    overrides: list[str], named: str
) -> None:
    """Checked as the parts are built (the head's width is the backbone's), before any training."""
    from vla_train.training import build_policy

    cfg = compose_train(overrides)
    validate_config(cfg)
    with pytest.raises(Exception, match=re.escape(named)):  # ValueError, wrapped by Hydra's instantiate
        build_policy(cfg, None, "", "")
