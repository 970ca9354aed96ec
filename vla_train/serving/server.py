"""A policy behind a websocket on 127.0.0.1 (by default): one request, one batch of action chunks.

Protocol (messages packed by :mod:`vla_train.serving.wire`):
- on connect the server sends its metadata: ``{"action_dim", "chunk_size", "state_dim", "state_history",
  "cameras", ...}`` (``state_history`` > 1: each input's state is that many recent states, current last);
- request ``{"inputs": [{"images": (cams, 3, H, W) float32, "state": (S,) float32,
  "instruction": str}, ...]}`` → reply ``{"actions": (B, chunk, A) float32}``, or ``{"error": str}``
  for a malformed request (the connection and the server stay up).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from vla_train.serving.wire import WireError, pack, unpack

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_MESSAGE_BYTES = 256 * 2**20


class PolicyServer:
    """Serves ``policy_fn(inputs) -> (B, chunk, A)``; requests are answered one at a time.

    Args:
        policy_fn: batch of policy inputs → action chunks (e.g. :func:`vla_train.evaluation.local_policy_fn`).
        metadata: what clients need to know (dimensions, cameras, image size), sent on connect.
        host: the address to bind; 127.0.0.1 unless you mean to expose the policy to a network.
        port: 0 picks a free port (see :attr:`port` once started).
    """

    def __init__(
        self,
        policy_fn: Callable[[list[dict[str, Any]]], np.ndarray],
        metadata: Mapping[str, Any],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
    ) -> None:
        self.policy_fn, self.metadata = policy_fn, dict(metadata)
        self.host, self.requested_port = host, port
        self._server: Server | None = None
        self._lock = threading.Lock()  # one forward pass at a time, whatever the number of clients

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server.socket.getsockname()[1]

    @property
    def uri(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> PolicyServer:
        """Bind and serve from a background thread (tests, notebooks); see :meth:`serve_forever`."""
        self._bind()
        threading.Thread(target=self._server.serve_forever, name="policy-server", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self._bind()
        self._server.serve_forever()

    def _bind(self) -> None:
        self._server = serve(self._handle, self.host, self.requested_port, max_size=MAX_MESSAGE_BYTES)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _handle(self, connection: ServerConnection) -> None:
        connection.send(pack({"metadata": self.metadata}))
        try:
            for message in connection:
                connection.send(pack(self._answer(message)))
        except ConnectionClosed:
            pass

    def _answer(self, message: bytes | str) -> dict[str, Any]:
        try:
            if isinstance(message, str):
                raise WireError("send binary msgpack messages, not text")
            request = unpack(message)
            inputs = _validated_inputs(request, self.metadata)
            with self._lock:
                actions = np.asarray(self.policy_fn(inputs), dtype=np.float32)
            if not np.isfinite(actions).all():  # never send a robot NaN or inf
                return {
                    "error": "the policy produced non-finite actions for this input (is the state in range?)"
                }
            return {"actions": actions}
        except (WireError, ValueError, KeyError, TypeError) as error:
            return {"error": f"{type(error).__name__}: {error}"}
        except Exception as error:  # the policy failed on valid input: report it, keep serving
            log.exception("policy failed")
            return {"error": f"policy failed: {type(error).__name__}: {error}"}


def _validated_inputs(request: Any, metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ValueError("a request is {'inputs': [observation, ...]} with at least one observation")
    state_dim = metadata.get("state_dim")
    history = metadata.get("state_history", 1)
    state_shape = f"({state_dim},)" if history == 1 else f"({history}, {state_dim})"
    cameras = len(metadata["cameras"]) if metadata.get("cameras") else None
    for number, item in enumerate(request["inputs"]):
        if not isinstance(item, dict):
            raise ValueError(f"inputs[{number}] is not a mapping")
        images, state = item.get("images"), item.get("state")
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"inputs[{number}].images must be a (cameras, 3, H, W) array")
        if cameras and images.shape[0] != cameras:
            raise ValueError(
                f"inputs[{number}].images has {images.shape[0]} cameras; this policy reads {cameras}: "
                f"{metadata['cameras']}"
            )
        if images.dtype.kind != "f":
            raise ValueError(f"inputs[{number}].images must be floats in [0, 1], got dtype {images.dtype}")
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError(f"inputs[{number}].images must be finite floats in [0, 1]")
        if (
            not isinstance(state, np.ndarray)
            or state.ndim != (1 if history == 1 else 2)
            or (state_dim and state.shape[-1] != state_dim)
            or (history > 1 and state.shape[0] != history)
        ):
            raise ValueError(
                f"inputs[{number}].state must be a {state_shape} array"
                + ("" if history == 1 else " (the last states, the current one last)")
                + f", got {getattr(state, 'shape', type(state).__name__)}"
            )
        if state.dtype.kind not in "fiu" or not np.isfinite(state).all():
            raise ValueError(f"inputs[{number}].state must be finite real numbers, got {state.dtype} {state}")
        if not isinstance(item.get("instruction"), str):
            raise ValueError(f"inputs[{number}].instruction must be a string")
        item["images"] = images.astype(np.float32, copy=False)
        item["state"] = state.astype(np.float32, copy=False)
    return request["inputs"]
