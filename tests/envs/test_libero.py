"""LIBERO through the real simulator: the protocol in parallel workers, resume, errors, training data."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_envs import make_exploding_libero_env
from helpers import compose_train
from libero_data import libero_assets

from envs.libero.env import LiberoRolloutEnv
from envs.libero.transforms import axis_angle
from vla_train.rollout import ResultsFile, run_episodes, summarize, with_state_history
from vla_train.training import build_env_adapter

pytestmark = pytest.mark.slow


def libero_cfg(tmp_path: Path, *overrides: str):
    return compose_train(
        [
            "env=libero_object",
            f"env.simulator.assets_dir={libero_assets()}",
            f"env.simulator.config_dir={tmp_path / 'libero-config'}",
            "env.simulator.camera_size=64",
            "env.simulator.hard_reset=false",
            "env.eval.tasks=[0,1]",
            "env.eval.episodes=2",
            "env.eval.max_steps=12",
            "env.eval.num_workers=2",
            *overrides,
        ],
        tmp_path,
    )


class RandomPolicy:
    """Random chunks; raises KeyboardInterrupt once ``stop_when`` holds (a user stopping the run)."""

    def __init__(self, stop_when=None) -> None:
        self.rng = np.random.default_rng(0)
        self.stop_when = stop_when
        self.batches: list[int] = []

    def __call__(self, inputs: list[dict]) -> np.ndarray:
        if self.stop_when is not None and self.stop_when():
            raise KeyboardInterrupt
        assert all(i["images"].shape == (2, 3, 64, 64) and i["state"].shape == (8,) for i in inputs)
        self.batches.append(len(inputs))
        return self.rng.normal(0, 0.5, (len(inputs), 8, 7)).astype(np.float32)


def test_protocol_episodes_run_on_two_workers_and_resume(tmp_path: Path) -> None:
    adapter = build_env_adapter(libero_cfg(tmp_path).env)
    specs = adapter.evaluation_episodes()
    assert [(s.task, s.init_state, s.seed) for s in specs] == [
        ("libero_object/0", 0, 7),
        ("libero_object/0", 1, 7),
        ("libero_object/1", 0, 7),
        ("libero_object/1", 1, 7),
    ]
    results = ResultsFile(tmp_path / "episodes.jsonl")
    interrupted = RandomPolicy(stop_when=lambda: len(results.records()) >= 1)  # "killed" after one episode
    with pytest.raises(KeyboardInterrupt):
        run_episodes(specs, adapter.env_factory(), interrupted, results, num_workers=2, progress=False)
    kept = results.records()
    assert len(kept) >= 1

    policy = RandomPolicy()
    records = run_episodes(
        specs,
        adapter.env_factory(),
        policy,
        results,
        num_workers=2,
        video_dir=tmp_path / "videos",
        progress=False,
    )
    assert sorted(r["key"] for r in records) == sorted(s.key for s in specs)  # nothing lost or duplicated
    assert records[: len(kept)] == kept
    assert all(r["error"] is None and r["steps"] == 12 for r in records)  # random actions never succeed
    assert max(policy.batches) == 2  # both workers' observations in one policy call
    summary = summarize(records)
    assert summary.overall.episodes == 4 and summary.overall.errors == 0


def test_a_failing_worker_is_retried_then_recorded(tmp_path: Path) -> None:
    adapter = build_env_adapter(libero_cfg(tmp_path, "env.eval.episodes=1").env)
    factory = functools.partial(make_exploding_libero_env, adapter.settings, "libero_object/1")
    records = run_episodes(
        adapter.evaluation_episodes(),
        factory,
        RandomPolicy(),
        ResultsFile(tmp_path / "r.jsonl"),
        2,
        progress=False,
    )
    by_task = {r["task"]: r for r in records}
    assert by_task["libero_object/0"]["error"] is None
    failed = by_task["libero_object/1"]
    assert (
        failed["attempts"] == 2 and "simulation became unstable" in failed["error"] and not failed["success"]
    )


@pytest.mark.parametrize("layout", ["dataset", "vlanext"])
def test_dataset_frames_and_live_observations_share_one_layout(
    libero_dataset: Path, tmp_path: Path, layout: str
) -> None:
    cfg = libero_cfg(
        tmp_path,
        f"env.dataset.root={libero_dataset}",
        "env.image_size=64",
        f"env.state_layout={layout}",
        "env.state_normalization=identity",
    )
    adapter = build_env_adapter(cfg.env)
    assert adapter.suite_episodes() == [0, 1, 2, 3]
    data = adapter.training_data()
    sample = data.dataset[0]
    env = LiberoRolloutEnv("libero_object/0", adapter.settings)
    try:
        spec = adapter.evaluation_episodes()[0]
        live = env.policy_input(env.reset(spec))
    finally:
        env.close()
    assert sample["images"].shape == live["images"].shape == (2, 3, 64, 64)
    assert (
        sample["instruction"] == live["instruction"] == "pick up the alphabet soup and place it in the basket"
    )
    # the recording's first frame is this very state: same pixels (upright), same 8-D state
    assert np.abs(sample["images"].numpy() - live["images"]).max() < 1e-6
    np.testing.assert_allclose(sample["state"].numpy(), live["state"], atol=1e-6)
    assert live["state"].shape == (cfg.env.state_dim,) == ((8,) if layout == "dataset" else (7,))
    assert sample["actions"].shape == (cfg.env.chunk_size, 7)


def test_the_video_copy_reads_as_the_png_copy(
    libero_dataset: Path, libero_video_dataset: Path, tmp_path
) -> None:
    """lerobot/libero (MP4, the default) and HuggingFaceVLA/libero (PNG) hold the same frames under the
    same keys: the same recording read from either gives the same sample up to video compression."""
    samples = []
    for root in (libero_dataset, libero_video_dataset):
        cfg = libero_cfg(tmp_path, f"env.dataset.root={root}", "env.image_size=64")
        samples.append(build_env_adapter(cfg.env).training_data().dataset[5])
    png, video = samples
    assert png["images"].shape == video["images"].shape == (2, 3, 64, 64)
    assert (png["images"] - video["images"]).abs().mean() < 0.03  # lossy, but upright and in camera order
    assert (png["images"] - video["images"].flip(-2)).abs().mean() > 0.03  # a flipped frame would show
    torch.testing.assert_close(png["state"], video["state"])
    torch.testing.assert_close(png["actions"], video["actions"])


def test_axis_angle_matches_the_rotation_vector() -> None:
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_rotvec([0.3, -1.2, 0.5])
    np.testing.assert_allclose(axis_angle(rotation.as_quat()), rotation.as_rotvec(), atol=1e-9)
    np.testing.assert_allclose(axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))


def test_missing_assets_name_the_setting_and_the_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LIBERO_ASSETS", raising=False)
    from envs.libero.runtime import LiberoSetupError, resolve_assets

    with pytest.raises(LiberoSetupError, match=r"env\.simulator\.assets_dir.*LIBERO_ASSETS"):
        resolve_assets(None)
    with pytest.raises(LiberoSetupError, match="lacks articulated_objects"):
        resolve_assets(str(tmp_path))


def test_a_tiny_policy_trains_on_libero_data_and_is_evaluated(
    libero_video_dataset: Path, tmp_path: Path
) -> None:
    from vla_train import train

    cfg = libero_cfg(
        tmp_path,
        f"env.dataset.root={libero_video_dataset}",
        "env.image_size=64",
        "backbone=tiny",
        "backbone.image_size=64",
        "trainer=tiny",
        "trainer.steps=3",
        "logger=none",
        "evaluate=true",
        "env.eval.tasks=[1]",
        "env.eval.episodes=2",
        "env.eval.max_steps=8",
        "env.state_history=2",  # VLANeXt-style recent states, in the data and in the env workers
    )
    assert build_env_adapter(cfg.env).env_factory().func is with_state_history
    metrics = train(cfg)
    assert metrics["eval/episodes"] == 2 and metrics["eval/errors"] == 0
    videos = sorted(p.name for p in (tmp_path / "eval" / "step_0000003" / "videos").iterdir())
    assert videos == ["libero_object_1_trial000_failure.mp4"]  # eval.videos=1 per task


def test_env_client_in_another_process_evaluates_through_the_policy_server(tmp_path: Path) -> None:
    """What LIBERO-Plus users run: envs in a separate Python process, the policy behind the server."""
    import subprocess
    import sys

    from vla_train.serving.server import PolicyServer

    policy = RandomPolicy()
    server = PolicyServer(policy, {"state_dim": 8, "action_dim": 7, "chunk_size": 8}, port=0).start()
    try:
        command = [
            sys.executable,
            "-m",
            "envs.libero.client",
            f"--server={server.uri}",
            f"--output={tmp_path / 'client'}",
            "--suite=libero_object",
            "--tasks",
            "0",
            "--trials=2",
            "--max-steps=8",
            "--workers=2",
            "--camera-size=64",
            "--soft-reset",
            f"--assets={libero_assets()}",
        ]
        done = subprocess.run(
            command, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    records = ResultsFile(tmp_path / "client" / "episodes.jsonl").records()
    assert len(records) == 2 and all(r["error"] is None and r["steps"] == 8 for r in records)
    assert sum(policy.batches) >= 2 and max(policy.batches) == 2  # served batched requests
    protocol = json.loads((tmp_path / "client" / "protocol.json").read_text())
    assert protocol["max_steps_by_suite"]["libero_object"] == 8 and protocol["seed"] == 7


@pytest.mark.parametrize("suite", ["libero_object", "libero_10", "libero_90"])
def test_suite_instructions_need_no_simulator_and_equal_liberos_own(suite: str, tmp_path: Path) -> None:
    from envs.libero.env import LiberoSettings, suite_tasks
    from envs.libero.runtime import suite_instructions

    settings = LiberoSettings(assets_dir=str(libero_assets()), config_dir=str(tmp_path / "config"))
    assert suite_instructions(suite) == {language for _, language, _ in suite_tasks(suite, settings)}


def test_a_training_node_without_libero_assets_selects_the_suite_episodes(
    libero_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = libero_cfg(tmp_path, f"env.dataset.root={libero_dataset}", "env.simulator.assets_dir=null")
    monkeypatch.delenv("LIBERO_ASSETS", raising=False)  # after libero_cfg, which may read it
    assert cfg.env.simulator.assets_dir is None
    adapter = build_env_adapter(cfg.env)
    assert adapter.suite_episodes() == [0, 1, 2, 3]  # only evaluation needs the simulator and its assets
    with pytest.raises(ValueError, match=r"env\.simulator\.suite='libero_100'"):
        build_env_adapter(libero_cfg(tmp_path, "env.simulator.suite=libero_100").env).suite_episodes()


def test_the_client_exits_non_zero_when_every_episode_errors(tmp_path: Path) -> None:
    """LIBERO-Plus installed without its assets: every episode errors; there is no Table 1 row to print."""
    from envs.libero.client import main
    from vla_train.serving.server import PolicyServer

    server = PolicyServer(RandomPolicy(), {"state_dim": 8, "action_dim": 7, "chunk_size": 8}, port=0).start()
    empty = tmp_path / "no-assets"
    empty.mkdir()
    plus = Path(__file__).resolve().parents[3] / "shared" / "libero-plus" / "task_classification.json"
    if not plus.is_file():
        pytest.skip(f"LIBERO-Plus task list not found at {plus}")
    try:
        with pytest.raises(SystemExit, match=r"every episode ended in an error .*no success rate"):
            main([f"--server={server.uri}", f"--output={tmp_path / 'client'}", "--plus", "--categories",
                  "Camera", "--per-category=1", "--workers=1", "--max-steps=4", f"--task-list={plus}",
                  f"--assets={empty}"])  # fmt: skip
    finally:
        server.stop()
    records = ResultsFile(tmp_path / "client" / "episodes.jsonl").records()
    assert len(records) == 1 and "LIBERO assets directory" in records[0]["error"]


def test_vlanext_state_layout_is_pose_and_one_gripper_closedness() -> None:
    from envs.libero.transforms import policy_state

    fingers = [[0.04, -0.04], [0.0, 0.0], [0.02, -0.02], [0.05, -0.05]]  # open, closed, half, past open
    states = np.array([[1, 2, 3, 0.1, 0.2, 0.3, *f] for f in fingers], np.float32)
    closed = policy_state(states, "vlanext")
    np.testing.assert_allclose(closed[:, :6], states[:, :6])
    np.testing.assert_allclose(closed[:, 6], [0.0, 1.0, 0.5, 0.0], atol=1e-6)
    history = torch.from_numpy(states).reshape(2, 2, 8)  # (history, 8) dataset frames are tensors
    np.testing.assert_allclose(policy_state(history, "vlanext").numpy(), closed.reshape(2, 2, 7), atol=1e-6)
    assert policy_state(states, "dataset") is states
    with pytest.raises(ValueError, match=r"env\.state_layout='raw'"):
        policy_state(states, "raw")


def test_a_vlanext_state_policy_trains_on_the_8d_dataset(libero_dataset: Path, tmp_path: Path) -> None:
    from vla_train import train

    overrides = [f"env.dataset.root={libero_dataset}", "env.image_size=64", "env.state_layout=vlanext"]
    overrides += ["env.state_history=2", "trainer=tiny", "trainer.steps=2", "logger=none", "evaluate=false"]
    with pytest.raises(ValueError, match=r"set env\.state_normalization=identity"):
        build_env_adapter(libero_cfg(tmp_path / "normalized", *overrides).env).training_data()
    cfg = libero_cfg(tmp_path / "raw", *overrides, "env.state_normalization=identity")
    sample = build_env_adapter(cfg.env).training_data().dataset[0]
    assert sample["state"].shape == (2, 7)
    assert train(cfg)["step"] == 2


def test_the_official_action_targets_vlanexts_and_vla_adapters(libero_dataset: Path, tmp_path: Path) -> None:
    """VLANeXt: motion scaled by the bounds, chunks past an episode's end continued with no motion;
    VLA-Adapter (OpenVLA-OFT's loader): percentile bounds, clipped, and only complete chunks."""
    from vla_train.training import build_policy

    base = [f"env.dataset.root={libero_dataset}", "env.image_size=64"]
    masked = build_env_adapter(libero_cfg(tmp_path / "m", *base).env).training_data()
    vlanext = [*base, "env.action_padding=zero_motion", "env.action_normalization=min_max"]
    cfg = libero_cfg(tmp_path / "z", *vlanext)
    data = build_env_adapter(cfg.env).training_data()
    index = next(i for i in reversed(range(len(masked.dataset))) if masked.dataset[i]["action_is_pad"].any())
    lerobots, vlanexts = masked.dataset[index], data.dataset[index]
    pad = lerobots["action_is_pad"]
    assert not vlanexts["action_is_pad"].any()  # trained on
    assert torch.equal(vlanexts["actions"][pad, :6], torch.zeros(int(pad.sum()), 6))  # no motion
    assert torch.equal(vlanexts["actions"][:, 6], lerobots["actions"][:, 6])  # the last gripper command
    assert torch.equal(vlanexts["actions"][~pad], lerobots["actions"][~pad])
    policy = build_policy(cfg, data.stats, data.state_key, data.action_key)
    assert policy.action_normalizer.mode == "min_max"
    actions = torch.stack([data.dataset[i]["actions"] for i in range(0, len(data.dataset), 7)])
    normalized = policy.action_normalizer.normalize(actions)
    assert normalized.abs().max() <= 1 + 1e-5 and normalized.abs().max() > 0.9  # the bounds go to ±1

    adapter = [*base, "env.action_padding=complete_chunks", "env.action_normalization=bounds_q99"]
    cfg = libero_cfg(tmp_path / "c", *adapter, "env.state_normalization=bounds_q99")
    data = build_env_adapter(cfg.env).training_data()
    episodes = len(
        np.unique(np.asarray(masked.dataset.frames.hf_dataset.with_format("numpy")["episode_index"]))
    )
    assert len(data.dataset) == len(masked.dataset) - episodes * (cfg.env.chunk_size - 1)
    samples = [data.dataset[i] for i in [*range(0, len(data.dataset), 5), len(data.dataset) - 1]]
    assert not any(sample["action_is_pad"].any() for sample in samples)
    policy = build_policy(cfg, data.stats, data.state_key, data.action_key)
    assert policy.action_normalizer.mode == policy.state_normalizer.mode == "bounds_q99"
    normalized = policy.action_normalizer.normalize(torch.stack([sample["actions"] for sample in samples]))
    assert normalized.abs().max() <= 1.0
