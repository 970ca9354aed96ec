"""DROID: raw recordings → LeRobot dataset → training → served to a robot-side client on loopback."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from droid_data import frame, write_raw_episode
from helpers import compose_train

from envs.droid.client import DroidPolicyClient
from envs.droid.convert import IMAGE_HEIGHT, IMAGE_WIDTH, convert
from envs.droid.raw import read_episode
from envs.droid.transforms import policy_input, resize_with_pad, robot_action
from vla_train.evaluation import local_policy_fn
from vla_train.serving.client import PolicyServerError, RemotePolicy

pytestmark = pytest.mark.slow
STEPS = 12


@pytest.fixture(scope="module")
def droid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("droid")
    raw = root / "raw"
    good = [
        write_raw_episode(raw, f"Wed_Nov_25_10:00:0{i}_2026", STEPS, "put the cube on the plate", True, i)
        for i in range(2)
    ]
    write_raw_episode(raw, "Wed_Nov_25_11:00:00_2026", 5, "knock the cup over", False, 9)
    annotations = root / "annotations.json"
    uuid = read_episode(good[1]).uuid
    annotations.write_text(json.dumps({uuid: {"language_instruction1": "place the cube onto the plate"}}))
    dataset = root / "dataset"
    assert convert(raw, dataset, annotations=annotations) == 2  # the failed episode is left out
    return {"raw": raw, "episodes": good, "dataset": dataset, "annotations": annotations}


def test_raw_episodes_are_read_with_their_cameras_and_instruction(droid) -> None:
    labels = json.loads(droid["annotations"].read_text())
    first, second = (read_episode(path, labels) for path in droid["episodes"])
    assert first.cameras == {
        "exterior_1_left": "11111111",
        "wrist_left": "33333333",
        "exterior_2_left": "22222222",
    }
    assert (
        first.instruction == "put the cube on the plate"
        and second.instruction == "place the cube onto the plate"
    )
    steps = list(first.steps())
    assert len(steps) == STEPS and steps[0].action().shape == (8,) and steps[0].joint_position.shape == (7,)
    decoded = steps[3].images["wrist_left"].astype(float)
    assert np.abs(decoded - frame(3, 2, 72, 128)).mean() < 6  # the video holds step 3's frame


def test_converted_dataset_and_training_layout(droid, tmp_path: Path) -> None:
    from vla_train.training import build_env_adapter

    cfg = compose_train(["env=droid", f"env.dataset.root={droid['dataset']}", "env.image_size=64"], tmp_path)
    data = build_env_adapter(cfg.env).training_data()
    assert len(data.dataset) == 2 * STEPS
    sample = data.dataset[STEPS + 2]  # second episode, step 2
    assert sample["images"].shape == (2, 3, 64, 64) and sample["actions"].shape == (16, 8)
    assert sample["instruction"] == "place the cube onto the plate"
    raw = list(read_episode(droid["episodes"][1]).steps())[2]
    np.testing.assert_allclose(
        sample["state"].numpy(), np.concatenate([raw.joint_position, raw.gripper_position]), atol=1e-6
    )
    np.testing.assert_allclose(sample["actions"][0].numpy(), raw.action(), atol=1e-6)
    # 320×180 stored → 64×36 resized and zero-padded to 64×64, as the robot client does it
    assert (
        float(sample["images"][:, :, :10].abs().max()) == 0.0
        and float(sample["images"][:, :, 20:40].mean()) > 0
    )
    assert data.stats["action"]["mean"].shape == (8,)


def test_trained_policy_served_to_the_robot_client(droid, tmp_path: Path) -> None:
    from vla_train import train

    run = tmp_path / "run"
    metrics = train(
        compose_train(
            [
                "env=droid",
                f"env.dataset.root={droid['dataset']}",
                "env.image_size=64",
                "backbone=tiny",
                "backbone.image_size=64",
                "trainer=tiny",
                "trainer.steps=3",
                "logger=none",
            ],
            run,
        )
    )
    assert metrics["step"] == 3 and "eval/success_rate" not in metrics  # no simulator to evaluate in
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from serve import build_server

    server = build_server(str(run), [], "127.0.0.1", 0, device="cpu").start()
    try:
        client = DroidPolicyClient(server.uri)
        steps = list(read_episode(droid["episodes"][0]).steps())
        for step in steps[:3]:  # replay the recording as live observations
            commands = client.act(
                step.images["exterior_1_left"],
                step.images["wrist_left"],
                step.joint_position,
                step.gripper_position,
                "put the cube on the plate",
            )
            assert commands.shape == (16, 8) and np.abs(commands).max() <= 1.0
            assert set(np.unique(commands[:, -1])) <= {0.0, 1.0}
        assert len(client.latencies) == 3 and all(0 < t < 30 for t in client.latencies)
        # the served chunk is the policy's own prediction on the same input
        from vla_train.inference import load_policy

        _, policy, _ = load_policy(str(run), device="cpu")
        live = policy_input(
            steps[0].images["exterior_1_left"],
            steps[0].images["wrist_left"],
            steps[0].joint_position,
            steps[0].gripper_position,
            "put the cube on the plate",
            64,
        )
        with RemotePolicy(server.uri) as remote:
            np.testing.assert_array_equal(remote([live]), local_policy_fn(policy)([live]))
            with pytest.raises(PolicyServerError, match="state"):
                remote([{**live, "state": np.zeros(5, np.float32)}])
            assert remote([live]).shape == (1, 16, 8)  # the connection survived the bad request
        client.close()
    finally:
        server.stop()


def test_transforms_keep_aspect_and_command_the_gripper() -> None:
    image = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), 200, np.uint8)
    padded = resize_with_pad(image, 64)
    assert padded.shape == (64, 64, 3) and padded[0].max() == 0 and padded[32].min() == 200
    assert resize_with_pad(padded, 64) is padded
    np.testing.assert_array_equal(
        robot_action(np.array([2.0, -3.0, 0.1, 0, 0, 0, 0, 0.7])), [1, -1, 0.1, 0, 0, 0, 0, 1]
    )
    for bad in (np.nan, np.inf):  # np.clip would keep NaN and turn inf into a full-speed command
        for velocity in (True, False):
            with pytest.raises(ValueError, match="not finite"):
                robot_action(np.array([0.1, bad, 0, 0, 0, 0, 0, 0]), velocity)


def pi05_run(droid, output: Path, optimizer: str, *overrides: str):
    return compose_train(
        [
            "env=droid",
            f"env.dataset.root={droid['dataset']}",
            "env.image_size=64",
            "backbone=pi05_tiny",
            "head=pi05_tiny",
            f"optimizer={optimizer}",
            "trainer=tiny",
            "trainer.steps=4",
            "trainer.checkpoint_every=2",
            "logger=none",
            *overrides,
        ],
        output,
    )


OPTIMIZERS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "optimizer").glob("*.yaml")
)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)  # the paper's three and every other option
def test_pi05_trains_resumes_and_serves_what_select_action_gives(
    droid, tmp_path: Path, optimizer: str
) -> None:
    """The acceptance of π0.5 + DROID: train with each optimizer configuration, stop, resume exactly,
    serve; the served chunk is the policy's own ``select_action`` sequence on the same input."""
    import torch
    from safetensors.torch import load_file

    from vla_train import train
    from vla_train.trainer.checkpoint import list_checkpoints
    from vla_train.trainer.metrics_log import read_metrics

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(pi05_run(droid, straight, optimizer))
    assert train(pi05_run(droid, interrupted, optimizer, "trainer.stop_at_step=2"))["step"] == 2
    assert train(pi05_run(droid, interrupted, optimizer, "trainer.resume=true"))["step"] == 4
    curves = [
        {m["step"]: m["train/loss"] for m in read_metrics(run / "metrics.jsonl") if "train/loss" in m}
        for run in (straight, interrupted)
    ]
    assert curves[0] == curves[1] and list(curves[0]) == [1, 2, 3, 4]
    final = [load_file(list_checkpoints(run)[-1] / "model.safetensors") for run in (straight, interrupted)]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from serve import build_server

    from vla_train.inference import load_policy

    server = build_server(str(interrupted), [], "127.0.0.1", 0, device="cpu", seed=7).start()
    try:
        step = list(read_episode(droid["episodes"][0]).steps())[4]
        live = policy_input(
            step.images["exterior_1_left"],
            step.images["wrist_left"],
            step.joint_position,
            step.gripper_position,
            "put the cube on the plate",
            64,
        )
        with RemotePolicy(server.uri) as remote:
            served = remote([live])[0]
            assert np.array_equal(remote([live])[0], served)  # seeded: same observation, same chunk
        # weights come from our checkpoint: the run's pretrained source is not even looked at
        _, policy, _ = load_policy(str(interrupted), ["backbone.pretrained=/nowhere/pi05"], device="cpu")
        observation = {
            "images": torch.from_numpy(live["images"])[None],
            "state": torch.from_numpy(live["state"])[None],
            "instruction": [live["instruction"]],
        }
        generator = torch.Generator().manual_seed(7)
        policy.reset()
        executed = [policy.select_action(observation, generator)[0].numpy() for _ in range(8)]
        np.testing.assert_array_equal(np.stack(executed), served[:8])  # n_action_steps = 8
        assert served.shape == (16, 8) and np.isfinite(served).all()
    finally:
        server.stop()


