"""The options of each config group (``backbone=…``, ``head=…``), so that scripts, tests and error
messages go over all of them instead of keeping their own lists.

An option is a YAML file under ``configs/<group>/`` (files named ``_*.yaml`` are shared parts) or a
node stored in Hydra's ConfigStore under that group by the code that defines it (a test's toy
backbone, a plugin); ``*_schema`` nodes are the schemas options start from, not options.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from policies.vla_policy import VLAPolicy

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def options(group: str) -> list[str]:
    """Every option of ``group``, sorted."""
    files = {p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_")}
    try:
        stored = {Path(name).stem for name in ConfigStore.instance().list(group)}
    except OSError:  # no node stored under this group
        stored = set()
    return sorted(files | {name for name in stored if not name.endswith("_schema")})


def option_node(group: str, name: str) -> DictConfig:
    """The config ``group=name`` composes to (its interpolations unresolved)."""
    with _hydra():
        cfg = compose(config_name="train", overrides=[f"{group}={name}"])
    return cfg[group]


def option_class(group: str, name: str) -> type:
    """The class an option builds (its ``_target_``)."""
    return get_class(option_node(group, name)._target_)


def build_policy(
    backbone: str,
    head: str,
    *,
    action_dim: int,
    state_dim: int,
    chunk_size: int,
    random_init: bool = False,
    overrides: Sequence[str] = (),
) -> VLAPolicy:
    """``backbone=<backbone> head=<head>`` (and ``overrides``) as a policy; see :func:`instantiate_policy`."""
    with _hydra():
        cfg = compose(config_name="train", overrides=[f"backbone={backbone}", f"head={head}", *overrides])
    return instantiate_policy(
        cfg, action_dim=action_dim, state_dim=state_dim, chunk_size=chunk_size, random_init=random_init
    )


def instantiate_policy(
    cfg: DictConfig, *, action_dim: int, state_dim: int, chunk_size: int, random_init: bool = False
) -> VLAPolicy:
    """The backbone and head of a composed config as a policy. ``random_init``: the same architecture
    with random weights and nothing downloaded (each class's ``random_init`` changes, written into
    ``cfg``), for parameter counts, step timings and checks on the meta device."""
    parts = {}
    for group in ("backbone", "head"):
        if random_init:  # set in place (not passed to instantiate: a part may take a `config` option)
            part = get_class(cfg[group]._target_)
            for key, value in part.random_init(own_options(cfg[group])).items():
                OmegaConf.update(cfg, f"{group}.{key}", value, merge=False)
        parts[group] = instantiate(cfg[group])
    env = cfg.get("env") or {}
    return VLAPolicy(
        parts["backbone"],
        parts["head"],
        action_dim=action_dim,
        state_dim=state_dim,
        chunk_size=chunk_size,
        state_normalization=env.get("state_normalization"),  # None: the head's own
        action_normalization=env.get("action_normalization"),
    )


def own_options(node: DictConfig) -> dict[str, object]:
    """A part's own options (no ``_target_``/``_partial_``), as its class methods read them
    (``requirements``, ``random_init``); interpolations are left unresolved."""
    return {str(key): node._get_node(key)._value() for key in node if not str(key).startswith("_")}


@contextlib.contextmanager
def _hydra() -> Iterator[None]:
    """Compose inside a running Hydra app as it is, or initialize Hydra on ``configs/`` for the call."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    from vla_train.config import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        yield
