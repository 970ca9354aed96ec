"""A policy behind a websocket on 127.0.0.1 (by default), speaking ours and openpi's protocol at once.

Messages are msgpack with arrays as openpi encodes them (:mod:`vla_train.serving.wire`). On connect the
server sends ``{"metadata": {"action_dim", "chunk_size", "state_dim", "state_history", "cameras",
...}}`` (``state_history`` > 1: each input's state is that many recent states, current last). Then
each request is one of:

- **ours** (``envs.libero.client``, ``envs.droid.client``, the parallel evaluator):
  ``{"inputs": [{"images": (cams, 3, H, W) float32 in [0, 1], "state": (S,), "instruction": str}, ...]}``
  → ``{"actions": (B, chunk, A) float32}``, or ``{"error": str}`` for a malformed request (the
  connection stays up);
- **openpi's** (``openpi_client.WebsocketClientPolicy.infer``: DROID robot laptops, openpi's LIBERO
  scripts): one observation dict in the environment's openpi keys, mapped to a policy input by
  ``openpi_inputs`` (the environment's own transform) → ``{"actions": (chunk, A), "server_timing":
  {"infer_ms"}}``; as openpi's server does, an error is sent as a text frame and the connection is
  closed (the server stays up), and ``{"__ctrl__": ...}`` messages are acknowledged.

``GET /healthz`` answers 200. Requests that arrive together from different connections are run as one
forward pass (:class:`~vla_train.serving.batching.RequestBatcher`).
"""

from __future__ import annotations

import http
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from vla_train.serving.batching import RequestBatcher
from vla_train.serving.wire import WireError, pack, unpack

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_MESSAGE_BYTES = 256 * 2**20
INPUT_ERRORS = (WireError, ValueError, KeyError, TypeError)

#: openpi observation → our policy input (``{"images", "state", "instruction"}``)
ObservationFn = Callable[[Mapping[str, Any]], dict[str, Any]]


class PolicyServer:
    """Serves ``policy_fn(inputs) -> (B, chunk, A)`` to our clients and to openpi's.

    Args:
        policy_fn: batch of policy inputs → action chunks (e.g. :func:`vla_train.evaluation.local_policy_fn`).
        metadata: what clients need to know (dimensions, cameras, image size), sent on connect.
        host: the address to bind; 127.0.0.1 unless you mean to expose the policy to a network.
        port: 0 picks a free port (see :attr:`port` once started).
        openpi_inputs: maps openpi's observation dicts for this policy's environment to policy inputs
            (``EnvAdapter.openpi_inputs``); None refuses openpi requests, naming why.
        batch_wait_s: how long a request waits for others to share its forward pass; 0 runs each
            request alone.
        max_batch: most inputs in one forward pass.
    """

    def __init__(
        self,
        policy_fn: Callable[[list[dict[str, Any]]], np.ndarray],
        metadata: Mapping[str, Any],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        openpi_inputs: ObservationFn | None = None,
        batch_wait_s: float = 0.005,
        max_batch: int = 64,
    ) -> None:
        self.metadata, self.openpi_inputs = dict(metadata), openpi_inputs
        self.host, self.requested_port = host, port
        self.batcher = RequestBatcher(policy_fn, batch_wait_s, max_batch)
        self._server: Server | None = None

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
        self._server = serve(
            self._handle,
            self.host,
            self.requested_port,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,  # arrays do not compress; openpi's clients ask for none either
            process_request=_health_check,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    # --- connections ------------------------------------------------------------------------------
    def _handle(self, connection: ServerConnection) -> None:
        connection.send(pack({"metadata": self.metadata}))
        openpi_client = False  # set by the first request that is an openpi observation
        try:
            for message in connection:
                request, error = self._parse(message)
                if error:
                    log.warning("refused a request: %s", error)
                openpi_client = openpi_client or (error is None and _is_openpi(request))
                if not openpi_client:
                    connection.send(pack({"error": error} if error else self._answer(request)))
                    continue
                reply = self._answer_openpi(request) if error is None else {"error": error}
                if "error" in reply:  # openpi's way: the message as text, then close
                    connection.send(reply["error"])
                    connection.close(CloseCode.INTERNAL_ERROR, "error in the request; see the previous frame")
                    return
                connection.send(pack(reply))
        except ConnectionClosed:
            pass

    @staticmethod
    def _parse(message: bytes | str) -> tuple[Any, str | None]:
        if isinstance(message, str):
            return None, "WireError: send binary msgpack messages, not text"
        try:
            return unpack(message), None
        except WireError as error:
            return None, f"WireError: {error}"

    def _answer(self, request: Any) -> dict[str, Any]:
        """Our protocol: a batch of inputs → ``{"actions": (B, chunk, A)}`` or ``{"error"}``."""
        try:
            inputs = _validated_inputs(request, self.metadata)
        except INPUT_ERRORS as error:
            return _refused(error)
        return self._act(inputs)

    def _answer_openpi(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """openpi's protocol: one observation → ``{"actions": (chunk, A), "server_timing"}``."""
        if "__ctrl__" in observation:  # episode_start / episode_end of newer openpi clients
            control = observation["__ctrl__"]
            return {"__ack__": control if control in ("episode_start", "episode_end") else "ignored"}
        if self.openpi_inputs is None:
            env = self.metadata.get("env")
            return {"error": f"env={env} has no openpi observation layout: use this project's client"}
        try:
            inputs = _validated_inputs({"inputs": [self.openpi_inputs(observation)]}, self.metadata)
        except INPUT_ERRORS as error:
            return _refused(error)
        start = time.monotonic()
        reply = self._act(inputs)
        if "actions" not in reply:
            return reply
        infer_ms = 1e3 * (time.monotonic() - start)
        return {"actions": reply["actions"][0], "server_timing": {"infer_ms": infer_ms}}

    def _act(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            actions = np.asarray(self.batcher.submit(inputs), dtype=np.float32)
        except Exception as error:  # on validated input: the server's bug, with its traceback; keep serving
            log.exception("policy failed on a validated request")
            return {"error": f"policy failed: {type(error).__name__}: {error}"}
        if not np.isfinite(actions).all():  # never send a robot NaN or inf
            message = "the policy produced non-finite actions for this input (is the state in range?)"
            log.warning("refused a request: %s", message)
            return {"error": message}
        return {"actions": actions}


def _refused(error: Exception) -> dict[str, str]:
    """A request the client got wrong (:func:`_validated_inputs` refused it): one log line, since the
    server has nothing to debug (a traceback is logged only when the policy fails), and the reply."""
    message = f"{type(error).__name__}: {error}"
    log.warning("refused a request: %s", message)
    return {"error": message}


def _is_openpi(request: Any) -> bool:
    return isinstance(request, dict) and "inputs" not in request


def _health_check(connection: ServerConnection, request: Request) -> Response | None:
    """``GET /healthz`` → 200 (load balancers, job scripts waiting for the server); others go on to the
    websocket handshake."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


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
        size = metadata.get("image_size")
        if 0 in images.shape:
            raise ValueError(
                f"inputs[{number}].images is empty: shape {images.shape}; this policy takes (cameras, 3, "
                + (f"{size}, {size})" if size else "H, W) with H, W >= 1")
            )
        if size and images.shape[2:] != (size, size):
            raise ValueError(
                f"inputs[{number}].images are {images.shape[2]}x{images.shape[3]}; this policy takes "
                f"{size}x{size} (metadata image_size)"
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
