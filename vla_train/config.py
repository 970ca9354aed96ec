"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

Each YAML option under ``configs/`` starts from one of these schemas (``defaults: [<schema>, _self_]``),
so a misspelled key or a value of the wrong type fails when Hydra composes the config — before any
model is built — with a message naming the key. Range checks that types cannot express (``kp`` in
[0, ns_steps], a known ``tau``) run in :func:`validate_config`, also before anything is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from vla_train.optim.assignment import ALGORITHMS, MODALITIES
from vla_train.optim.newton_schulz import LPMUON_TAUS
from vla_train.optim.spectral import LR_SCALE_RULES


class ConfigError(ValueError):
    """A config value is out of range; the message names the key, the value and what is allowed."""


# ----------------------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    """Modality-wise optimizer (Table A1 / A6); every field is a plain command-line override."""

    _target_: str = "vla_train.optim.build_modality_optimizer"
    _partial_: bool = True
    vision: str = "muon"
    language: str = "muon"
    action: str = "pion"
    other: str = "muon"  # connectors: projectors, meta queries, state projectors (the official "O")
    lr: float = 1e-4
    aux_lr_ratio: float = 1.0  # lr × this for embeddings, output layers, norms, biases (VLANeXt: 0.1)
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adamw_eps: float = 1e-8
    momentum: float = 0.95
    nesterov: bool = True
    lr_scale: str = "moonlight"
    lr_scale_factor: float | None = None  # null: the rule's own (moonlight 0.2); π0.5's official run 2.0
    ns_steps: int = 5
    kp: int = 0
    rank: int = 16
    drop_null_directions: bool = True  # LRMuon: Alg. 1's k_eff; false = the official code's min(k, m, n)
    tau: float = 0.5
    compute_dtype: str = "auto"
    per_head_modalities: list[str] = field(default_factory=list)
    exclude_embeddings_and_outputs: bool = True


# ------------------------------------------------------------------------------------- env and data
@dataclass
class DatasetConfig:
    """A LeRobot dataset by hub id, or a local root (``root``); ``generate`` writes it when missing."""

    repo_id: str = MISSING
    root: str | None = None
    episodes: list[int] | None = None
    generate: bool = False
    num_demos: int = 50
    video: bool = False
    cache_in_memory: bool = False


@dataclass
class EvalConfig:
    """The rollout protocol; environments with fixed task suites (LIBERO) add their own fields."""

    episodes: int = 10
    max_steps: int = 200
    videos: int = 2
    seed: int = 1000
    num_workers: int = 1  # env worker processes; the policy runs once per step on all of them
    tasks: list[int] | None = None  # benchmarks with task suites: a subset of task indices


@dataclass
class EnvConfig:
    """One environment: its data, its observation/action layout and its rollout protocol."""

    name: str = MISSING
    adapter: str = MISSING  # class path of the envs.base.EnvAdapter: data, transforms, simulator
    instruction: str | None = None
    cameras: list[str] = field(default_factory=list)
    image_size: int = 64
    state_dim: int = MISSING
    action_dim: int = MISSING
    chunk_size: int = 8
    n_action_steps: int = 8
    fps: int = 20
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    simulator: Any = None  # each environment's schema types it (RobosuiteEnvConfig, LiberoEnvConfig, …)
    augmentation: Any = None  # training-time image augmentation (a _target_ node), e.g. env=droid's


@dataclass
class RobosuiteSimulatorConfig:
    """robosuite: the task and robot, and how the scripted expert records demonstrations."""

    task: str = "Lift"
    robot: str = "Panda"
    controller: str = "OSC_POSE"
    expert_noise: float = 0.1
    reflections: bool = False
    max_demo_steps: int = 150
    steps_after_success: int = 10


@dataclass
class RobosuiteEnvConfig(EnvConfig):
    simulator: RobosuiteSimulatorConfig = field(default_factory=RobosuiteSimulatorConfig)


