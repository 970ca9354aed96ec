"""The fields of openpi's observation dicts, checked and named, for the environments' openpi transforms.

openpi's example clients (``examples/libero/main.py``, ``examples/droid/main.py`` through
``openpi_client.WebsocketClientPolicy``) send one observation per request: a flat dict whose keys are
paths such as ``observation/image`` with HWC uint8 images, state vectors and a ``prompt`` string. Each
environment maps its keys onto the policy input with the transform its training data uses
(``envs/<env>/transforms.py``); these helpers say which key is missing or malformed, and what it
should be. NumPy only: robot-side code imports it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

PROMPT_KEY = "prompt"


def field(observation: Mapping[str, Any], key: str, expected: Iterable[str]) -> Any:
    if not isinstance(observation, Mapping):
        raise ValueError(
            f"an openpi observation is a dict of {sorted(expected)}, got {type(observation).__name__}"
        )
    if key not in observation:
        raise KeyError(
            f"the observation has no {key!r}: this policy reads {sorted(expected)}, got {sorted(observation)}"
        )
    return observation[key]


def image(observation: Mapping[str, Any], key: str, expected: Iterable[str]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 camera frame, as openpi's clients send them."""
    value = field(observation, key, expected)
    if (
        not isinstance(value, np.ndarray)
        or value.ndim != 3
        or value.shape[-1] != 3
        or value.dtype != np.uint8
    ):
        described = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{key} must be an (H, W, 3) uint8 image, got {described}")
    if min(value.shape[:2]) < 1:
        raise ValueError(f"{key} is an empty image {value.shape}")
    return value


def vector(observation: Mapping[str, Any], key: str, size: int, expected: Iterable[str]) -> np.ndarray:
    """A real vector of ``size`` numbers (a Python number or list is accepted as openpi's clients allow)."""
    value = np.asarray(field(observation, key, expected))
    if value.dtype.kind not in "biuf" or value.size != size:
        raise ValueError(f"{key} must be {size} real number(s), got {value.dtype} {value.shape}")
    return value.astype(np.float32).reshape(size)


def prompt(observation: Mapping[str, Any], expected: Iterable[str]) -> str:
    value = field(observation, PROMPT_KEY, expected)
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        value = str(value.reshape(()))
    if not isinstance(value, str):
        raise ValueError(f"{PROMPT_KEY} must be a string, got {type(value).__name__}")
    return value