def test_end_effector_state_and_joint_position_actions(droid, tmp_path: Path) -> None:
    """Other recorded spaces: converted by name, configured by name, refused when they disagree."""
    from vla_train.training import build_env_adapter

    dataset = tmp_path / "cartesian"
    convert(droid["raw"], dataset, state_space="cartesian", action_space="joint_position")
    overrides = ["env=droid", f"env.dataset.root={dataset}", "env.image_size=32"]
    cfg = compose_train(
        [*overrides, "env.state_space=cartesian", "env.action_space=joint_position"], tmp_path
    )
    assert (cfg.env.state_dim, cfg.env.action_dim) == (7, 8)
    sample = build_env_adapter(cfg.env).training_data().dataset[3]
    raw = list(read_episode(droid["episodes"][0]).steps())[3]
    np.testing.assert_allclose(sample["state"].numpy(), raw.state("cartesian"), atol=1e-6)
    np.testing.assert_allclose(sample["actions"][0].numpy(), raw.action("joint_position"), atol=1e-6)
    with pytest.raises(ValueError, match=r"env\.state_space=joint"):
        build_env_adapter(compose_train(overrides, tmp_path).env).training_data()
    with pytest.raises(ValueError, match="cartesian_speed"):
        convert(droid["raw"], tmp_path / "bad", action_space="cartesian_speed")
    # position targets pass through; velocities are clipped
    target = np.array([2.5, -3.0, 0, 0, 0, 0, 0, 0.2])
    np.testing.assert_array_equal(robot_action(target, velocity=False), [2.5, -3.0, 0, 0, 0, 0, 0, 0.0])


