"""One LIBERO task as a rollout environment, following the protocol the field reports numbers with.

Protocol (OpenVLA-OFT, openpi): ``env.seed(seed)``, reset, the task's fixed initial state number
``init_state``, ``num_steps_wait`` no-op steps (gripper open) while objects settle, then at most the
suite's ``max_steps`` policy steps; success is the env's ``done``. Camera images are rendered at
``camera_size`` and rotated 180° — the orientation the LeRobot LIBERO datasets store them in.

Observations and actions go through :mod:`envs.libero.transforms`, the transform pair the training
data uses too.

NumPy only, so that LIBERO-Plus env clients can import it from their own Python environment.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.libero.runtime import import_libero, task_instruction
from envs.libero.transforms import SIMULATOR_CAMERAS, LiberoTransforms, upright
from vla_train.rollout.episodes import EpisodeSpec

NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
#: policy steps per episode by suite (OpenVLA-OFT / openpi); ``configs/env/libero_*.yaml`` agree (tested)
PROTOCOL_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}


@dataclass(frozen=True)
class LiberoSettings:
    """What a worker needs to build LIBERO envs (picklable, no config objects)."""

    camera_size: int = 256
    num_steps_wait: int = 10
    hard_reset: bool = True  # LIBERO's default; False resets ~15× faster, pixels differ slightly
    assets_dir: str | None = None
    config_dir: str | None = None
    fps: int = 20
    cameras: tuple[str, ...] = ("image", "image2")  # env.cameras: what the policy sees, in order
    state_layout: str = "dataset"  # env.state_layout: the policy's state (envs.libero.transforms)


def task_key(suite: str, index: int) -> str:
    return f"{suite}/{index}"


def parse_task_key(key: str) -> tuple[str, int]:
    suite, _, index = key.rpartition("/")
    if not suite or not index.isdigit():
        raise ValueError(f"a LIBERO task key is '<suite>/<task index>', got {key!r}")
    return suite, int(index)


def load_suite(libero: Any, suite: str) -> Any:
    """A LIBERO benchmark suite (quietly: constructing one prints its task order)."""
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if suite not in suites or suite == "libero_100":  # libero_100 is registered but has no task map
        known = sorted(name for name in suites if name != "libero_100")
        raise ValueError(f"unknown LIBERO suite {suite!r}; known: {known}")
    with contextlib.redirect_stdout(io.StringIO()):
        return suites[suite]()


def suite_tasks(suite: str, settings: LiberoSettings) -> list[tuple[int, str, int]]:
    """``(task index, instruction, number of initial states)`` for every task of ``suite``."""
    benchmark = load_suite(import_libero(settings.assets_dir, settings.config_dir), suite)
    return [
        (index, benchmark.get_task(index).language, len(benchmark.get_task_init_states(index)))
        for index in range(benchmark.n_tasks)
    ]


def protocol_episodes(
    suite: str,
    tasks: list[tuple[int, str, int]],
    trials: int,
    seed: int,
    max_steps: int,
    videos: int,
) -> list[EpisodeSpec]:
    """``trials`` episodes per task from its fixed initial states 0, 1, …, all seeded with ``seed``."""
    specs = []
    for index, _, init_states in tasks:
        if trials > init_states:
            raise ValueError(
                f"{trials} trials per task: {suite} task {index} has only {init_states} initial states"
            )
        specs += [
            EpisodeSpec(
                task=task_key(suite, index),
                trial=trial,
                seed=seed,
                max_steps=max_steps,
                init_state=trial,
                group=suite,
                video=trial < videos,
            )
            for trial in range(trials)
        ]
    return specs


class LiberoRolloutEnv:
    """``OffScreenRenderEnv`` of one task, reset to the protocol's start for each episode."""

    def __init__(self, task: str, settings: LiberoSettings) -> None:
        self.settings = settings
        self.fps = settings.fps
        self.transforms = LiberoTransforms(tuple(settings.cameras), settings.state_layout)
        suite, index = parse_task_key(task)
        libero = import_libero(settings.assets_dir, settings.config_dir)
        from libero.libero.envs import OffScreenRenderEnv

        benchmark = load_suite(libero, suite)
        if not 0 <= index < benchmark.n_tasks:
            raise ValueError(f"{suite} has tasks 0..{benchmark.n_tasks - 1}, got {index}")
        task_info = benchmark.get_task(index)
        self.instruction = task_instruction(task_info.name, task_info.language)
        self.init_states = benchmark.get_task_init_states(index)
        bddl = os.path.join(
            libero.get_libero_path("bddl_files"), task_info.problem_folder, task_info.bddl_file
        )
        self.env = OffScreenRenderEnv(
            bddl_file_name=bddl,
            camera_heights=settings.camera_size,
            camera_widths=settings.camera_size,
            hard_reset=settings.hard_reset,
        )
        self.observation: Mapping[str, np.ndarray] | None = None

    def reset(self, spec: EpisodeSpec) -> Mapping[str, np.ndarray]:
        state_index = spec.init_state if spec.init_state is not None else spec.trial
        if not 0 <= state_index < len(self.init_states):
            raise ValueError(
                f"{spec.task} has {len(self.init_states)} initial states, got index {state_index}"
            )
        self.env.seed(spec.seed)
        self.env.reset()
        observation = self.env.set_init_state(self.init_states[state_index])
        for _ in range(self.settings.num_steps_wait):
            observation, _, _, _ = self.env.step(NOOP_ACTION)
        self.observation = observation
        return observation

    def step(self, action: np.ndarray) -> tuple[Mapping[str, np.ndarray], bool, bool]:
        self.observation, _, done, _ = self.env.step(action)
        return self.observation, bool(done), False

    def policy_input(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return self.transforms.live_inputs(observation, self.instruction)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        return self.transforms.outputs(action)

    def render(self) -> np.ndarray:
        """Every simulator camera side by side, upright (what the policy sees and more)."""
        return np.concatenate(
            [upright(self.observation[f"{camera}_image"]) for camera in SIMULATOR_CAMERAS.values()], axis=1
        )

    def close(self) -> None:
        self.env.close()


def make_libero_env(settings: LiberoSettings, task: str) -> LiberoRolloutEnv:
    """Picklable env factory for the workers: ``functools.partial(make_libero_env, settings)``."""
    return LiberoRolloutEnv(task, settings)
