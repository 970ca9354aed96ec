"""One environment in its own process, driven over a pipe by the evaluator.

The worker builds its environment itself (``spawn`` start: no renderer or OpenMP state is inherited
from the parent), keeps it while consecutive episodes share a task, executes whole action chunks
open-loop, and writes its own videos, so that only policy inputs and chunks cross the pipe.

A rollout environment is what ``env_factory(task)`` returns: a :class:`RolloutEnv`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vla_train.rollout.episodes import EpisodeSpec


@runtime_checkable
class RolloutEnv(Protocol):
    """One task's environment as a worker drives it; ``policy_input`` and ``env_action`` are the
    environment's transform pair (``envs/<env>/transforms.py``), the ones its training data uses."""

    fps: int  # of the videos

    def reset(self, spec: EpisodeSpec) -> Any:
        """The protocol's start (seed, initial state, settle steps); returns the first observation."""

    def step(self, action: np.ndarray) -> tuple[Any, bool, bool]:
        """``(observation, success, done)`` after one action in the simulator's convention."""

    def policy_input(self, observation: Any) -> dict[str, Any]:
        """The policy's input: NumPy arrays and strings in the layout of a training sample."""

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """One policy action ``(A,)`` in the simulator's convention."""

    def render(self) -> np.ndarray:
        """An ``(H, W, 3)`` uint8 video frame of the current state."""

    def close(self) -> None: ...


EnvFactory = Callable[[str], RolloutEnv]
ROLLOUT_ENV_MEMBERS = [*RolloutEnv.__annotations__, *(n for n in vars(RolloutEnv) if not n.startswith("_"))]


class WorkerDied(RuntimeError):
    """The worker process exited (a crash in the simulator) or stopped answering."""


class EnvWorker:
    """Parent-side handle of one worker process; ``restart()`` replaces a dead one."""

    def __init__(self, index: int, env_factory: EnvFactory, video_dir: Path | None, timeout: float) -> None:
        self.index, self.env_factory, self.video_dir, self.timeout = index, env_factory, video_dir, timeout
        self._start()

    def _start(self) -> None:
        if multiprocessing.get_start_method(allow_none=True) not in (
            None,
            *multiprocessing.get_all_start_methods(),
        ):
            # In a joblib (loky) sweep job the global start method is "loky", which the spawned child, a
            # fresh interpreter, cannot set: it would die before running. A standard one is all it needs.
            multiprocessing.set_start_method("spawn", force=True)
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=worker_main,
            args=(child, self.env_factory, self.video_dir),
            name=f"env-worker-{self.index}",
            daemon=True,
        )
        with _ctrl_c_ignored():  # inherited: a Ctrl-C while the worker imports its simulator is ignored too
            self.process.start()
        child.close()

    def send(self, command: str, payload: Any = None) -> None:
        try:
            self.connection.send((command, payload))
        except (BrokenPipeError, EOFError, OSError) as error:
            raise WorkerDied(f"worker {self.index} is gone ({error})") from error

    def receive(self) -> tuple[str, Any]:
        deadline = time.monotonic() + self.timeout
        while not self.connection.poll(0.2):
            if not self.process.is_alive():
                raise WorkerDied(f"worker {self.index} exited with code {self.process.exitcode}")
            if time.monotonic() > deadline:
                raise WorkerDied(f"worker {self.index} did not answer within {self.timeout:.0f} s")
        try:
            return self.connection.recv()
        except (EOFError, OSError) as error:  # the pipe closed: the process is exiting
            self.process.join(timeout=5)
            raise WorkerDied(f"worker {self.index} exited with code {self.process.exitcode}") from error

    def restart(self) -> None:
        self.kill()
        self._start()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()

    def close(self) -> None:
        try:
            self.connection.send(("close", None))
            self.process.join(timeout=10)
        except (BrokenPipeError, OSError):
            pass
        self.kill()


