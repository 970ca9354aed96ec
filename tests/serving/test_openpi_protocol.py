"""openpi's protocol on our server: observations in each env's openpi keys, errors as openpi sends them,
control messages, /healthz, and requests of several connections batched into one forward pass.

The real ``openpi-client`` talks to the server in ``test_openpi_client.py``; here the same frames are
sent by hand (our packer writes arrays exactly as openpi's does)."""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from envs.droid.transforms import openpi_policy_input, policy_input
from envs.libero.transforms import LiberoTransforms, upright
from vla_train.serving.client import RemotePolicy
from vla_train.serving.server import PolicyServer
from vla_train.serving.wire import pack, unpack

METADATA = {"env": "libero_object", "state_dim": 8, "action_dim": 7, "chunk_size": 4,
            "cameras": ["image", "image2"], "image_size": 32}  # fmt: skip


def libero_observation(seed: int = 0, size: int = 32) -> dict:
    """What openpi's ``examples/libero/main.py`` sends: upright HWC uint8 images, 8-D state, prompt."""
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8),  # float64, as LIBERO's observations are
        "prompt": "pick up the alphabet soup and place it in the basket",
    }


def test_libero_openpi_observation_equals_the_live_simulator_input() -> None:
    transforms = LiberoTransforms(("image", "image2"))
    rng = np.random.default_rng(0)
    simulator = {  # a raw LIBERO observation: upside-down renders, pose and gripper
        "agentview_image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "robot0_eef_pos": rng.normal(size=3),
        "robot0_eef_quat": np.array([0.0, 0.0, 0.6, 0.8]),
        "robot0_gripper_qpos": rng.normal(size=2),
    }
    live = transforms.live_inputs(simulator, "lift")
    openpi_client_sends = {  # openpi's client rotates the renders upright and sends the state it builds
        "observation/image": upright(simulator["agentview_image"]),
        "observation/wrist_image": upright(simulator["robot0_eye_in_hand_image"]),
        "observation/state": live["state"].astype(np.float64),
        "prompt": "lift",
    }
    mapped = transforms.openpi_inputs(openpi_client_sends, image_size=32)
    np.testing.assert_array_equal(mapped["images"], live["images"])
    np.testing.assert_array_equal(mapped["state"], live["state"])
    assert mapped["instruction"] == "lift" and mapped["state"].dtype == np.float32
    resized = transforms.openpi_inputs(openpi_client_sends, image_size=64)  # to the training data's size
    assert resized["images"].shape == (2, 3, 64, 64)


def test_droid_openpi_observation_goes_through_the_training_transform() -> None:
    rng = np.random.default_rng(1)
    exterior = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    joints, gripper = rng.normal(size=7), np.array([0.3])
    sent = {
        "observation/exterior_image_1_left": exterior,
        "observation/wrist_image_left": wrist,
        "observation/joint_position": joints,
        "observation/gripper_position": gripper,
        "prompt": "put the cube on the plate",
    }
    mapped = openpi_policy_input(sent, 64)
    expected = policy_input(exterior, wrist, joints, gripper, "put the cube on the plate", 64)
    np.testing.assert_array_equal(mapped["images"], expected["images"])
    np.testing.assert_array_equal(mapped["state"], expected["state"])
    with pytest.raises(ValueError, match=r"env\.state_space=cartesian"):
        openpi_policy_input(sent, 64, state_space="cartesian")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"observation/image": None}, r"no 'observation/image'.*reads \['observation/image'"),
        (
            {"observation/wrist_image": np.zeros((32, 32, 3), np.float32)},
            r"wrist_image must be an \(H, W, 3\) uint8",
        ),
        ({"observation/image": np.zeros((32, 32), np.uint8)}, r"observation/image must be an \(H, W, 3\)"),
        ({"observation/state": np.zeros(7)}, r"observation/state must be 8 real number"),
        ({"observation/state": "up"}, r"observation/state must be 8 real number"),
        ({"prompt": 3}, "prompt must be a string"),
    ],
)
def test_malformed_openpi_observations_are_named(change: dict, message: str) -> None:
    observation = {**libero_observation(), **change}
    observation = {key: value for key, value in observation.items() if value is not None}
    with pytest.raises((KeyError, ValueError), match=message):
        LiberoTransforms().openpi_inputs(observation, image_size=32)


def echo_policy(inputs: list[dict]) -> np.ndarray:
    """Every action of input i is its state's first value (so replies show whose they are)."""
    return np.stack([np.full((4, 7), i["state"][0], np.float32) for i in inputs])


