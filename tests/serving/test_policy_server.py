"""The policy server: safe wire format, loopback binding, errors answered, actions equal the policy's."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from policies.backbones.tiny import TinyBackbone
from policies.heads.l1 import L1RegressionHead
from policies.vla_policy import VLAPolicy
from vla_train.evaluation import local_policy_fn
from vla_train.serving.client import PolicyServerError, RemotePolicy
from vla_train.serving.server import PolicyServer
from vla_train.serving.wire import WireError, pack, unpack

METADATA = {"state_dim": 8, "action_dim": 7, "chunk_size": 4, "cameras": ["front", "wrist"], "image_size": 32}


def observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.random((2, 3, 32, 32), dtype=np.float32),
        "state": rng.normal(size=8).astype(np.float32),
        "instruction": "put the bowl on the plate",
    }


def test_wire_round_trips_arrays_and_refuses_objects() -> None:
    message = {
        "a": np.arange(6, dtype=np.int16).reshape(2, 3),
        "b": [np.float64(2.5), "text", None],
        "c": True,
    }
    message["d"] = np.ones((2, 0, 3), np.float32)
    decoded = unpack(pack(message))
    assert decoded["a"].dtype == np.int16 and np.array_equal(decoded["a"], message["a"])
    assert decoded["b"] == [2.5, "text", None] and decoded["d"].shape == (2, 0, 3)
    for unsendable in (np.array([object()]), np.zeros(2, np.complex64), np.complex64(1j)):
        with pytest.raises(WireError, match="numeric, boolean and string"):
            pack({"x": unsendable})
    with pytest.raises(WireError):
        unpack(b"\xc1 definitely not msgpack")
    for dtype in ("|O", "|V8", "<c8"):  # forged: what openpi's packer would never send
        forged = pack({b"__ndarray__": True, b"dtype": dtype, b"shape": [1], b"data": b"\x00" * 8})
        with pytest.raises(WireError, match="refusing"):
            unpack(forged)
    negative = pack({b"__ndarray__": True, b"dtype": "<f4", b"shape": [2, -1], b"data": b"\x00" * 16})
    with pytest.raises(WireError, match="negative dimension"):  # numpy would infer it
        unpack(negative)
    with pytest.raises(WireError, match="malformed"):
        unpack(pack({b"__ndarray__": True, b"dtype": "<f4", b"shape": [3], b"data": b"\x00" * 8}))


@pytest.fixture
def echo_server():
    """A server whose policy returns the state's first value everywhere (and fails on instruction 'boom')."""

    def policy(inputs):
        if any(i["instruction"] == "boom" for i in inputs):
            raise RuntimeError("policy exploded")
        # 0 · Σ state² is 0 for a sane state and NaN once the square overflows, as a real network's would
        with np.errstate(over="ignore", invalid="ignore"):
            return np.stack(
                [np.full((4, 7), i["state"][0] + 0 * np.square(i["state"]).sum()) for i in inputs]
            )

    server = PolicyServer(policy, METADATA, port=0).start()
    yield server
    server.stop()


def test_server_binds_loopback_and_answers_batches(echo_server: PolicyServer) -> None:
    assert echo_server.host == "127.0.0.1"
    with RemotePolicy(echo_server.uri) as policy:
        assert policy.metadata == METADATA
        actions = policy([observation(0), observation(1)])
        assert actions.shape == (2, 4, 7) and actions.dtype == np.float32
        assert actions[1, 0, 0] == observation(1)["state"][0]