@dataclass
class LiberoSimulatorConfig:
    """LIBERO: the suite, the rendering and reset protocol, and where its assets and config live."""

    suite: str = MISSING
    camera_size: int = 256
    num_steps_wait: int = 10
    hard_reset: bool = True
    control_fps: int = 20
    assets_dir: str | None = None
    config_dir: str | None = None


@dataclass
class LiberoEnvConfig(EnvConfig):
    simulator: LiberoSimulatorConfig = field(default_factory=LiberoSimulatorConfig)


@dataclass
class LiberoPlusSelection:
    """Which LIBERO-Plus tasks to evaluate (``envs.libero.plus``)."""

    task_list: str | None = None
    suites: list[str] | None = None
    categories: list[str] | None = None
    per_category: int | None = None


@dataclass
class LiberoPlusSimulatorConfig(LiberoSimulatorConfig):
    plus: LiberoPlusSelection = field(default_factory=LiberoPlusSelection)


@dataclass
class LiberoPlusEnvConfig(LiberoEnvConfig):
    simulator: LiberoPlusSimulatorConfig = field(default_factory=LiberoPlusSimulatorConfig)


@dataclass
class NoSimulatorConfig:
    """A real robot: nothing to simulate (evaluated by serving the policy)."""


@dataclass
class DroidEnvConfig(EnvConfig):
    """DROID: which recorded state and action the dataset holds (``envs.droid.spaces``)."""

    state_space: str = "joint"
    action_space: str = "joint_velocity"
    simulator: NoSimulatorConfig = field(default_factory=NoSimulatorConfig)


# ------------------------------------------------------------------------------------------ trainer
@dataclass
class TrainerConfig:
    steps: int = 1500
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    num_workers: int = 4
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine | multistep
    decay_steps: int | None = None  # cosine: the decay horizon (null: trainer.steps; openpi's π0.5 30k)
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"  # auto (bf16 on GPU, no on CPU) | no | bf16 | fp16
    weight_dtype: str = "float32"  # bfloat16: the official runs' bf16 weights and states (README: Devices)
    cpu: bool = False
    log_every: int = 10
    diagnostics_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0
    resume: Any = False  # false | true (latest in the run dir) | a checkpoint or run path
    max_nonfinite_steps: int = 10
    stop_at_step: int | None = None  # checkpoint and stop here (e.g. a time-limited job); resume later
    seed: int = 0


@dataclass
class LoggerConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "vla-train"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    backbone: Any = MISSING
    head: Any = MISSING
    optimizer: OptimizerConfig = MISSING
    env: EnvConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    run_name: str = MISSING
    output_dir: str = MISSING
    evaluate: bool = True


#: packages whose modules register the schemas of the parts they define (vla_train.schemas)
PART_PACKAGES = ("policies.backbones", "policies.heads")


def suite_steps(suite: str, object_steps: int, other_steps: int) -> int:
    """``${suite_steps:<suite>,<object>,<others>}``: Table A1 gives LIBERO-Object fewer steps."""
    return int(object_steps if suite == "libero_object" else other_steps)


def register_configs() -> None:
    """Make the schemas (and the presets' resolvers) available to the YAML files (idempotent)."""
    if not OmegaConf.has_resolver("suite_steps"):
        OmegaConf.register_new_resolver("suite_steps", suite_steps)
    if not OmegaConf.has_resolver("droid_state_dim"):
        from envs.droid import spaces

        OmegaConf.register_new_resolver("droid_state_dim", spaces.state_dim)
        OmegaConf.register_new_resolver("droid_action_dim", spaces.action_dim)
    for package in PART_PACKAGES:  # each part registers its schema from its own module
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{module.name}")
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    store.store(group="env", name="env_schema", node=EnvConfig)
    store.store(group="env", name="droid_schema", node=DroidEnvConfig)
    store.store(group="env", name="robosuite_schema", node=RobosuiteEnvConfig)
    store.store(group="env", name="libero_schema", node=LiberoEnvConfig)
    store.store(group="env", name="libero_plus_schema", node=LiberoPlusEnvConfig)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)


