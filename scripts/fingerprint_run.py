"""Fingerprint a training run: its loss curve and a hash of its final weights, to compare two code
versions bit for bit (a refactor that claims "no behaviour change" must leave both unchanged).

    python scripts/fingerprint_run.py                         # trains experiment=smoke (CPU, no eval)
    python scripts/fingerprint_run.py --run outputs/my-run    # an existing run directory

The weights hash covers every tensor's name, dtype, shape and bytes, sorted by name, so it does not
depend on how safetensors orders the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
SMOKE = [
    "experiment=smoke",
    "evaluate=false",
    "logger.mode=disabled",
    "trainer.cpu=true",
    "trainer.log_every=1",
]


def weights_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as weights:
        for name in sorted(weights.keys()):
            tensor = weights.get_tensor(name).contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(run_dir: Path) -> dict[str, object]:
    losses = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            losses.append((record["step"], record["train/loss"]))
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*"))
    if not checkpoints:
        raise SystemExit(f"{run_dir}: no checkpoint to fingerprint")
    return {
        "losses": losses,
        "final_checkpoint": checkpoints[-1].name,
        "weights_sha256": weights_hash(checkpoints[-1] / "model.safetensors"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run directory (default: train the smoke run)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for the smoke run")
    args = parser.parse_args()
    if args.run is None:
        with tempfile.TemporaryDirectory() as scratch:
            run_dir = Path(scratch) / "run"
            command = [sys.executable, str(REPO / "train.py"), *SMOKE, f"hydra.run.dir={run_dir}"]
            subprocess.run(
                [*command, *args.overrides],
                check=True,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = fingerprint(run_dir)
    else:
        result = fingerprint(args.run)
    for step, loss in result["losses"]:
        print(f"step {step:>6}  loss {loss!r}")
    curve = hashlib.sha256(repr(result["losses"]).encode()).hexdigest()
    print(f"loss curve sha256 {curve}")
    print(f"final checkpoint {result['final_checkpoint']}  weights sha256 {result['weights_sha256']}")


if __name__ == "__main__":
    main()
