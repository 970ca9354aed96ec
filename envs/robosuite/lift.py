"""robosuite Lift: the offline demo environment, with its data, transforms and closed-loop rollouts.

Everything runs without downloads: robosuite ships its assets, a scripted expert writes the training
demonstrations into a local LeRobot dataset, and the same transforms serve training and rollout.

Policy layout (the same as LIBERO's, so that policies and configs carry over), in
:mod:`envs.robosuite.transforms`: images of ``agentview`` and ``robot0_eye_in_hand``, upright; 8-D
state; 7-D OSC_POSE action (delta end-effector position and axis-angle rotation, gripper −1 open /
+1 close), all in [−1, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import ACTION_KEY, STATE_KEY, EnvAdapter, TrainingData, camera_key
from envs.robosuite.expert import LiftExpert
from envs.robosuite.runtime import import_robosuite
from envs.robosuite.schema import RobosuiteSimulatorConfig
from envs.robosuite.transforms import ACTION_NAMES, STATE_NAMES, LiftTransforms
from vla_train.data.lerobot_io import (
    DatasetRecorder,
    dataset_lock,
    image_feature,
    is_complete,
    refuse_existing,
    vector_feature,
)
from vla_train.progress import progress_bar
from vla_train.rollout import EpisodeSpec

VIDEO_UPSCALE = 4
#: ``env.simulator`` fields that name something of robosuite's, and the registry that lists the names
SIMULATOR_NAMES = {"task": "ALL_ENVIRONMENTS", "robot": "ALL_ROBOTS", "controller": "ALL_CONTROLLERS"}


def check_simulator_names(robosuite: Any, sim: Any) -> None:
    """A misspelled task, robot or controller is named with robosuite's choices, instead of an error
    from deep inside ``robosuite.make`` in every env worker."""
    for name, registry in SIMULATOR_NAMES.items():
        known = sorted(getattr(robosuite, registry))
        if sim[name] not in known:
            raise ValueError(
                f"env.simulator.{name}={sim[name]!r}: robosuite has no such {name}; it has {known}"
            )


class RobosuiteLiftAdapter(EnvAdapter):
    """``env=robosuite_lift``: see the module docstring for the layout."""

    # ------------------------------------------------------------------------------------------ data
    def training_data(self) -> TrainingData:
        dataset_cfg = self.cfg.dataset
        root = Path(dataset_cfg.root) if dataset_cfg.root else None
        if root is not None and not is_complete(root):
            if not dataset_cfg.generate:
                raise FileNotFoundError(
                    f"env.dataset.root={root} holds no complete dataset; set env.dataset.generate=true to "
                    "record expert demonstrations there"
                )
            with dataset_lock(root):  # the jobs of a sweep record once; the others wait, then read it
                if not is_complete(root):
                    refuse_existing(root, key="env.dataset.root")
                    self.generate_demonstrations(root, dataset_cfg.num_demos)
        return self.lerobot_training_data(root, dataset_cfg.episodes)

    @functools.cached_property
    def transforms(self) -> LiftTransforms:
        return LiftTransforms(tuple(self.cfg.cameras), self.cfg.instruction)

    def sample_to_policy(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """A LeRobot frame (images CHW in [0, 1], action chunk) → a policy training sample, through the
        input transform the rollouts use on live frames."""
        return {
            **self.transforms.inputs(sample),
            "actions": sample[ACTION_KEY],
            "action_is_pad": sample[f"{ACTION_KEY}_is_pad"],
        }

    # -------------------------------------------------------------------------------------- simulator
    def make_simulator(self, cameras: bool = True) -> Any:
        robosuite = import_robosuite()
        sim = self.cfg.simulator
        check_simulator_names(robosuite, sim)
        options: dict[str, Any] = dict(
            robots=sim.robot,
            controller_configs=robosuite.load_controller_config(default_controller=sim.controller),
            has_renderer=False,
            has_offscreen_renderer=cameras,
            use_camera_obs=cameras,
            use_object_obs=True,
            reward_shaping=False,
            control_freq=self.cfg.fps,
            horizon=max(self.cfg.eval.max_steps, sim.max_demo_steps) + sim.steps_after_success,
            hard_reset=False,  # True rebuilds the model and renderer at every reset (~1 s)
        )
        if cameras:
            options.update(
                camera_names=list(self.cfg.cameras),
                camera_heights=self.cfg.image_size,
                camera_widths=self.cfg.image_size,
                camera_depths=False,
            )
        env = robosuite.make(sim.task, **options)
        if cameras and not sim.reflections:
            import mujoco

            # Mirror reflections double the software-rendering cost per image and add nothing here.
            env.sim._render_context_offscreen.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return env

    def evaluation_episodes(self) -> list[EpisodeSpec]:
        """``eval.episodes`` scenes from seeds ``eval.seed``, ``eval.seed + 1``, … (unseen in training)."""
        self.check_evaluation_options()
        evaluation = self.cfg.eval
        return [
            EpisodeSpec(
                task=self.cfg.name,
                trial=episode,
                seed=evaluation.seed + episode,
                max_steps=evaluation.max_steps,
                group=self.cfg.name,
                video=episode < evaluation.videos,
            )
            for episode in range(evaluation.episodes)
        ]

    def check_evaluation_options(self) -> None:
        """One task (index 0): ``env.eval.tasks`` may be null or ``[0]``; ``env.simulator``'s task, robot
        and controller are robosuite's (checked against robosuite only when they are not the defaults,
        which are known good: importing robosuite costs a second)."""
        tasks = self.cfg.eval.get("tasks")
        if tasks and list(tasks) != [0]:
            raise ValueError(
                f"env.eval.tasks={list(tasks)}: {self.cfg.name} has one task, index 0; use "
                "env.eval.tasks=null or [0]"
            )
        sim, defaults = self.cfg.simulator, RobosuiteSimulatorConfig()
        if any(sim[name] != getattr(defaults, name) for name in SIMULATOR_NAMES):
            check_simulator_names(import_robosuite(), sim)

    def make_env(self, task: str) -> LiftRollout:
        return LiftRollout(self)

    def generate_demonstrations(self, root: Path, num_demos: int, seed: int = 0) -> None:
        """Record ``num_demos`` successful expert episodes (failed ones are discarded) into ``root``."""
        sim = self.cfg.simulator
        features = {
            camera_key(camera): image_feature(
                self.cfg.image_size, self.cfg.image_size, video=self.cfg.dataset.video
            )
            for camera in self.cfg.cameras
        }
        features[STATE_KEY] = vector_feature(STATE_NAMES)
        features[ACTION_KEY] = vector_feature(ACTION_NAMES)
        env = self.make_simulator()
        expert = LiftExpert(noise=sim.expert_noise, rng=np.random.default_rng(seed))
        attempts = 0
        try:
            with (
                DatasetRecorder(
                    root,
                    self.cfg.dataset.repo_id,
                    self.cfg.fps,
                    features,
                    robot_type="panda",
                    video=self.cfg.dataset.video,
                ) as recorder,
                progress_bar(num_demos, f"expert demonstrations → {root}", unit="episode") as progress,
            ):
                while recorder.episodes < num_demos:
                    if attempts >= 2 * num_demos + 10:
                        raise RuntimeError(
                            f"the expert succeeded in only {recorder.episodes}/{attempts} episodes"
                        )
                    np.random.seed(seed + attempts)  # robosuite samples the scene from NumPy's global RNG
                    attempts += 1
                    if self._record_episode(env, expert, recorder):
                        recorder.save_episode()
                        progress.update(1)
                    else:
                        recorder.discard_episode()
        finally:
            env.close()

    def _record_episode(self, env: Any, expert: LiftExpert, recorder: DatasetRecorder) -> bool:
        sim = self.cfg.simulator
        observation = env.reset()
        expert.reset(observation)
        success_step = None
        for step in range(sim.max_demo_steps + sim.steps_after_success):
            action = expert.act(observation)
            frame = self.transforms.frame(observation)  # what the policy's input transform reads back
            task = frame.pop("task")
            recorder.add_frame({**frame, ACTION_KEY: action.astype(np.float32)}, task=task)
            observation, _, done, _ = env.step(action)
            if success_step is None and env._check_success():
                success_step = step
            if success_step is not None and step - success_step >= sim.steps_after_success:
                return True
            if (success_step is None and step >= sim.max_demo_steps) or done:
                break
        return success_step is not None and env._check_success()


class LiftRollout:
    """One simulator reused across episodes, as the env workers drive it."""

    def __init__(self, adapter: RobosuiteLiftAdapter) -> None:
        self.adapter = adapter
        self.fps = adapter.cfg.fps
        self.env = adapter.make_simulator()
        self.observation: Mapping[str, np.ndarray] | None = None

    def reset(self, spec: EpisodeSpec) -> Mapping[str, np.ndarray]:
        np.random.seed(spec.seed)  # robosuite samples the scene from NumPy's global RNG
        self.observation = self.env.reset()
        return self.observation

    def step(self, action: np.ndarray) -> tuple[Mapping[str, np.ndarray], bool, bool]:
        self.observation, _, done, _ = self.env.step(action)
        return self.observation, bool(self.env._check_success()), bool(done)

    def policy_input(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return self.adapter.transforms.live_inputs(observation)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        return self.adapter.transforms.outputs(action)

    def render(self) -> np.ndarray:
        """The cameras side by side, upscaled for viewing."""
        frame = np.concatenate([self.observation[f"{c}_image"] for c in self.adapter.cfg.cameras], axis=1)
        return np.repeat(np.repeat(frame, VIDEO_UPSCALE, axis=0), VIDEO_UPSCALE, axis=1)

    def close(self) -> None:
        self.env.close()
