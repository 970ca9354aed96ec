"""Run by ``test_openpi_client.py`` with the Python of a separate environment holding only PyPI's
``openpi-client`` (it pins numpy<2): what a robot laptop runs. It must not import this project.

    python openpi_client_run.py <uri> <observations.npz> <ours.msgpack> <out dir>

Observations are stored flat as ``<index>|<openpi key>``; each is sent with
``WebsocketClientPolicy.infer`` and its ``actions`` saved as ``actions_<index>``. Then the wire format
is checked both ways (a message we packed decoded by openpi's ``unpackb``; one packed by openpi's
``packb`` written for us to decode), and a malformed observation's error is recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def observations(path: Path) -> list[dict]:
    stored = np.load(path, allow_pickle=False)
    by_index: dict[int, dict] = {}
    for name in stored.files:
        index, key = name.split("|", 1)
        value = stored[name]
        by_index.setdefault(int(index), {})[key] = str(value) if value.dtype.kind == "U" else value
    return [by_index[i] for i in sorted(by_index)]


def main(uri: str, observations_path: str, ours_path: str, out: str) -> None:
    out_dir = Path(out)
    client = WebsocketClientPolicy(host=uri)
    report: dict = {"metadata": client.get_server_metadata()}
    actions = {}
    for index, observation in enumerate(observations(Path(observations_path))):
        reply = client.infer(observation)
        actions[f"actions_{index}"] = reply["actions"]
        report[f"reply_keys_{index}"] = sorted(reply)
    np.savez(out_dir / "actions.npz", **actions)
    ours = msgpack_numpy.unpackb(Path(ours_path).read_bytes())
    report["ours_decoded"] = {key: [str(value.dtype), list(value.shape), value.ravel().tolist()]
                              for key, value in ours.items()}  # fmt: skip
    theirs = {
        "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "uint8": np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
        "int64": np.array([-1, 2**40]),
        "bool": np.array([True, False]),
        "scalar": np.float64(2.5),
        "prompt": "put the bowl on the plate",
    }
    (out_dir / "theirs.msgpack").write_bytes(msgpack_numpy.packb(theirs))
    try:
        client.infer({"prompt": "no cameras"})
        report["malformed"] = "no error"
    except RuntimeError as error:
        report["malformed"] = str(error)
    (out_dir / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