@pytest.fixture
def openpi_server():
    transforms = LiberoTransforms(("image", "image2"))
    server = PolicyServer(
        echo_policy, METADATA, port=0, openpi_inputs=lambda o: transforms.openpi_inputs(o, image_size=32)
    ).start()
    yield server
    server.stop()


def test_openpi_requests_get_one_chunk_control_acks_and_errors_as_openpi_sends_them(
    openpi_server: PolicyServer,
) -> None:
    observation = libero_observation()
    with connect(openpi_server.uri) as client:
        assert unpack(client.recv())["metadata"] == METADATA  # sent on connect, as openpi's server does
        client.send(pack({"__ctrl__": "episode_start", "__experiment__": "x", "__task__": "t"}))
        assert unpack(client.recv()) == {"__ack__": "episode_start"}
        client.send(pack(observation))
        reply = unpack(client.recv())
        assert reply["actions"].shape == (4, 7) and reply["actions"].dtype == np.float32
        np.testing.assert_allclose(reply["actions"], np.float32(observation["observation/state"][0]))
        assert reply["server_timing"]["infer_ms"] >= 0
        client.send(pack({**observation, "observation/state": np.full(8, np.nan)}))
        error = client.recv()
        assert isinstance(error, str) and "state must be finite" in error, error
        with pytest.raises(ConnectionClosed):  # then the server closes, as openpi's does
            client.recv()
    with connect(openpi_server.uri) as client:  # the server is still up
        client.recv()
        client.send(pack({key: v for key, v in observation.items() if key != "prompt"}))
        assert "'prompt'" in client.recv()
    with urllib.request.urlopen(f"http://127.0.0.1:{openpi_server.port}/healthz", timeout=10) as health:
        assert health.status == 200 and health.read() == b"OK\n"


def test_a_policy_without_an_openpi_layout_says_so() -> None:
    server = PolicyServer(echo_policy, {**METADATA, "env": "robosuite_lift"}, port=0).start()
    try:
        with connect(server.uri) as client:
            client.recv()
            client.send(pack(libero_observation()))
            assert "env=robosuite_lift has no openpi observation layout" in client.recv()
    finally:
        server.stop()


def test_requests_from_several_connections_share_forward_passes() -> None:
    calls = []

    def slow_policy(inputs: list[dict]) -> np.ndarray:
        calls.append(len(inputs))
        time.sleep(0.05)  # a forward pass: requests arriving meanwhile wait for the next one
        return echo_policy(inputs)

    server = PolicyServer(slow_policy, METADATA, port=0, batch_wait_s=0.02).start()
    rng = np.random.default_rng(0)
    requests = [
        [
            {
                "images": rng.random((2, 3, 32, 32), dtype=np.float32),
                "state": np.full(8, 10 * client + k, np.float32),
                "instruction": "lift",
            }
            for k in range(1 + client % 2)  # single inputs and the evaluator's batches of two
        ]
        for client in range(8)
    ]
    answers: dict[int, np.ndarray] = {}
    try:
        clients = [RemotePolicy(server.uri) for _ in requests]
        barrier = threading.Barrier(len(clients))

        def ask(number: int) -> None:
            barrier.wait()
            answers[number] = clients[number](requests[number])

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(clients))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for client in clients:
            client.close()
    finally:
        server.stop()
    for number, inputs in enumerate(requests):  # each got its own rows, its batch kept whole
        assert answers[number].shape == (len(inputs), 4, 7)
        np.testing.assert_array_equal(answers[number][:, 0, 0], [i["state"][0] for i in inputs])
    assert sum(calls) == sum(len(r) for r in requests)
    assert len(calls) < len(requests), calls  # fewer forward passes than requests
    assert server.batcher.requests_served == len(requests)


def test_a_failing_request_does_not_fail_the_requests_batched_with_it() -> None:
    from vla_train.serving.batching import RequestBatcher

    def policy(inputs: list[dict]) -> np.ndarray:
        if any(i["instruction"] == "boom" for i in inputs):
            raise RuntimeError("policy exploded")
        time.sleep(0.02)
        return echo_policy(inputs)

    batcher = RequestBatcher(policy, max_wait_s=0.05)
    good = {"state": np.ones(8, np.float32), "instruction": "lift"}
    results: dict[str, object] = {}

    def ask(name: str, item: dict) -> None:
        try:
            results[name] = batcher.submit([item])
        except RuntimeError as error:
            results[name] = error

    threads = [
        threading.Thread(target=ask, args=("good", good)),
        threading.Thread(target=ask, args=("bad", {**good, "instruction": "boom"})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(results["bad"], RuntimeError)
    assert isinstance(results["good"], np.ndarray) and results["good"].shape == (1, 4, 7)
