"""Messages as msgpack with NumPy arrays as raw bytes (dtype, shape, data): no pickle on either side.

Only numeric and boolean arrays travel; an object array, an unknown type or a malformed array is an
error for the sender, so a request cannot make the receiver run code.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ARRAY_KEY = "__ndarray__"


class WireError(ValueError):
    """A message that is not valid msgpack, or an array that cannot be rebuilt safely."""


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise WireError(f"only numeric and boolean arrays can be sent, got dtype {value.dtype}")
        array = np.ascontiguousarray(value)
        return {
            ARRAY_KEY: True,
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "data": array.tobytes(),
        }
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__}")


def _decode(mapping: dict[str, Any]) -> Any:
    if mapping.get(ARRAY_KEY) is not True:
        return mapping
    try:
        dtype = np.dtype(mapping["dtype"])
        shape = tuple(int(n) for n in mapping["shape"])
        if dtype.kind not in "biufc":
            raise WireError(f"refusing array dtype {dtype}")
        return np.frombuffer(mapping["data"], dtype=dtype).reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"malformed array: {error}") from error


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as error:
        raise WireError(f"not a valid message: {type(error).__name__}: {error}") from error
