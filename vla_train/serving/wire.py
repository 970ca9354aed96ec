"""Messages as msgpack with NumPy arrays encoded exactly as openpi encodes them: no pickle on either side.

openpi's ``openpi_client.msgpack_numpy`` (the wire format of every openpi client: DROID robot laptops,
LIBERO evaluation scripts) writes an array as a map with *binary* keys ``__ndarray__``, ``data``,
``dtype`` (NumPy's ``dtype.str``) and ``shape``, and a NumPy scalar as ``__npgeneric__``, ``data``,
``dtype``. Our own clients use the same encoding, so one server speaks to both, and arrays sent by
openpi's packer decode here and ours decode there.

Only numeric, boolean and string arrays travel; an object, void or complex array (openpi refuses these
too), an unknown type or a malformed array is an error for the sender, so a message cannot make the
receiver run code.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ARRAY_KEY, SCALAR_KEY = b"__ndarray__", b"__npgeneric__"
#: dtype kinds that travel: bool, signed and unsigned integers, floats, unicode strings
SAFE_KINDS = "biufU"


class WireError(ValueError):
    """A message that is not valid msgpack, or an array that cannot be rebuilt safely."""


def _check_kind(dtype: np.dtype, refusing: str) -> None:
    if dtype.kind not in SAFE_KINDS:
        raise WireError(f"{refusing} dtype {dtype}: only numeric, boolean and string arrays travel")


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        _check_kind(value.dtype, "cannot send an array of")
        array = np.ascontiguousarray(value)
        return {ARRAY_KEY: True, b"data": array.tobytes(), b"dtype": array.dtype.str, b"shape": array.shape}
    if isinstance(value, np.generic):
        _check_kind(value.dtype, "cannot send a scalar of")
        return {SCALAR_KEY: True, b"data": value.item(), b"dtype": value.dtype.str}
    raise TypeError(f"cannot send a {type(value).__name__}")


def _decode(mapping: dict[Any, Any]) -> Any:
    if ARRAY_KEY not in mapping and SCALAR_KEY not in mapping:
        return mapping
    try:
        dtype = np.dtype(mapping[b"dtype"])
        _check_kind(dtype, "refusing")
        if SCALAR_KEY in mapping:
            return dtype.type(mapping[b"data"])
        shape = tuple(int(n) for n in mapping[b"shape"])
        if any(n < 0 for n in shape):  # numpy reads a -1 as "infer this dimension"
            raise WireError(f"malformed array: negative dimension in shape {shape}")
        return np.frombuffer(mapping[b"data"], dtype=dtype).reshape(shape).copy()
    except WireError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"malformed array: {type(error).__name__}: {error}") from error


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as error:
        raise WireError(f"not a valid message: {type(error).__name__}: {error}") from error
