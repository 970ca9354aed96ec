"""The composition root: the top-level train schema, the discovery of every part's schema, and the
checks that no single schema can express.

Each part declares its schema beside its class and registers it from its own module — backbones and
heads from their constructors (:mod:`vla_train.schemas`), environments in ``envs/<env>/schema.py``,
the optimizer, trainer and logger in ``vla_train/optim/schema.py`` and ``vla_train/trainer/schema.py``.
Each YAML option under ``configs/`` starts from one (``defaults: [<schema>, _self_]``), so a misspelled
key or a value of the wrong type fails when Hydra composes the config — before any model is built —
naming the key. Range checks that types cannot express (``kp`` in [0, ns_steps], a known ``tau``) and
checks across groups (the backbone fits the head) run in :func:`validate_config`, also before
anything is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import pkgutil
import re
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.nodes import BooleanNode

from envs.schema import EnvConfig
from policies.vla_policy import NORMALIZATION_MODES
from vla_train.optim.assignment import ALGORITHMS, MODALITIES
from vla_train.optim.newton_schulz import LPMUON_TAUS
from vla_train.optim.schema import OptimizerConfig
from vla_train.optim.spectral import LR_SCALE_RULES
from vla_train.trainer.schema import LoggerConfig, TrainerConfig


class ConfigError(ValueError):
    """A config value is out of range; the message names the key, the value and what is allowed."""


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
#: each environment package registers its schema (and its presets' resolvers) in ``<env>/schema.py``
ENV_PACKAGE = "envs"


def register_configs() -> None:
    """Make the schemas (and the presets' resolvers) available to the YAML files (idempotent)."""
    for package in PART_PACKAGES:  # each part registers its schema from its own module
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{module.name}")
    importlib.import_module(f"{ENV_PACKAGE}.schema")
    for module in pkgutil.iter_modules(importlib.import_module(ENV_PACKAGE).__path__):
        if module.ispkg and importlib.util.find_spec(f"{ENV_PACKAGE}.{module.name}.schema"):
            importlib.import_module(f"{ENV_PACKAGE}.{module.name}.schema")
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)


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
    "trainer.progress_interval_s": (lambda v: v > 0 and math.isfinite(v), "a finite number of seconds > 0"),
    "trainer.seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "trainer.steps": (lambda v: 1 <= v < 2**31, "in [1, 2**31)"),
    "optimizer.ns_steps": (lambda v: 1 <= v <= 100, "in [1, 100]"),
    "env.cameras": (lambda v: len(v) >= 1, "at least one camera"),
    "env.image_size": (lambda v: v >= 1, ">= 1"),
    "env.chunk_size": (lambda v: v >= 1, ">= 1"),
    "env.state_history": (lambda v: v >= 1, ">= 1"),
    "env.fps": (lambda v: v >= 1, ">= 1"),
    "env.dataset.num_demos": (lambda v: v >= 1, ">= 1"),
    "env.eval.episodes": (lambda v: v >= 0, ">= 0"),
    "env.eval.max_steps": (lambda v: v >= 1, ">= 1"),
    "env.eval.videos": (lambda v: v >= 0, ">= 0"),
    "env.eval.num_workers": (lambda v: v >= 1, ">= 1 env worker process"),
    "env.eval.tasks": (
        lambda v: v is None or len(v) >= 1,
        "null (every task) or a non-empty list of task indices",
    ),
}
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
SCHEDULES = ("constant", "cosine", "multistep")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
STRATEGIES = ("ddp", "fsdp")
LOGGER_MODES = ("offline", "online", "disabled")


def validate_config(cfg: DictConfig) -> None:
    """Range checks the schemas cannot express; raises :class:`ConfigError` naming the key."""
    check_closed(cfg, "")
    check_boolean_overrides(cfg)
    _check_ranges(cfg)
    if cfg.get("evaluate") and cfg.env.eval.episodes == 0 and _simulated(cfg.env):
        raise ConfigError(
            "env.eval.episodes=0 with evaluate=true: no episode to evaluate; set env.eval.episodes >= 1, "
            "or evaluate=false"
        )
    validate_optimizer(cfg)
    trainer = cfg.trainer
    _one_of("trainer.schedule", trainer.schedule, SCHEDULES)
    strategy = trainer.get("strategy", "ddp")
    _one_of("trainer.strategy", strategy, STRATEGIES)
    if strategy == "fsdp" and trainer.eval_every:
        raise ConfigError(
            f"trainer.eval_every={trainer.eval_every}: evaluations during training are not run under "
            "trainer.strategy=fsdp (the sharded policy needs every process); set trainer.eval_every=0 "
            "and evaluate checkpoints with scripts/eval.py (the final evaluation still runs)"
        )
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
    for key in ("state_dim", "action_dim"):  # resolvers compute them from other options (LIBERO, DROID)
        try:
            cfg.env[key]
        except Exception as error:
            raise ConfigError(f"env.{key} cannot be resolved: {error}") from error
    for key in ("state_normalization", "action_normalization"):
        if cfg.env.get(key) is not None:
            _one_of(f"env.{key}", cfg.env[key], NORMALIZATION_MODES)
    if cfg.env.get("action_padding") is not None:
        from envs.padding import ACTION_PADDINGS

        _one_of("env.action_padding", cfg.env.action_padding, ACTION_PADDINGS)
    env = cfg.env
    if not 1 <= env.n_action_steps <= env.chunk_size:
        raise ConfigError(
            f"env.n_action_steps={env.n_action_steps}: must be in [1, env.chunk_size={env.chunk_size}]"
        )
    _check_part_options(cfg)
    _check_backbone_fits_head(cfg.backbone, cfg.head)


