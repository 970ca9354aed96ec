"""The policy as a function on the client side: ``RemotePolicy(uri)(inputs) -> (B, chunk, A)``."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from websockets.sync.client import connect

from vla_train.serving.wire import pack, unpack

MAX_MESSAGE_BYTES = 256 * 2**20


class PolicyServerError(RuntimeError):
    """The server answered a request with an error."""


class RemotePolicy:
    """A :data:`vla_train.rollout.evaluator.PolicyFn` backed by a :class:`PolicyServer`."""

    def __init__(self, uri: str, timeout: float = 60.0) -> None:
        self._resources = contextlib.ExitStack()
        self.connection = self._resources.enter_context(
            connect(uri, max_size=MAX_MESSAGE_BYTES, open_timeout=timeout)
        )
        self.timeout = timeout
        self.metadata: dict[str, Any] = unpack(self.connection.recv(timeout=timeout))["metadata"]

    def __call__(self, inputs: list[dict[str, Any]]) -> np.ndarray:
        self.connection.send(pack({"inputs": list(inputs)}))
        reply = unpack(self.connection.recv(timeout=self.timeout))
        if "error" in reply:
            raise PolicyServerError(reply["error"])
        return reply["actions"]

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
