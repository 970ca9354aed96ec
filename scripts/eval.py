"""Evaluate a trained checkpoint on its environment's protocol (resumable, parallel env workers).

    python scripts/eval.py outputs/<run>                             # the run's latest checkpoint
    python scripts/eval.py outputs/<run>/checkpoints/step_0002000 env.eval.num_workers=8
    python scripts/eval.py outputs/<run> env.eval.tasks=[0,1] env.eval.episodes=10 --name quick

Overrides use Hydra's ``key=value`` grammar on the config the run saved. Results go to
``<run>/eval/<name>/episodes.jsonl`` (``<name>``: the checkpoint's, unless ``--name``); running the
same command again continues an interrupted evaluation instead of starting over.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from vla_train.cli import exit_on_error
from vla_train.evaluation import evaluate_policy
from vla_train.inference import load_policy
from vla_train.training import build_env_adapter, configure_caches


def results_name(text: str) -> str:
    """``--name``: one directory name, so that the results stay inside ``<run>/eval``."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain directory name (letters, digits, '.', '_', '-'; no '/')"
        )
    return text


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory (latest checkpoint) or a checkpoint directory")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    parser.add_argument(
        "--name",
        type=results_name,
        help="results subdirectory under <run>/eval (default: the checkpoint's name)",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    configure_caches(Path(os.environ.get("VLA_TRAIN_CACHE", ".cache")))
    cfg, policy, checkpoint = load_policy(args.checkpoint, args.overrides, args.device)
    if cfg.env.eval.episodes < 1:
        raise ValueError(f"env.eval.episodes={cfg.env.eval.episodes}: nothing to evaluate (must be >= 1)")
    output_dir = checkpoint.parent.parent / "eval" / (args.name or checkpoint.name)
    try:
        metrics = evaluate_policy(policy, build_env_adapter(cfg.env), output_dir)
    except KeyboardInterrupt:  # exit_on_error reports it, exit 130
        raise KeyboardInterrupt(
            f"the finished episodes are kept in {output_dir / 'episodes.jsonl'}; the same command continues "
            "the evaluation"
        ) from None
    if not metrics:
        return metrics
    print(
        f"success rate: {metrics['eval/success_rate']:.1%} over {int(metrics['eval/episodes'])} episodes "
        f"({int(metrics['eval/errors'])} errors); results in {output_dir / 'episodes.jsonl'}"
    )
    return metrics


if __name__ == "__main__":
    exit_on_error(main)()  # `error: <message>` and exit 2 for bad input, not a traceback