def _simulated(env: DictConfig) -> bool:
    """Whether the env's evaluation runs episodes (a real robot's is serving the policy instead)."""
    from hydra.utils import get_class

    adapter = env.get("adapter")
    try:
        return bool(getattr(get_class(adapter), "simulated", True)) if adapter else True
    except Exception:  # an adapter that does not import is named where the env is built
        return True


def _check_ranges(cfg: DictConfig, prefix: str = "") -> None:
    """:data:`RANGES` of the keys starting with ``prefix`` that ``cfg`` has."""
    for key, (allowed, what) in RANGES.items():
        if not key.startswith(prefix):
            continue
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:  # a run saved before the option existed (eval.py, serve.py)
            continue
        shown = list(value) if OmegaConf.is_list(value) else value
        try:
            ok = allowed(value)
        except (
            TypeError
        ):  # a saved config read without its schema (eval.py overrides): env.eval.max_steps=abc
            ok = False
        if not ok:
            raise ConfigError(
                f"{key}={shown!r}: must be {what}"
                if isinstance(value, str)
                else f"{key}={shown}: must be {what}"
            )


def validate_optimizer(cfg: DictConfig) -> None:
    """``cfg.optimizer``'s ranges and choices: train.py's and train_rlvr.py's optimizer groups share them."""
    _check_ranges(cfg, "optimizer.")
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


def _check_part_options(cfg: DictConfig) -> None:
    """Each part's own limits (:meth:`~policies.base.Backbone.check_options`), before it is built."""
    from hydra.utils import get_class

    for part in ("backbone", "head"):
        node = cfg[part]
        options = {
            key: value
            for key, value in OmegaConf.to_container(node, resolve=True).items()
            if not str(key).startswith("_")
        }
        try:
            get_class(node._target_).check_options(options)
        except ValueError as error:
            raise ConfigError(str(error) + _interpolated_from(node, part, str(error))) from None


def _interpolated_from(node: DictConfig, part: str, message: str) -> str:
    """Where the options a message names take their values from: ``backbone.image_size`` is
    ``${env.image_size}``, so the user who typed ``env.image_size=63`` learns which key to change."""
    sources = [
        f"{part}.{key} is {node._get_node(key)._value()}"
        for key in node
        if OmegaConf.is_interpolation(node, key) and re.search(rf"\b{part}\.{key}\b", message)
    ]
    return f" ({'; '.join(sources)})" if sources else ""


def check_boolean_overrides(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """A boolean option given as something other than true/false on the command line is refused:
    OmegaConf reads ``evaluate=2`` or ``nesterov=0.5`` as true. ``overrides``: the command line's
    ``key=value`` strings (default: Hydra's, when a run was composed by Hydra). A boolean is a bool
    field of a schema or, in a run's saved (untyped) config, a key that holds true or false; a schema's
    ``Any`` field holding false (``trainer.resume``: false, true or a path) is not one."""
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        overrides = list(HydraConfig.get().overrides.task)
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key.startswith("hydra."):
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        node = parent._get_node(leaf) if OmegaConf.is_dict(parent) and leaf in parent else None
        untyped = node is not None and not dataclasses.is_dataclass(OmegaConf.get_type(parent))
        boolean = isinstance(node, BooleanNode) or (untyped and isinstance(node._value(), bool))
        if boolean and value.strip().lower() not in ("true", "false", "null"):
            raise ConfigError(f"{key}={value}: must be true or false")


def check_closed(node: DictConfig, path: str) -> None:
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
            check_closed(node[key], f"{path}.{key}" if path else str(key))


def _check_backbone_fits_head(backbone_cfg: DictConfig, head_cfg: DictConfig) -> None:
    """Pair the two classes through their contract before a multi-GB model is downloaded, and name
    the options that would fit."""
    from hydra.utils import get_class

    from policies.contract import IncompatibleParts, check_fits
    from vla_train import options

    backbone = get_class(backbone_cfg._target_)
    head = get_class(head_cfg._target_)
    try:
        check_fits(backbone, head, options.own_options(head_cfg))
    except IncompatibleParts as error:
        heads, backbones = [], []
        for name in options.options("head"):
            node = options.option_node("head", name)
            if _fits(backbone, get_class(node._target_), options.own_options(node)):
                heads.append(f"head={name}")
        for name in options.options("backbone"):
            if _fits(options.option_class("backbone", name), head, options.own_options(head_cfg)):
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
