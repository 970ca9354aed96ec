"""Episodes per minute of the LIBERO evaluator with 1, 2, … env workers, as speed-ups over 1 worker.

Every setting runs the same episodes (the first ``--trials`` initial states of ``--tasks``) with the
same tiny random-weight policy (``backbone=tiny``, ``head=l1``) for exactly ``--max-steps`` steps
(a random policy never succeeds, so every episode has the same length); wall time includes starting
the workers and building the environments, as in a real evaluation. Only ratios measured in this
one run are meaningful (these machines are noisy).

    python scripts/bench_eval.py                        # 1 and 2 workers, ~2 minutes on 2 cores
    python scripts/bench_eval.py --workers 1 4 8 16     # a bigger machine
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from policies.vla_policy import VLAPolicy
from vla_train.cli import exit_on_error
from vla_train.config import register_configs
from vla_train.evaluation import local_policy_fn
from vla_train.rollout import ResultsFile, run_episodes
from vla_train.training import build_env_adapter

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--camera-size", type=int, default=128)
    parser.add_argument("--hard-reset", action="store_true", help="LIBERO's default reset (slower)")
    parser.add_argument(
        "--assets", default=os.environ.get("LIBERO_ASSETS", str(REPO.parent / "shared" / "libero-assets"))
    )
    args = parser.parse_args()

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        cfg = compose(
            config_name="train",
            overrides=[
                f"env={args.suite}",
                f"env.simulator.assets_dir={args.assets}",
                f"env.simulator.camera_size={args.camera_size}",
                f"env.simulator.hard_reset={args.hard_reset}",
                f"env.eval.tasks=[{','.join(map(str, args.tasks))}]",
                f"env.eval.episodes={args.trials}",
                f"env.eval.max_steps={args.max_steps}",
                "env.eval.videos=0",
                "backbone=tiny",
                f"backbone.image_size={args.camera_size}",
                "backbone.patch_size=16",
                "head=l1",
            ],
        )
    adapter = build_env_adapter(cfg.env)
    specs = adapter.evaluation_episodes()
    torch.manual_seed(0)
    policy = VLAPolicy(
        instantiate(cfg.backbone),
        instantiate(cfg.head),
        action_dim=cfg.env.action_dim,
        state_dim=cfg.env.state_dim,
        chunk_size=cfg.env.chunk_size,
    ).eval()
    policy_fn = local_policy_fn(policy)

    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            records = run_episodes(
                specs,
                adapter.env_factory(),
                policy_fn,
                ResultsFile(Path(scratch) / "episodes.jsonl"),
                num_workers=workers,
                replan_steps=cfg.env.n_action_steps,
                progress=False,
            )
            seconds = time.perf_counter() - start
        errors = sum(r["error"] is not None for r in records)
        rows.append((workers, len(records), errors, seconds, 60 * len(records) / seconds))
        print(f"{workers} worker(s): {len(records)} episodes in {seconds:.1f} s", flush=True)

    table = Table(
        title=f"{args.suite}: {len(specs)} episodes × {args.max_steps} steps, cameras {args.camera_size} px, "
        f"{os.cpu_count()} CPUs"
    )
    for column in ("workers", "episodes", "errors", "seconds", "episodes / min", "speed-up"):
        table.add_column(column, justify="right")
    base = rows[0][4]
    for workers, episodes, errors, seconds, rate in rows:
        table.add_row(
            str(workers), str(episodes), str(errors), f"{seconds:.1f}", f"{rate:.1f}", f"{rate / base:.2f}×"
        )
    Console().print(table)


if __name__ == "__main__":
    exit_on_error(main)()  # a --suite Hydra cannot compose: one `error:` line, exit 2