class _Episode:
    """The worker's state for the episode it is running."""

    def __init__(self, spec: EpisodeSpec) -> None:
        self.spec = spec
        self.steps = 0
        self.success = False
        self.started = time.perf_counter()
        self.frames: list[np.ndarray] = []


def worker_main(connection: Connection, env_factory: EnvFactory, video_dir: Path | None) -> None:
    """Serve ``reset`` / ``act`` / ``close`` until told to stop; errors are answered, not raised.

    Ctrl-C (sent to the whole process group) is the parent's to handle: it stops the evaluation and
    closes the workers, instead of each worker dying mid-step with a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env, env_task, episode = None, None, None
    while True:
        try:
            command, payload = connection.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if command == "close":
            break
        try:
            if command == "reset":
                spec: EpisodeSpec = payload
                if env is None or env_task != spec.task:
                    if env is not None:
                        env.close()
                    env, env_task = None, None
                    env, env_task = env_factory(spec.task), spec.task
                    if not isinstance(env, RolloutEnv):
                        missing = [m for m in ROLLOUT_ENV_MEMBERS if not hasattr(env, m)]
                        raise TypeError(f"{type(env).__name__} is not a RolloutEnv: it lacks {missing}")
                episode = _Episode(spec)
                observation = env.reset(spec)
                _record_frame(env, episode)
                connection.send(("observation", env.policy_input(observation)))
            elif command == "act":
                observation, done = None, False
                for action in payload:
                    observation, success, done = env.step(env.env_action(np.asarray(action)))
                    episode.steps += 1
                    episode.success = episode.success or bool(success)
                    _record_frame(env, episode)
                    if episode.success or done or episode.steps >= episode.spec.max_steps:
                        done = True
                        break
                if done:
                    connection.send(("finished", _finish(env, episode, video_dir)))
                    episode = None
                else:
                    connection.send(("observation", env.policy_input(observation)))
            else:
                raise ValueError(f"unknown worker command {command!r}")
        except Exception as error:  # the simulator failed: report it, start the next task afresh
            connection.send(("error", _described(error)))
            if env is not None:
                with contextlib.suppress(Exception):  # it is broken already
                    env.close()
            env, env_task, episode = None, None, None
    if env is not None:
        env.close()


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """SIGINT ignored while a worker is started, so that the spawned interpreter starts ignoring it
    (a disposition set to ignore survives exec); only the main thread may change it.

    A Ctrl-C in the milliseconds a start takes is lost to the parent. Blocking it instead would keep
    it, but a blocked mask does not reach the spawned interpreter (it starts with an empty one), and
    the worker's own imports, seconds long, are the window that matters: a Ctrl-C there would end
    each worker with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler installed outside Python, which cannot be restored
            signal.signal(signal.SIGINT, previous)


def _record_frame(env: Any, episode: _Episode) -> None:
    if episode.spec.video:
        episode.frames.append(env.render())


def _finish(env: Any, episode: _Episode, video_dir: Path | None) -> dict[str, Any]:
    video = None
    if episode.frames and video_dir is not None:
        import imageio.v2 as imageio

        outcome = "success" if episode.success else "failure"
        name = f"{episode.spec.task.replace('/', '_')}_trial{episode.spec.trial:03d}_{outcome}.mp4"
        video = str(Path(video_dir) / name)
        Path(video_dir).mkdir(parents=True, exist_ok=True)
        imageio.mimsave(video, episode.frames, fps=env.fps, macro_block_size=1)
    return {
        "success": episode.success,
        "steps": episode.steps,
        "seconds": round(time.perf_counter() - episode.started, 3),
        "video": video,
    }


def _described(error: BaseException) -> str:
    """One line the results file keeps (the error and where it was raised: a bare ``AssertionError``
    deep in a simulator says nothing without it), then the innermost frames of the traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    where = f" (raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(error).__name__}: {message}{where}\n{traceback.format_exc(limit=-3)}"
