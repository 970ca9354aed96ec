"""The real config tree: every option composes and instantiates; bad overrides fail naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose_train, configs_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate

from policies.vla_policy import VLAPolicy
from vla_train.config import ConfigError, validate_config
from vla_train.optim import ModalityOptimizer
from vla_train.training import build_env_adapter

ROOT = Path(__file__).resolve().parents[1]


FULL_SIZE_BACKBONES = {"qwen3_vl": "qwen3_vl_tiny", "prismatic_qwen25": "prismatic_tiny"}


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
    if backbone in FULL_SIZE_BACKBONES:
        # full-size weights come from the hub; the same class is built from a tiny config in the twin
        twin = compose_train([f"backbone={FULL_SIZE_BACKBONES[backbone]}"], tmp_path)
        assert get_class(cfg.backbone._target_) is get_class(twin.backbone._target_)
        return
    policy = tiny_policy(cfg)
    assert sum(p.numel() for p in policy.parameters()) > 0


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
def test_table_a6_settings_are_command_line_overrides(setting: str, tmp_path: Path) -> None:
    vision, language, action = TABLE_A6[setting]
    cfg = compose_train(
        [f"optimizer.vision={vision}", f"optimizer.language={language}", f"optimizer.action={action}"],
        tmp_path,
    )
    built = build_optimizer(cfg, tiny_policy(cfg))
    hidden = {(g["modality"], g["algorithm"]) for g in built.param_groups if g["algorithm"] != "adamw"}
    expected = {
        (m, a)
        for m, a in zip(("vision", "language", "action"), TABLE_A6[setting], strict=True)
        if a != "adamw"
    }
    assert hidden == expected


@pytest.mark.parametrize(
    ("overrides", "error", "names"),
    [
        (["optimizer=sgd"], ConfigCompositionException, "sgd"),
        (["head=transformer"], ConfigCompositionException, "transformer"),
        (["optimizer.kpp=1"], ConfigCompositionException, "kpp"),
        (["optimizer.kp=two"], ConfigCompositionException, "kp"),
        (["trainer.stepz=5"], ConfigCompositionException, "stepz"),
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
