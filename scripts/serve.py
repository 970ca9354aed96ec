"""Serve a trained checkpoint to env clients or a robot over a websocket (127.0.0.1 by default).

    python scripts/serve.py outputs/<run>                      # latest checkpoint, ws://127.0.0.1:8765
    python scripts/serve.py outputs/<run> --port 9000 backbone.attn_implementation=sdpa
    python scripts/serve.py outputs/<run> --host 0.0.0.0      # reachable from a robot laptop

Clients: ``envs/libero/client.py`` (LIBERO / LIBERO-Plus evaluation from another Python
environment), ``envs/droid/client.py``, any program using ``vla_train.serving.client.RemotePolicy``,
and openpi's own clients (``openpi_client.WebsocketClientPolicy``: its DROID and LIBERO examples) on
the same port, for LIBERO and DROID policies. Requests that arrive together are answered by one
forward pass (``--batch-wait-ms``).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from vla_train.cli import exit_on_error
from vla_train.evaluation import local_policy_fn
from vla_train.inference import load_policy
from vla_train.serving.server import DEFAULT_HOST, DEFAULT_PORT, PolicyServer
from vla_train.training import build_env_adapter, configure_caches


def build_server(
    checkpoint: str,
    overrides: list[str],
    host: str,
    port: int,
    device: str = "auto",
    seed: int | None = None,
    batch_wait_ms: float = 5.0,
    max_batch: int = 64,
) -> PolicyServer:
    """The checkpoint's policy behind a :class:`PolicyServer`. With ``seed`` every request is run on
    its own (the same observation gets the same actions only if its sampling noise does not depend on
    what else is in the batch)."""
    cfg, policy, path = load_policy(checkpoint, overrides, device)
    metadata = {
        "checkpoint": str(path),
        "env": cfg.env.name,
        "cameras": list(cfg.env.cameras),
        "image_size": int(cfg.env.image_size),
        "state_dim": int(cfg.env.state_dim),
        "state_history": int(cfg.env.get("state_history", 1)),  # states per input, current last
        "action_dim": int(cfg.env.action_dim),
        "chunk_size": int(cfg.env.chunk_size),
    }
    for key in ("state_space", "action_space", "state_layout"):  # what the policy speaks (DROID, LIBERO)
        if key in cfg.env:
            metadata[key] = str(cfg.env[key])
    return PolicyServer(
        local_policy_fn(policy, seed),
        metadata,
        host=host,
        port=port,
        openpi_inputs=build_env_adapter(cfg.env).openpi_inputs(),
        batch_wait_s=0.0 if seed is not None else batch_wait_ms / 1e3,
        max_batch=max_batch,
    )


def port_number(text: str) -> int:
    """``--port``: a TCP port, refused by argparse with the value when it is not one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory (latest checkpoint) or a checkpoint directory")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: loopback only)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="0: any free port")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--seed", type=int, help="same observation → same actions (seeds each request's sampling noise)"
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to share its forward pass (0: none)",
    )
    parser.add_argument("--max-batch", type=int, default=64, help="most inputs in one forward pass")
    args = parser.parse_args()
    if not 0 <= args.batch_wait_ms < math.inf or args.max_batch < 1:
        parser.error(
            f"--batch-wait-ms must be >= 0 and --max-batch >= 1, got {args.batch_wait_ms}, {args.max_batch}"
        )
    configure_caches(Path(os.environ.get("VLA_TRAIN_CACHE", ".cache")))
    server = build_server(
        args.checkpoint,
        args.overrides,
        args.host,
        args.port,
        args.device,
        args.seed,
        args.batch_wait_ms,
        args.max_batch,
    )
    print(
        f"serving {server.metadata['checkpoint']} on ws://{args.host}:{args.port} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    except OSError as error:  # the address: in use, or not this machine's
        raise OSError(
            f"cannot serve on --host {args.host} --port {args.port}: {error.strerror or error}"
        ) from None


if __name__ == "__main__":
    exit_on_error(main)()  # `error: <message>` and exit 2 for bad input, not a traceback
