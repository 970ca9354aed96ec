"""The real config tree: every option composes and instantiates; bad overrides fail naming the key."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_train, configs_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate

from policies.contract import IncompatibleParts
from policies.vla_policy import VLAPolicy
from vla_train.config import ConfigError, validate_config
from vla_train.optim import ModalityOptimizer
from vla_train.options import instantiate_policy, own_options
from vla_train.training import build_env_adapter

ROOT = Path(__file__).resolve().parents[1]


#: π0.5's VLM pairs only with its own action expert, and the expert only with π0.5's VLM
PI05_BACKBONES, PI05_HEADS = {"pi05", "pi05_tiny"}, {"pi05", "pi05_tiny"}


def options(group: str) -> list[str]:
    """The options a user can choose (``_name.yaml`` files are shared parts, not options)."""
    return sorted(p.stem for p in (Path(configs_dir()) / group).glob("*.yaml") if not p.stem.startswith("_"))


def tiny_policy(cfg) -> VLAPolicy:
    return VLAPolicy(
        instantiate(cfg.backbone),
        instantiate(cfg.head),
        action_dim=cfg.env.action_dim,
        state_dim=cfg.env.state_dim,
        chunk_size=cfg.env.chunk_size,
        n_action_steps=cfg.env.n_action_steps,
    )


def meta_policy(cfg) -> VLAPolicy:
    """Build on the current device with random weights: the full-size architectures without a download."""
    env = cfg.env
    return instantiate_policy(
        cfg, action_dim=env.action_dim, state_dim=env.state_dim, chunk_size=env.chunk_size, random_init=True
    )


def build_optimizer(cfg, policy: VLAPolicy) -> ModalityOptimizer:
    rules = policy.optimizer_rules()
    return instantiate(cfg.optimizer)(
        policy, rules.modality_rules, adamw_patterns=rules.adamw_patterns, per_head_rules=rules.per_head_rules
    )


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_option_builds_on_the_tiny_policy(optimizer: str, tmp_path: Path) -> None:
    cfg = compose_train([f"optimizer={optimizer}"], tmp_path)
    validate_config(cfg)
    built = build_optimizer(cfg, tiny_policy(cfg))
    algorithms = {group["modality"]: set() for group in built.param_groups}
    for group in built.param_groups:
        algorithms[group["modality"]].add(group["algorithm"])
    for modality in ("vision", "language", "action"):
        expected = cfg.optimizer[modality]
        assert expected in algorithms[modality], (optimizer, modality, algorithms)
    if optimizer == "pion_per_head":
        assert any(g.get("per_head") for g in built.optimizers["pion"].param_groups)
    if optimizer == "muon_all":  # the footnote's exclusions are off: embeddings go to Muon
        muon_names = {n for g in built.optimizers["muon"].param_groups for n in g["param_names"]}
        assert "backbone.language.embed_tokens.weight" in muon_names


@pytest.mark.parametrize("head", options("head"))
@pytest.mark.parametrize("backbone", options("backbone"))
def test_every_backbone_and_head_instantiate_together(backbone: str, head: str, tmp_path: Path) -> None:
    cfg = compose_train([f"backbone={backbone}", f"head={head}"], tmp_path)
    backbone_class, head_class = get_class(cfg.backbone._target_), get_class(cfg.head._target_)
    fits = head_class.requirements(own_options(cfg.head)) <= backbone_class.provides
    if backbone in PI05_BACKBONES or head in PI05_HEADS:  # what the contract must say of π0.5's parts
        assert fits == (backbone in PI05_BACKBONES and head in PI05_HEADS)
    if fits:
        validate_config(cfg)
    else:
        with pytest.raises(ConfigError, match="do not fit"):  # refused before anything is built or downloaded
            validate_config(cfg)
    with torch.device("meta"), pytest.raises(IncompatibleParts) if not fits else contextlib.nullcontext():
        policy = meta_policy(cfg)  # full-size ones too: random weights, nothing downloaded
    if fits:  # the classes the options name
        assert type(policy.backbone) is backbone_class and type(policy.head) is head_class


@pytest.mark.parametrize("env", options("env"))
def test_every_env_composes_and_its_adapter_imports(env: str, tmp_path: Path) -> None:
    cfg = compose_train([f"env={env}"], tmp_path)
    validate_config(cfg)
    assert build_env_adapter(cfg.env).cfg.name == cfg.env.name


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in ("trainer", "logger", "experiment") for o in options(g)]
)
def test_every_trainer_logger_and_experiment_composes(group: str, option: str, tmp_path: Path) -> None:
    validate_config(compose_train([f"{group}={option}"], tmp_path))


TABLE_A6 = {  # setting: (vision, language, action)
    "S1": ("adamw", "adamw", "adamw"),
    "S2": ("adamw", "adamw", "muon"),
    "S3": ("adamw", "adamw", "pion"),
    "S4": ("adamw", "muon", "adamw"),
    "S5": ("adamw", "pion", "adamw"),
    "S6": ("muon", "adamw", "adamw"),
    "S7": ("pion", "adamw", "adamw"),
    "S8": ("muon", "muon", "muon"),
    "S9": ("muon", "muon", "pion"),
}


@pytest.mark.parametrize("setting", sorted(TABLE_A6))
@pytest.mark.parametrize("as_option", [False, True])
def test_table_a6_settings_are_command_line_overrides(setting: str, as_option: bool, tmp_path: Path) -> None:
    vision, language, action = TABLE_A6[setting]
    overrides = [f"optimizer.vision={vision}", f"optimizer.language={language}", f"optimizer.action={action}"]
    cfg = compose_train([f"ablation={setting}"] if as_option else overrides, tmp_path)
    built = build_optimizer(cfg, tiny_policy(cfg))
    hidden = {(g["modality"], g["algorithm"]) for g in built.param_groups if g["algorithm"] != "adamw"}
    expected = {
        (m, a)
        for m, a in zip(("vision", "language", "action"), TABLE_A6[setting], strict=True)
        if a != "adamw"
    }
    if not (setting == "S1" and as_option):  # ablation=S1 is configuration (i): connectors on AdamW too
        expected.add(("other", "muon"))
    assert hidden == expected


@pytest.mark.parametrize(
    ("overrides", "error", "names"),
    [
        (["optimizer=sgd"], ConfigCompositionException, "sgd"),
        (["head=transformer"], ConfigCompositionException, "transformer"),
        (["optimizer.kpp=1"], ConfigCompositionException, "kpp"),
        (["optimizer.kp=two"], ConfigCompositionException, "kp"),
        (["trainer.stepz=5"], ConfigCompositionException, "stepz"),
        (["experiment=smok"], ConfigCompositionException, "smok"),  # not silently the default run
        (["ablation=S10"], ConfigCompositionException, "S10"),
    ],
)
def test_bad_overrides_fail_at_compose_time(overrides, error, names: str, tmp_path: Path) -> None:
    with pytest.raises(error) as info:
        compose_train(overrides, tmp_path)
    text = f"{info.value} {info.value.__cause__}"
    assert names in text


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("optimizer.kp=7", "optimizer.kp=7"),
        ("optimizer.action=sgd", "optimizer.action='sgd'"),
        ("optimizer.tau=0.55", "optimizer.tau=0.55"),
        ("trainer.schedule=linear", "trainer.schedule='linear'"),
        ("env.n_action_steps=20", "env.n_action_steps=20"),
        ("trainer.decay_steps=3", "trainer.decay_steps=3"),
        ("optimizer.lr_scale_factor=0", "optimizer.lr_scale_factor=0"),
        ("optimizer.aux_lr_ratio=-0.1", "optimizer.aux_lr_ratio=-0.1"),
        ("optimizer.lr=inf", "optimizer.lr=inf"),
        # the silent misreadings and hangs of issue 17
        ("env.eval.num_workers=0", "env.eval.num_workers=0"),
        ("env.eval.num_workers=-1", "env.eval.num_workers=-1"),
        ("trainer.max_grad_norm=-1", "trainer.max_grad_norm=-1"),
        ("trainer.gamma=-1", "trainer.gamma=-1"),
        ("trainer.min_lr_ratio=2", "trainer.min_lr_ratio=2"),
        ("trainer.checkpoint_every=-1", "trainer.checkpoint_every=-1"),
        ("trainer.eval_every=-1", "trainer.eval_every=-1"),
        ("trainer.diagnostics_every=-1", "trainer.diagnostics_every=-1"),
        ("trainer.stop_at_step=-1", "trainer.stop_at_step=-1"),
        ("trainer.warmup_steps=-10", "trainer.warmup_steps=-10"),
        ("trainer.milestones=[-5]", "trainer.milestones=[-5]"),
        ("optimizer.betas=[0.9]", "optimizer.betas=[0.9]"),
        ("optimizer.compute_dtype=int8", "optimizer.compute_dtype='int8'"),
        ("optimizer.momentum=1.5", "optimizer.momentum=1.5"),
        ("trainer.weight_dtype=float16", "trainer.weight_dtype='float16'"),
    ],
)
def test_out_of_range_values_fail_before_training(override: str, names: str, tmp_path: Path) -> None:
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace(".", r"\.")):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("override", "names"),
    [("optimizer.kp=7", "optimizer.kp"), ("optimizer=nope", "nope"), ("head=nope", "nope")],
)
def test_train_py_exits_non_zero_naming_the_bad_override(override: str, names: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "train.py", override, f"hydra.run.dir={tmp_path}", "logger=none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert names in result.stderr + result.stdout


#: (global batch, learning rate): Table A1 for the LIBERO presets; Table A3 gives none for π0.5, which
#: uses openpi's fine-tuning values
PRESET_BATCH_AND_LR = {"vla_adapter": (64, 1e-4), "vlanext": (256, 1e-4), "pi05": (32, 2.5e-5)}


def sweep_points(params) -> list[list[str]]:
    """Every combination of a preset's ``hydra.sweeper.params`` as override lists."""
    import itertools

    if not params:
        return [[]]
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [[f"{k}={v}" for k, v in zip(keys, combo, strict=True)] for combo in itertools.product(*values)]


