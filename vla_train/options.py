"""The options of each config group (``backbone=…``, ``head=…``), so that scripts, tests and error
messages go over all of them instead of keeping their own lists.

An option is a YAML file under ``configs/<group>/`` (files named ``_*.yaml`` are shared parts) or a
node stored in Hydra's ConfigStore under that group by the code that defines it (a test's toy
backbone, a plugin); ``*_schema`` nodes are the schemas options start from, not options.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import DictConfig

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


def head_options_of(node: DictConfig) -> dict[str, object]:
    """A head node's own options (no ``_target_``/``_partial_``), as its class's contract reads them."""
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