_ABSENT = object()


#: numbers the schemas type but cannot bound: key → (allowed?, what is allowed)
RANGES: dict[str, tuple[Any, str]] = {
    "optimizer.weight_decay": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "optimizer.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optimizer.adamw_eps": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "optimizer.betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "trainer.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "trainer.milestones": (lambda v: all(m >= 1 for m in v), "steps >= 1"),
    "trainer.gamma": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "trainer.min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "trainer.max_grad_norm": (
        lambda v: v is None or (v > 0 and math.isfinite(v)),
        "a finite number > 0, or null",
    ),
    "trainer.num_workers": (lambda v: v >= 0, ">= 0"),
    "trainer.checkpoint_every": (lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "trainer.eval_every": (lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "trainer.diagnostics_every": (lambda v: v >= 0, ">= 0 (0: never)"),
    "trainer.keep_checkpoints": (lambda v: v >= 0, ">= 0 (0: keep all)"),
    "trainer.stop_at_step": (lambda v: v is None or v >= 1, ">= 1, or null"),
    "trainer.max_nonfinite_steps": (lambda v: v >= 1, ">= 1"),
    "env.image_size": (lambda v: v >= 1, ">= 1"),
    "env.chunk_size": (lambda v: v >= 1, ">= 1"),
    "env.fps": (lambda v: v >= 1, ">= 1"),
    "env.dataset.num_demos": (lambda v: v >= 1, ">= 1"),
    "env.eval.episodes": (lambda v: v >= 0, ">= 0"),
    "env.eval.max_steps": (lambda v: v >= 1, ">= 1"),
    "env.eval.videos": (lambda v: v >= 0, ">= 0"),
    "env.eval.num_workers": (lambda v: v >= 1, ">= 1 env worker process"),
}
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
SCHEDULES = ("constant", "cosine", "multistep")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
LOGGER_MODES = ("offline", "online", "disabled")


def validate_config(cfg: DictConfig) -> None:
    """Range checks the schemas cannot express; raises :class:`ConfigError` naming the key."""
    _check_closed(cfg, "")
    for key, (allowed, what) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:  # a run saved before the option existed (eval.py, serve.py)
            continue
        if not allowed(value):
            shown = list(value) if OmegaConf.is_list(value) else value
            raise ConfigError(f"{key}={shown}: must be {what}")
    optimizer = cfg.optimizer
    _one_of("optimizer.compute_dtype", optimizer.compute_dtype, COMPUTE_DTYPES)
    for modality in ("vision", "language", "action", "other"):
        if modality in optimizer:
            _one_of(f"optimizer.{modality}", optimizer[modality], ALGORITHMS)
    for modality in optimizer.per_head_modalities:
        _one_of("optimizer.per_head_modalities[]", modality, MODALITIES)
    _one_of("optimizer.lr_scale", optimizer.lr_scale, LR_SCALE_RULES)
    if optimizer.ns_steps < 1:
        raise ConfigError(f"optimizer.ns_steps={optimizer.ns_steps}: must be >= 1")
    if not 0 <= optimizer.kp <= optimizer.ns_steps:
        raise ConfigError(
            f"optimizer.kp={optimizer.kp}: must be an integer in [0, ns_steps={optimizer.ns_steps}]"
        )
    if not any(abs(optimizer.tau - tau) < 1e-9 for tau in LPMUON_TAUS):
        raise ConfigError(f"optimizer.tau={optimizer.tau}: must be one of Table A7's cutoffs {LPMUON_TAUS}")
    if optimizer.rank < 1:
        raise ConfigError(f"optimizer.rank={optimizer.rank}: must be >= 1")
    for key in ("lr", "aux_lr_ratio", "lr_scale_factor"):
        if optimizer.get(key) is not None and not 0 < optimizer[key] < math.inf:
            raise ConfigError(f"optimizer.{key}={optimizer[key]}: must be a finite number > 0")
    trainer = cfg.trainer
    _one_of("trainer.schedule", trainer.schedule, SCHEDULES)
    _one_of("trainer.mixed_precision", trainer.mixed_precision, MIXED_PRECISION)
    weight_dtype = trainer.get("weight_dtype", "float32")
    _one_of("trainer.weight_dtype", weight_dtype, ("float32", "bfloat16"))
    if weight_dtype == "bfloat16" and trainer.mixed_precision not in ("auto", "bf16"):
        raise ConfigError(
            f"trainer.weight_dtype=bfloat16 needs bf16 autocast: trainer.mixed_precision="
            f"{trainer.mixed_precision!r} must be 'auto' or 'bf16'"
        )
    for key in ("steps", "batch_size", "gradient_accumulation_steps", "log_every", "max_nonfinite_steps"):
        if trainer[key] < 1:
            raise ConfigError(f"trainer.{key}={trainer[key]}: must be >= 1")
    decay_steps = trainer.get("decay_steps")
    if decay_steps is not None and trainer.schedule != "cosine":
        raise ConfigError(
            f"trainer.decay_steps={decay_steps} only shapes the cosine schedule; trainer.schedule="
            f"{trainer.schedule!r} (set schedule=cosine, or decay_steps=null)"
        )
    if decay_steps is not None and decay_steps < max(trainer.steps, trainer.warmup_steps + 1):
        raise ConfigError(
            f"trainer.decay_steps={decay_steps}: must be >= trainer.steps={trainer.steps} (and "
            "beyond the warmup), or null to decay over trainer.steps"
        )
    _one_of("logger.mode", cfg.logger.mode, LOGGER_MODES)
    env = cfg.env
    if not 1 <= env.n_action_steps <= env.chunk_size:
        raise ConfigError(
            f"env.n_action_steps={env.n_action_steps}: must be in [1, env.chunk_size={env.chunk_size}]"
        )
    _check_backbone_fits_head(cfg.backbone, cfg.head)


def _check_closed(node: DictConfig, path: str) -> None:
    """Every key of a schema-typed node is a field of its schema: ``+trainer.foo=1`` (Hydra's append
    syntax slips past the schema) is refused, naming the key and the fields there are."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
        unknown = [key for key in node if key not in known and not (path == "" and key == "hydra")]
        if unknown:
            where = f"{path}." if path else ""
            raise ConfigError(
                f"{where}{unknown[0]}: no such key in {schema.__name__}; it has {sorted(known)}"
            )
    for key in node:
        if not (path == "" and key == "hydra") and OmegaConf.is_dict(node._get_node(key)):
            _check_closed(node[key], f"{path}.{key}" if path else str(key))


def _check_backbone_fits_head(backbone_cfg: DictConfig, head_cfg: DictConfig) -> None:
    """Pair the two classes through their contract before a multi-GB model is downloaded, and name
    the options that would fit."""
    from hydra.utils import get_class

    from policies.contract import IncompatibleParts, check_fits
    from vla_train import options

    backbone = get_class(backbone_cfg._target_)
    head = get_class(head_cfg._target_)
    try:
        check_fits(backbone, head, options.head_options_of(head_cfg))
    except IncompatibleParts as error:
        heads, backbones = [], []
        for name in options.options("head"):
            node = options.option_node("head", name)
            if _fits(backbone, get_class(node._target_), options.head_options_of(node)):
                heads.append(f"head={name}")
        for name in options.options("backbone"):
            if _fits(options.option_class("backbone", name), head, options.head_options_of(head_cfg)):
                backbones.append(f"backbone={name}")
        raise ConfigError(
            f"backbone and head do not fit: {error}. Heads that fit this backbone: "
            f"{', '.join(heads) or 'none'}; backbones that fit this head: {', '.join(backbones) or 'none'}"
        ) from None


def _fits(backbone: type, head: type, head_options: dict[str, Any]) -> bool:
    from policies.contract import IncompatibleParts, check_fits

    try:
        check_fits(backbone, head, head_options)
    except IncompatibleParts:
        return False
    return True


def _one_of(key: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: must be one of {list(allowed)}")