@pytest.mark.parametrize("preset", [p for p in options("experiment") if p not in ("demo", "smoke")])
def test_every_paper_preset_and_sweep_point_composes_and_builds(preset: str, tmp_path: Path) -> None:
    cfg = compose_train([f"experiment={preset}"], tmp_path)
    family = next(name for name in PRESET_BATCH_AND_LR if preset.startswith(name))
    assert get_class(cfg.backbone._target_).random_init(own_options(cfg.backbone))  # a full-size download
    assert (cfg.trainer.batch_size, cfg.optimizer.lr) == PRESET_BATCH_AND_LR[family]
    names = set()
    for point in sweep_points(cfg.hydra.sweeper.params):
        swept = compose_train([f"experiment={preset}", *point], tmp_path)
        validate_config(swept)
        names.add(swept.run_name)
    assert len(names) == len(sweep_points(cfg.hydra.sweeper.params))  # one run directory per sweep point
    with torch.device("meta"):
        assert sum(p.numel() for p in meta_policy(cfg).parameters()) > 1e9


def test_pi05_preset_follows_table_a3(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=pi05_droid"], tmp_path)
    assert cfg.trainer.steps == 20000 and cfg.env.name == "droid" and not cfg.evaluate
    assert cfg.env.cameras == ["exterior_1_left", "wrist_left"]  # one third-view + one wrist camera
    assert cfg.head.pretrained == cfg.backbone.pretrained == "lerobot/pi05_base"
    assert cfg.hydra.sweeper.params.optimizer == "adamw,muon,pion"  # configurations (i)–(iii)


def test_paper_step_budgets_follow_table_a1(tmp_path: Path) -> None:
    steps = {
        (preset, env): compose_train([f"experiment={preset}", f"env={env}"], tmp_path).trainer.steps
        for preset in ("vla_adapter", "vlanext")
        for env in ("libero_object", "libero_goal")
    }
    assert steps == {
        ("vla_adapter", "libero_object"): 1500,
        ("vla_adapter", "libero_goal"): 15000,
        ("vlanext", "libero_object"): 4000,
        ("vlanext", "libero_goal"): 10000,
    }


def test_joblib_jobs_are_pinned_to_gpus_round_robin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from vla_train.training import pin_sweep_job_to_gpu

    cfg = compose_train([], tmp_path)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.launcher = {
            "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
        }
        cfg.hydra.job.num = 5
    HydraConfig.instance().set_config(cfg)
    # a private copy of the environment: the pinned device must not leak into later tests' subprocesses
    monkeypatch.setattr(
        os, "environ", {k: v for k, v in os.environ.items() if k != "ACCELERATE_TORCH_DEVICE"}
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    pin_sweep_job_to_gpu()
    assert os.environ["ACCELERATE_TORCH_DEVICE"] == "cuda:1"
    os.environ["ACCELERATE_TORCH_DEVICE"] = "cuda:3"  # the user's choice wins
    pin_sweep_job_to_gpu()
    assert os.environ["ACCELERATE_TORCH_DEVICE"] == "cuda:3"
    compose_train([], tmp_path)  # leave a single-run Hydra config behind for later tests


def test_libero_plus_keeps_every_libero_setting(tmp_path: Path) -> None:
    """env=libero_plus is env=libero_object plus its LIBERO-Plus selection: the typed schemas never reset
    the shared LIBERO values (cameras, image size, fps, protocol) to their defaults."""
    from omegaconf import OmegaConf

    plus = OmegaConf.to_container(compose_train(["env=libero_plus"], tmp_path).env)
    base = OmegaConf.to_container(compose_train(["env=libero_object"], tmp_path).env)
    assert plus["simulator"].pop("plus") == {
        "task_list": None,
        "suites": None,
        "categories": None,
        "per_category": None,
    }
    for key in ("name", "adapter"):
        del plus[key], base[key]
    assert plus["eval"].pop("max_steps") == 520 and base["eval"].pop("max_steps") == 280
    assert plus == base
    assert base["cameras"] == ["image", "image2"] and (base["fps"], base["image_size"]) == (10, 256)
