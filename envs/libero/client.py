"""Env client: run LIBERO or LIBERO-Plus episodes here, get actions from a policy server.

LIBERO-Plus installs itself as ``libero``, so it lives in its own Python environment; this module
needs only NumPy, msgpack, websockets, tqdm, rich and imageio there (``pip install --no-deps -e
<vla-train>`` plus those), and reaches the policy served from the training environment:

    # training environment:   python scripts/serve.py outputs/<run>
    # LIBERO-Plus environment:
    python -m envs.libero.client --server ws://127.0.0.1:8765 --output results/plus \\
        --plus --categories Camera Noise --per-category 50 --workers 8

The results file is resumable like every evaluation: re-running the command runs what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from envs.libero.env import (
    PROTOCOL_MAX_STEPS,
    LiberoSettings,
    make_libero_env,
    protocol_episodes,
    suite_tasks,
)
from envs.libero.plus import load_task_list, plus_episodes, select_tasks, table1_row
from envs.libero.transforms import STATE_LAYOUTS
from vla_train.rollout import ResultsFile, run_episodes, summarize, with_state_history
from vla_train.serving.client import RemotePolicy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="ws://127.0.0.1:8765")
    parser.add_argument("--output", required=True, help="directory of episodes.jsonl and videos/")
    parser.add_argument("--suite", default="libero_object", help="LIBERO suite (without --plus)")
    parser.add_argument("--tasks", type=int, nargs="*", help="task indices (default: all)")
    parser.add_argument("--trials", type=int, default=50, help="trials per task (LIBERO)")
    parser.add_argument("--plus", action="store_true", help="LIBERO-Plus: one trial per perturbed task")
    parser.add_argument("--plus-suites", nargs="*", help="LIBERO-Plus suites (default: all four)")
    parser.add_argument("--categories", nargs="*", help="LIBERO-Plus categories, e.g. Camera Noise")
    parser.add_argument("--per-category", type=int, help="stratified sample size per category")
    parser.add_argument("--task-list", help="task_classification.json (default: the installed one)")
    parser.add_argument("--max-steps", type=int, help="override the suite's step limit")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--replan-steps", type=int, default=8)
    parser.add_argument(
        "--state-history", type=int, help="states per policy input (default: the server's state_history)"
    )
    parser.add_argument(
        "--state-layout",
        choices=sorted(STATE_LAYOUTS),
        help="the policy's state (default: the server's state_layout, else dataset)",
    )
    parser.add_argument("--videos", type=int, default=0, help="videos per task (LIBERO) or category (Plus)")
    parser.add_argument("--camera-size", type=int, default=256)
    parser.add_argument("--soft-reset", action="store_true", help="hard_reset=False: faster, not bit-exact")
    parser.add_argument("--assets", default=os.environ.get("LIBERO_ASSETS"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    settings = LiberoSettings(
        camera_size=args.camera_size,
        hard_reset=not args.soft_reset,
        assets_dir=args.assets,
        config_dir=str(Path(args.output) / "libero-config"),
    )
    limits = {suite: args.max_steps or steps for suite, steps in PROTOCOL_MAX_STEPS.items()}
    if args.plus:
        tasks = select_tasks(
            load_task_list(args.task_list), args.plus_suites, args.categories, args.per_category, args.seed
        )
        specs = plus_episodes(tasks, limits, seed=args.seed, videos_per_category=args.videos)
    else:
        tasks = suite_tasks(args.suite, settings)
        if args.tasks:
            tasks = [task for task in tasks if task[0] in set(args.tasks)]
        specs = protocol_episodes(args.suite, tasks, args.trials, args.seed, limits[args.suite], args.videos)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    protocol = {key: value for key, value in vars(args).items() if key != "server"}
    (output / "protocol.json").write_text(json.dumps({**protocol, "max_steps_by_suite": limits}, indent=2))
    with RemotePolicy(args.server) as policy:
        history = args.state_history or int(policy.metadata.get("state_history", 1))
        layout = args.state_layout or str(policy.metadata.get("state_layout", "dataset"))
        factory = functools.partial(make_libero_env, dataclasses.replace(settings, state_layout=layout))
        if history > 1:
            factory = functools.partial(with_state_history, factory, history)
        records = run_episodes(
            specs,
            factory,
            policy,
            ResultsFile(output / "episodes.jsonl"),
            num_workers=args.workers,
            replan_steps=args.replan_steps,
            video_dir=output / "videos",
        )
    summary = summarize(records)
    console = Console()
    console.print(
        summary.table(f"{'LIBERO-Plus' if args.plus else args.suite} → {output / 'episodes.jsonl'}")
    )
    if args.plus:
        row = table1_row(records)
        table = Table(title="Table 1 layout (success rate)")
        for column in row:
            table.add_column(column, justify="right")
        table.add_row(*("—" if value is None else f"{value:.1%}" for value in row.values()))
        console.print(table)
    if records and summary.overall.errors == len(records):
        raise SystemExit(
            f"every episode ended in an error (the first: {records[0]['error']}); see "
            f"{output / 'episodes.jsonl'}: there is no success rate to report"
        )
    return summary.metrics()


if __name__ == "__main__":
    main()
