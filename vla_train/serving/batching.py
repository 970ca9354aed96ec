"""Requests from several connections answered by one forward pass.

Each connection's handler thread calls :meth:`RequestBatcher.submit` and blocks; one worker thread takes
the first waiting request, waits at most ``max_wait_s`` for more (never past ``max_batch`` inputs),
runs the policy once on all their inputs and hands each request its rows. A request of several inputs
(the parallel evaluator's, one per env worker) is never split. With one client the only cost is the
wait, so it is kept to a few milliseconds: a forward pass of a VLA takes tens of them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PolicyFn = Callable[[list[dict[str, Any]]], np.ndarray]


@dataclass
class _Request:
    inputs: list[dict[str, Any]]
    done: threading.Event = field(default_factory=threading.Event)
    actions: np.ndarray | None = None
    error: BaseException | None = None


class RequestBatcher:
    """Batches concurrent :meth:`submit` calls into one ``policy_fn`` call.

    Args:
        policy_fn: inputs → ``(B, chunk, A)`` action chunks.
        max_wait_s: how long the first request of a batch waits for others; 0 answers every request
            on its own (in arrival order, one forward at a time).
        max_batch: most inputs in one forward pass (a single larger request still runs whole).
    """

    def __init__(self, policy_fn: PolicyFn, max_wait_s: float = 0.005, max_batch: int = 64) -> None:
        if max_wait_s < 0 or max_batch < 1:
            raise ValueError(f"max_wait_s must be >= 0 and max_batch >= 1, got {max_wait_s}, {max_batch}")
        self.policy_fn, self.max_wait_s, self.max_batch = policy_fn, max_wait_s, max_batch
        self.forward_passes = 0  # how many policy calls served how many requests (benchmarks, tests)
        self.requests_served = 0
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="policy-batcher", daemon=True)
        self._worker.start()

    def submit(self, inputs: list[dict[str, Any]]) -> np.ndarray:
        """``(len(inputs), chunk, A)`` for these inputs; raises what the policy raised on their batch."""
        request = _Request(list(inputs))
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.actions is not None
        return request.actions

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0].inputs)
            if self.max_wait_s == 0:  # no batching across requests (e.g. seeded sampling per request)
                self._answer(batch)
                continue
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get(False)
                except queue.Empty:
                    break
                if size + len(request.inputs) > self.max_batch:
                    self._answer(batch)  # the newcomer starts the next batch
                    batch, size = [request], len(request.inputs)
                    deadline = time.monotonic() + self.max_wait_s
                    continue
                batch.append(request)
                size += len(request.inputs)
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        try:
            self.forward_passes += 1
            actions = np.asarray(self.policy_fn([item for r in batch for item in r.inputs]))
            start = 0
            for request in batch:
                request.actions = actions[start : start + len(request.inputs)]
                start += len(request.inputs)
        except Exception as error:
            if len(batch) > 1:  # run each alone, so the error reaches only the request that caused it
                for request in batch:
                    self._answer([request])
                return
            batch[0].error = error  # the worker keeps serving
        self.requests_served += len(batch)
        for request in batch:
            request.done.set()