def test_conversion_never_touches_existing_output_and_a_failed_one_leaves_nothing(
    droid, tmp_path: Path
) -> None:
    import shutil

    import h5py

    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"output=.*users.*nothing was changed"):
        convert(droid["raw"], users)
    assert [p.name for p in users.iterdir()] == ["notes.txt"]

    raw = tmp_path / "raw"
    shutil.copytree(droid["raw"], raw)
    second = raw / droid["episodes"][1].relative_to(droid["raw"])
    with h5py.File(second / "trajectory.h5", "a") as h5:
        del h5["action/joint_velocity"]  # the first episode converts, the second fails
    with pytest.raises(KeyError, match="joint_velocity"):
        convert(raw, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_malformed_recordings_are_named(droid, tmp_path: Path) -> None:
    import shutil

    import h5py

    raw = tmp_path / "raw"
    episode = raw / droid["episodes"][0].relative_to(droid["raw"])
    shutil.copytree(droid["episodes"][0], episode)
    with h5py.File(episode / "trajectory.h5", "a") as h5:  # actions shorter than the states
        velocity = h5["action/joint_velocity"][:]
        del h5["action/joint_velocity"]
        h5["action/joint_velocity"] = velocity[:-3]
    with pytest.raises(ValueError, match=r"trajectory\.h5: \{'joint_velocity': 9\} hold fewer steps"):
        convert(raw, tmp_path / "short")
    assert convert(raw, tmp_path / "other", action_space="joint_position") == 1  # the short space is not used
    (episode / "trajectory.h5").write_bytes(b"not an HDF5 file")
    with pytest.raises(ValueError, match=r"trajectory\.h5: not a readable DROID recording file"):
        convert(raw, tmp_path / "garbage")
    bad_labels = tmp_path / "labels.json"
    bad_labels.write_text("{not json")
    with pytest.raises(ValueError, match=r"annotations .*labels\.json: not a readable JSON file"):
        convert(droid["raw"], tmp_path / "labels", annotations=bad_labels)
    assert not any((tmp_path / name).exists() for name in ("short", "garbage", "labels"))
    assert (tmp_path / "other").is_dir()


def test_bad_annotations_nan_states_and_lost_trajectories_are_named(droid, tmp_path: Path) -> None:
    import shutil

    import h5py

    uuid = read_episode(droid["episodes"][0]).uuid
    labels = tmp_path / "labels.json"
    for content, kind in (({uuid: "place the cube"}, "str"), ({uuid: ["place the cube"]}, "list")):
        labels.write_text(json.dumps(content))
        with pytest.raises(
            ValueError,
            match=rf"annotations .*labels\.json: the entry of '{re.escape(uuid)}' is a JSON {kind}; "
            r'expected a JSON object \{"<episode uuid>": \{"language_instruction1"',
        ):
            convert(droid["raw"], tmp_path / "labelled", annotations=labels)
    labels.write_text(json.dumps({uuid: {"language_instruction1": 3}}))
    with pytest.raises(ValueError, match=r"language_instruction1 is a JSON int, not a string"):
        convert(droid["raw"], tmp_path / "labelled", annotations=labels)

    raw = tmp_path / "raw"
    episode = raw / droid["episodes"][0].relative_to(droid["raw"])
    shutil.copytree(droid["episodes"][0], episode)
    with h5py.File(episode / "trajectory.h5", "a") as h5:
        h5["observation/robot_state/joint_positions"][...] = float("nan")
    with pytest.raises(
        ValueError,
        match=rf"{episode}/trajectory\.h5: observation/robot_state/joint_positions holds non-finite "
        rf"values .* at {STEPS} of {STEPS} steps, first at step 0",
    ):
        convert(raw, tmp_path / "nan")
    # the NaN field is not converted with the cartesian state space
    assert convert(raw, tmp_path / "cartesian", state_space="cartesian") == 1

    lost = raw / droid["episodes"][1].relative_to(droid["raw"])
    shutil.copytree(droid["episodes"][1], lost)
    (lost / "trajectory.h5").unlink()  # beside a good episode: converting the other would drop it
    with pytest.raises(FileNotFoundError, match=rf"{lost} holds a DROID episode's files but no trajectory"):
        convert(raw, tmp_path / "lost", state_space="cartesian")
    shutil.rmtree(episode)  # the only episode left lacks its trajectory
    with pytest.raises(
        FileNotFoundError, match=rf"move the directory out of {raw} .*\({raw} holds no complete"
    ):
        convert(raw, tmp_path / "lost", state_space="cartesian")
    assert not any((tmp_path / name).exists() for name in ("labelled", "nan", "lost"))


def test_robot_client_speaks_the_served_policys_spaces() -> None:
    from envs.droid.client import run_episode
    from vla_train.serving.server import PolicyServer

    metadata = {"state_dim": 7, "action_dim": 8, "chunk_size": 4, "image_size": 32,
                "state_space": "cartesian", "action_space": "joint_position"}  # fmt: skip
    seen = []

    def policy(inputs):
        seen.extend(inputs)
        return np.full((len(inputs), 4, 8), 2.0, np.float32)

    server = PolicyServer(policy, metadata, host="127.0.0.1", port=0).start()

    class Robot:
        def __init__(self) -> None:
            self.actions = []

        def get_observation(self):
            image = np.zeros((180, 320, 3), np.uint8)
            state = {"cartesian_position": [0.1, 0.2, 0.3, 0.0, 0.0, 0.0], "gripper_position": 0.5}
            return {"image": {"ext": image, "wrist": image}, "robot_state": state}

        def step(self, action):
            self.actions.append(action)

    try:
        client = DroidPolicyClient(server.uri)
        robot = Robot()
        episode = run_episode(
            robot, client, "put the cube in the bowl", "ext", "wrist", max_steps=6, control_hz=1e4
        )
        assert episode.steps == 6 and not episode.stopped_by_operator
        assert len(seen) == 2  # 4-step chunks, open loop: requests at steps 0 and 4
        np.testing.assert_allclose(seen[0]["state"], [0.1, 0.2, 0.3, 0, 0, 0, 0.5])
        np.testing.assert_array_equal(robot.actions[0], [2.0] * 7 + [1.0])  # joint targets: not clipped
        client.close()
    finally:
        server.stop()
