"""The one place where a backbone and an action head meet: what a backbone offers, what a head needs.

A backbone class declares the features it fills in :class:`~policies.base.BackboneOutput`
(``provides``); a head class declares the ones it reads (``requires``, or :meth:`requirements` when
they depend on its options). :func:`check_fits` compares the two — from the classes alone, so a
config is refused before a multi-GB model is downloaded, and again when a policy is built in code.
A built backbone describes itself to the head it is paired with as one :class:`BackboneSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.joint_attention import AttentionGeometry

#: what a backbone may offer a head, and the BackboneOutput field that carries it
FEATURES = {
    "layer_tokens": "per-layer hidden states over the context (layer_tokens)",
    "queries": "the head's query embeddings run after the instruction (query_layer_tokens)",
    "keys_values": "per-layer attention keys and values, for joint attention (layer_keys_values)",
    "vision_tokens": "how many leading context tokens are image tokens (vision_tokens)",
    "prefix_tokens": "the head's embeddings placed before the whole prompt (forward's prefix)",
}


class IncompatibleParts(ValueError):
    """A head needs a feature its backbone does not offer; the message names both and the feature."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a built backbone tells its head: sizes to match, and how to attend with it.

    Attributes:
        hidden_size: width of its feature tokens (the head's context width).
        num_layers: language-model layers; ``layer_tokens`` holds ``num_layers + 1`` hidden states.
        attention: the attention shape a jointly attending head must copy (set with ``keys_values``).
        provides: the :data:`FEATURES` it fills.
    """

    hidden_size: int
    num_layers: int
    attention: AttentionGeometry | None = None
    provides: frozenset[str] = frozenset()


def check_fits(backbone: type, head: type, head_options: Mapping[str, Any]) -> None:
    """Raise :class:`IncompatibleParts` unless ``backbone`` offers every feature ``head`` requires."""
    provides, required = frozenset(backbone.provides), frozenset(head.requirements(head_options))
    unknown = sorted((provides | required) - FEATURES.keys())
    if unknown:
        raise ValueError(f"unknown backbone features {unknown}; known: {sorted(FEATURES)}")
    missing = sorted(required - provides)
    if missing:
        wanted = "; ".join(f"{name}: {FEATURES[name]}" for name in missing)
        hints = getattr(head, "requirement_hints", {})
        hint = "".join(f"; {hints[name]}" for name in missing if name in hints)
        raise IncompatibleParts(
            f"head {head.__name__} needs what backbone {backbone.__name__} does not offer ({wanted}). "
            f"{backbone.__name__} offers {sorted(provides)}{hint}"
        )
