"""openpi's own client (``openpi-client`` 0.1.2 from PyPI) against our server, as a robot laptop runs it.

``openpi-client`` pins numpy<2 and this project needs numpy>=2 (opencv), so the client lives in its
own small virtual environment, built once from the package registry and cached under
``.cache/test-tools/`` (or ``$VLA_TRAIN_TEST_TOOLS``), exactly as a robot laptop installs it. It sends
LIBERO- and DROID-keyed observations to tiny trained policies served by ``scripts/serve.py``'s
``build_server``; the chunks it gets back must equal the policy's own ``predict_action_chunk`` on the
same observation mapped by the env's transform.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from droid_data import write_raw_episode
from helpers import compose_train
from serve import build_server

from envs.droid.convert import convert
from envs.images import resize_with_pad
from vla_train import train
from vla_train.inference import load_policy
from vla_train.serving.wire import pack, unpack
from vla_train.training import build_env_adapter

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
OPENPI_CLIENT = "openpi-client==0.1.2"
#: 0.1.2 imports typing_extensions without declaring it: a robot laptop installs it too
CLIENT_PACKAGES = [OPENPI_CLIENT, "typing_extensions"]


@pytest.fixture(scope="session")
def openpi_python() -> Path:
    """The Python of a virtual environment holding only ``openpi-client`` (built once, then reused)."""
    tools = Path(os.environ.get("VLA_TRAIN_TEST_TOOLS", ROOT / ".cache" / "test-tools"))
    venv = tools / OPENPI_CLIENT.replace("==", "-")
    python, complete = venv / "bin" / "python", venv / ".complete"
    if not complete.exists():
        if venv.exists():  # an interrupted build of ours: start again
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *CLIENT_PACKAGES],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if installed.returncode != 0:
            pytest.skip(
                f"could not install {OPENPI_CLIENT} from the package registry: {installed.stderr[-500:]}"
            )
        complete.write_text("\n".join(CLIENT_PACKAGES) + "\n")
    return python


def run_openpi_client(python: Path, uri: str, observations: list[dict], work: Path) -> tuple[list, dict]:
    """Send ``observations`` with openpi's client; returns its action chunks and its report."""
    work.mkdir(parents=True, exist_ok=True)
    flat = {
        f"{index}|{key}": np.asarray(value)
        for index, obs in enumerate(observations)
        for key, value in obs.items()
    }
    np.savez(work / "observations.npz", **flat)
    ours = {
        "float32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "uint8": np.arange(4, dtype=np.uint8),
    }
    (work / "ours.msgpack").write_bytes(pack(ours))
    done = subprocess.run(
        [
            str(python),
            str(Path(__file__).with_name("openpi_client_run.py")),
            uri,
            str(work / "observations.npz"),
            str(work / "ours.msgpack"),
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((work / "report.json").read_text())
    # our encoding read by openpi's unpackb, and openpi's packb read by ours
    assert report["ours_decoded"] == {
        key: [str(value.dtype), list(value.shape), value.ravel().tolist()] for key, value in ours.items()
    }
    theirs = unpack((work / "theirs.msgpack").read_bytes())
    np.testing.assert_array_equal(theirs["float32"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert theirs["uint8"].dtype == np.uint8 and theirs["int64"].tolist() == [-1, 2**40]
    assert theirs["bool"].tolist() == [True, False] and theirs["scalar"] == 2.5
    assert theirs["prompt"] == "put the bowl on the plate"
    stored = np.load(work / "actions.npz")
    return [stored[f"actions_{index}"] for index in range(len(observations))], report


def own_chunks(run: Path, observations: list[dict]) -> list[np.ndarray]:
    """The policy's own chunks for these observations, mapped by its env's openpi transform."""
    cfg, policy, _ = load_policy(str(run), [], "cpu")
    to_input = build_env_adapter(cfg.env).openpi_inputs()
    chunks = []
    for observation in observations:
        inputs = to_input(observation)
        batch = {
            "images": torch.from_numpy(np.asarray(inputs["images"], np.float32)[None]),
            "state": torch.from_numpy(np.asarray(inputs["state"], np.float32)[None]),
            "instruction": [inputs["instruction"]],
        }
        with torch.no_grad():
            chunks.append(policy.predict_action_chunk(batch)[0].numpy())
    return chunks


def serve_and_compare(python: Path, run: Path, observations: list[dict], work: Path) -> dict:
    server = build_server(str(run), [], "127.0.0.1", 0, device="cpu").start()
    try:
        received, report = run_openpi_client(python, server.uri, observations, work)
    finally:
        server.stop()
    for got, expected in zip(received, own_chunks(run, observations), strict=True):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    return report


def test_openpi_libero_client_gets_the_policys_chunks(
    openpi_python: Path, libero_dataset: Path, tmp_path
) -> None:
    run = tmp_path / "run"
    train(
        compose_train(
            [
                "env=libero_object",
                f"env.dataset.root={libero_dataset}",
                "env.image_size=64",
                "backbone.image_size=64",
                "trainer=tiny",
                "trainer.steps=2",
                "logger=none",
                "evaluate=false",
            ],
            run,
        )
    )
    rng = np.random.default_rng(0)
    observations = [  # as examples/libero/main.py sends them: upright 224² uint8 images, 8-D state
        {
            "observation/image": resize_with_pad(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), 224),
            "observation/wrist_image": resize_with_pad(
                rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), 224
            ),
            "observation/state": rng.normal(size=8),
            "prompt": "pick up the alphabet soup and place it in the basket",
        }
        for _ in range(2)
    ]
    report = serve_and_compare(openpi_python, run, observations, tmp_path / "client")
    assert report["metadata"]["metadata"]["env"] == "libero_object"
    assert report["reply_keys_0"] == ["actions", "server_timing"]
    assert "observation/image" in report["malformed"]  # the server's error, as openpi's client raises it


def test_openpi_droid_client_gets_the_policys_chunks(openpi_python: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for i in range(2):
        write_raw_episode(raw, f"Wed_Nov_25_10:00:0{i}_2026", 10, "put the cube on the plate", True, i)
    assert convert(raw, tmp_path / "dataset") == 2
    run = tmp_path / "run"
    train(
        compose_train(
            [
                "env=droid",
                f"env.dataset.root={tmp_path / 'dataset'}",
                "env.image_size=64",
                "backbone=tiny",
                "backbone.image_size=64",
                "trainer=tiny",
                "trainer.steps=2",
                "logger=none",
            ],
            run,
        )
    )
    rng = np.random.default_rng(1)
    observations = [  # as examples/droid/main.py sends them
        {
            "observation/exterior_image_1_left": resize_with_pad(
                rng.integers(0, 256, (180, 320, 3), dtype=np.uint8), 224
            ),
            "observation/wrist_image_left": resize_with_pad(
                rng.integers(0, 256, (180, 320, 3), dtype=np.uint8), 224
            ),
            "observation/joint_position": rng.normal(size=7),
            "observation/gripper_position": rng.uniform(0, 1, 1),
            "prompt": "put the cube on the plate",
        }
        for _ in range(2)
    ]
    report = serve_and_compare(openpi_python, run, observations, tmp_path / "client")
    assert report["metadata"]["metadata"]["env"] == "droid"
    assert "observation/exterior_image_1_left" in report["malformed"]
