"""Config schemas written once: a part's constructor signature is its schema.

A backbone, head or other buildable part registers itself from its own module with
:func:`register_schema`; hydra-zen derives the schema (every constructor parameter, its type and
default) and Hydra's ConfigStore makes it available to the YAML options that start from it
(``defaults: [<name>, _self_]``), so a misspelled key or a value of the wrong type fails at compose
time, naming the key, and a new parameter needs no second copy in a schema.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Sequence
from typing import Any, Union, get_args, get_origin

from hydra.core.config_store import ConfigStore
from hydra_zen import BuildsFn


class _Builds(BuildsFn):
    """hydra-zen 0.17 types PEP 604 unions (``str | None``) and ``Sequence[str]`` as ``Any``, which
    would let ``backbone.pretrained=3`` or ``backbone.freeze=vision`` through; read them as the
    ``Optional[str]`` and ``list[str]`` Hydra can check."""

    @classmethod
    def _sanitized_type(cls, type_: Any, **options: Any) -> Any:
        if isinstance(type_, types.UnionType):
            type_ = Union[type_.__args__]  # noqa: UP007 - the form hydra-zen reads
        if get_origin(type_) is Union:
            members = [m for m in get_args(type_) if m is not types.NoneType]
            if len(members) > 1 and all(_sequence_of(m) for m in members):  # tuple[str, ...] | list[str]
                type_ = list[_sequence_of(members[0])]
        elif _sequence_of(type_) is not None:
            type_ = list[_sequence_of(type_)]
        return super()._sanitized_type(type_, **options)


def _sequence_of(type_: Any) -> Any:
    """``X`` for ``Sequence[X]``, ``list[X]`` or ``tuple[X, ...]``; else None."""
    origin, args = get_origin(type_), get_args(type_)
    if origin in (list, Sequence) and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def register_schema(
    group: str,
    name: str,
    target: type,
    *,
    partial: bool = False,
    supplied: Iterable[str] = (),
) -> type:
    """Store the schema of ``target`` as ``<group>/<name>`` and return it.

    Args:
        partial: built as a Hydra ``_partial_`` (heads: the policy supplies the rest).
        supplied: constructor parameters the caller supplies at build time, left out of the schema.
    """
    schema = _Builds.builds(
        target,
        populate_full_signature=True,
        zen_partial=partial or None,
        zen_exclude=tuple(supplied),
        zen_dataclass={"cls_name": f"{target.__name__}Config", "module": target.__module__},
    )
    # found by name where it claims to live, so that it pickles: a joblib sweep pickles the composed
    # config, whose nodes keep their schema type
    setattr(sys.modules[target.__module__], schema.__name__, schema)
    ConfigStore.instance().store(group=group, name=name, node=schema)
    return schema