def test_malformed_requests_get_errors_and_the_connection_survives(echo_server: PolicyServer) -> None:
    with connect(echo_server.uri) as raw:
        unpack(raw.recv())  # metadata
        for bad in (b"garbage", pack({"inputs": []}), pack({"inputs": [{"images": np.zeros(3)}]})):
            raw.send(bad)
            assert "error" in unpack(raw.recv())
        raw.send("a text frame")
        assert "binary" in unpack(raw.recv())["error"]
        wrong_state = {**observation(), "state": np.zeros(5, np.float32)}
        raw.send(pack({"inputs": [wrong_state]}))
        assert "state" in unpack(raw.recv())["error"]
        bad_inputs = {
            "3 cameras": {**observation(), "images": np.zeros((3, 3, 32, 32), np.float32)},
            "1 cameras": {**observation(), "images": np.zeros((1, 3, 32, 32), np.float32)},
            "dtype uint8": {**observation(), "images": np.zeros((2, 3, 32, 32), np.uint8)},
            "dtype bool": {**observation(), "images": np.zeros((2, 3, 32, 32), bool)},
            "[0, 1]": {**observation(), "images": np.full((2, 3, 32, 32), np.nan, np.float32)},
            "finite real": {**observation(), "state": np.full(8, np.inf, np.float32)},
            "images is empty": {**observation(), "images": np.zeros((2, 3, 0, 0), np.float32)},
            "images are 64x48; this policy takes 32x32": {
                **observation(),
                "images": np.zeros((2, 3, 64, 48), np.float32),
            },
        }
        for expected, bad_input in bad_inputs.items():
            raw.send(pack({"inputs": [bad_input]}))
            assert expected in unpack(raw.recv())["error"], expected
        huge = {**observation(), "state": np.full(8, 1e30, np.float32)}  # finite, but the policy overflows
        raw.send(pack({"inputs": [huge]}))
        assert "non-finite actions" in unpack(raw.recv())["error"]
        raw.send(pack({"inputs": [observation()]}))
        assert unpack(raw.recv())["actions"].shape == (1, 4, 7)
    with RemotePolicy(echo_server.uri) as policy, pytest.raises(PolicyServerError, match="exploded"):
        policy([{**observation(), "instruction": "boom"}])


def test_a_bad_request_is_logged_in_one_line_and_a_policy_failure_with_its_traceback(
    echo_server: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's mistake is the client's to fix: the server logs one line for it; a failure of the
    policy on a validated request is the server's, logged with its traceback."""
    caplog.set_level(logging.WARNING, logger="vla_train.serving.server")
    with RemotePolicy(echo_server.uri) as policy:
        with pytest.raises(PolicyServerError, match=r"inputs\[0\]\.images is empty.*\(cameras, 3, 32, 32\)"):
            policy([{**observation(), "images": np.zeros((2, 3, 0, 0), np.float32)}])
        with pytest.raises(PolicyServerError, match="exploded"):
            policy([{**observation(), "instruction": "boom"}])
    refused = [r for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(refused) == 1 and refused[0].exc_info is None and "images is empty" in refused[0].getMessage()
    failed = [r for r in caplog.records if "policy failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


def test_served_actions_equal_the_policys_own() -> None:
    torch.manual_seed(0)
    model = VLAPolicy(
        TinyBackbone(image_size=32, patch_size=8),
        functools.partial(L1RegressionHead, num_queries=4, heads=4),
        action_dim=7,
        state_dim=8,
        chunk_size=4,
    ).eval()
    server = PolicyServer(local_policy_fn(model), METADATA, port=0).start()
    try:
        inputs = [observation(0), observation(1)]
        with RemotePolicy(server.uri) as policy:
            served = policy(inputs)
    finally:
        server.stop()
    batch = {
        "images": torch.from_numpy(np.stack([i["images"] for i in inputs])),
        "state": torch.from_numpy(np.stack([i["state"] for i in inputs])),
        "instruction": [i["instruction"] for i in inputs],
    }
    np.testing.assert_array_equal(served, model.predict_action_chunk(batch).numpy())


def test_a_state_history_policy_takes_the_recent_states_and_refuses_one() -> None:
    from vla_train.serving.server import _validated_inputs

    metadata = {**METADATA, "state_history": 3}
    recent = {**observation(), "state": np.zeros((3, 8), np.float32)}
    assert _validated_inputs({"inputs": [recent]}, metadata)[0]["state"].shape == (3, 8)
    for wrong in (np.zeros(8, np.float32), np.zeros((2, 8), np.float32), np.zeros((3, 7), np.float32)):
        with pytest.raises(ValueError, match=r"\(3, 8\) array \(the last states, the current one last\)"):
            _validated_inputs({"inputs": [{**observation(), "state": wrong}]}, metadata)
