"""Policy-server throughput and latency with 1, 4 and 16 concurrent clients, batching across them on and off.

Each client is a websocket connection sending openpi-keyed LIBERO observations (as openpi's
``examples/libero/main.py`` does: two 224² uint8 images, an 8-D state, a prompt) one after another;
the server maps them through the LIBERO transform and runs the policy (random weights, ``backbone`` and
``head`` options as ``train.py`` builds them; the tiny ones by default). With batching, requests that
arrive while a forward pass runs share the next one (``scripts/serve.py --batch-wait-ms``); without,
each request is a forward pass of its own. Only ratios measured in this one run mean anything on a
shared machine.

    python scripts/bench_serve.py                                   # tiny policy, 1 / 4 / 16 clients
    python scripts/bench_serve.py --backbone prismatic_qwen25 --head l1 --requests 10   # a GPU
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch
from bench_step import build
from rich.console import Console
from rich.table import Table
from websockets.sync.client import connect

from envs.images import resize_with_pad
from envs.libero.transforms import LiberoTransforms
from vla_train.evaluation import local_policy_fn
from vla_train.options import options
from vla_train.serving.server import PolicyServer
from vla_train.serving.wire import pack, unpack


def observation(rng: np.random.Generator) -> dict:
    return {
        "observation/image": resize_with_pad(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), 224),
        "observation/wrist_image": resize_with_pad(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), 224),
        "observation/state": rng.normal(size=8),
        "prompt": "put the black bowl on the plate",
    }


def measure(server: PolicyServer, clients: int, requests: int) -> dict[str, float]:
    """Every client sends ``requests`` observations back to back; latencies of all, wall time of all."""
    latencies: list[float] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)
    served_before, passes_before = server.batcher.requests_served, server.batcher.forward_passes

    def client(number: int) -> None:
        rng = np.random.default_rng(number)
        messages = [pack(observation(rng)) for _ in range(requests)]
        with connect(server.uri, max_size=None, compression=None) as connection:
            connection.recv()  # metadata
            connection.send(messages[0])  # warm-up, not timed
            unpack(connection.recv())
            barrier.wait()
            for message in messages:
                start = time.perf_counter()
                connection.send(message)
                reply = unpack(connection.recv())
                elapsed = time.perf_counter() - start
                if not isinstance(reply, dict) or "actions" not in reply:
                    raise RuntimeError(f"the server answered {reply!r}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    served = server.batcher.requests_served - served_before
    passes = server.batcher.forward_passes - passes_before
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_s": len(latencies) / wall,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * quantiles[98],
        "requests_per_forward": served / max(passes, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny", choices=options("backbone"))
    parser.add_argument("--head", default="l1", choices=options("head"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=30, help="per client")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    policy = build(args.backbone, args.head, 8, torch.device(args.device)).eval()
    transforms = LiberoTransforms(("image", "image2"))
    size = policy.backbone.image_size
    metadata = {"env": "libero_object", "state_dim": 8, "action_dim": 7, "chunk_size": 8,
                "cameras": ["image", "image2"], "image_size": size}  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    table = Table(
        title=f"{args.backbone} + {args.head} on {args.device}: {args.requests} requests per client"
    )
    for column in ("clients", "batching", "requests/s", "p50 ms", "p99 ms", "requests per forward"):
        table.add_column(column, justify="right")
    for wait_ms in (0.0, args.batch_wait_ms):
        server = PolicyServer(
            local_policy_fn(policy),
            metadata,
            port=0,
            openpi_inputs=lambda o: transforms.openpi_inputs(o, image_size=size),
            batch_wait_s=wait_ms / 1e3,
        ).start()
        try:
            for clients in args.clients:
                result = measure(server, clients, args.requests)
                label = "off" if wait_ms == 0 else f"{wait_ms:g} ms"
                results[f"{clients} clients, batching {label}"] = result
                table.add_row(
                    str(clients),
                    label,
                    f"{result['requests_per_s']:.1f}",
                    f"{result['p50_ms']:.1f}",
                    f"{result['p99_ms']:.1f}",
                    f"{result['requests_per_forward']:.1f}",
                )
        finally:
            server.stop()
    Console().print(table)
    for clients in args.clients:
        off = results[f"{clients} clients, batching off"]["requests_per_s"]
        on = results[f"{clients} clients, batching {args.batch_wait_ms:g} ms"]["requests_per_s"]
        print(f"{clients} clients: batching serves {on / off:.2f}× the requests per second")
    return results


if __name__ == "__main__":
    main()
