"""Closed-loop evaluation of a policy on its environment's protocol, in parallel env workers.

Episodes come from the env adapter (:meth:`envs.base.EnvAdapter.evaluation_episodes`), run in
``eval.num_workers`` worker processes with one batched policy call per decision step
(:mod:`vla_train.rollout`), and are appended to ``episodes.jsonl`` as they finish: re-running an
interrupted evaluation into the same directory runs only the episodes that are missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console

from envs.base import EnvAdapter
from policies.vla_policy import VLAPolicy
from vla_train.rollout import ResultsFile, run_episodes, summarize
from vla_train.rollout.evaluator import PolicyFn

log = logging.getLogger(__name__)


def local_policy_fn(policy: VLAPolicy, seed: int | None = None) -> PolicyFn:
    """Batch of NumPy policy inputs → action chunks, one forward pass on the policy's device.

    ``seed``: sample every call's noise (flow-matching heads) from a generator seeded with it, so the
    same inputs always get the same actions (debugging a deployment); None draws fresh noise.
    """
    device = next(policy.parameters()).device

    @torch.no_grad()
    def act(inputs: list[dict[str, Any]]) -> np.ndarray:
        batch = {
            "images": torch.from_numpy(np.stack([i["images"] for i in inputs])).to(device),
            "state": torch.from_numpy(np.stack([i["state"] for i in inputs])).to(device),
            "instruction": [i["instruction"] for i in inputs],
        }
        # as in training: bf16 backbones feed fp32 heads under autocast on GPUs
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            generator = None if seed is None else torch.Generator(device).manual_seed(seed)
            chunks = policy.predict_action_chunk(batch, generator)
        return chunks.float().cpu().numpy()

    return act


class EvaluationFailed(RuntimeError):
    """Every episode of an evaluation ended in an error: there is no success rate to report."""


#: what an evaluation writes into its directory (a rerun continues from episodes.jsonl)
RESULTS_FILES = frozenset({"episodes.jsonl", "protocol.yaml", "videos"})


def check_results_directory(output_dir: Path) -> None:
    """An existing results directory is continued only if it holds nothing but an evaluation's files:
    a directory of the user's is refused, never written into."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir}: results go to a directory, and this is a file")
    foreign = sorted(entry.name for entry in output_dir.iterdir() if entry.name not in RESULTS_FILES)
    if foreign:
        raise FileExistsError(
            f"{output_dir} holds files no evaluation wrote ({', '.join(foreign[:3])}); results are not "
            "written there: choose another name (scripts/eval.py --name)"
        )


def evaluate_policy(
    policy: VLAPolicy, adapter: EnvAdapter, output_dir: Path, fail_if_all_errored: bool = True
) -> dict[str, float]:
    """Run the adapter's evaluation protocol; returns success statistics (overall and per group).

    When every episode errored (a misspelled camera or task, a broken simulator) there is no success
    rate: :class:`EvaluationFailed` is raised, or with ``fail_if_all_errored=False`` (evaluations in the
    middle of training, which should not end the run) it is logged and the counts are returned.
    """
    specs = adapter.evaluation_episodes()
    if not specs:  # a real robot (DROID): evaluated through the policy server instead
        print(f"env={adapter.cfg.name} has no simulated evaluation; serve the policy (scripts/serve.py)")
        return {}
    output_dir = Path(output_dir)
    check_results_directory(output_dir)
    results = ResultsFile(output_dir / "episodes.jsonl")
    results.check_same_protocol(specs)  # before protocol.yaml is rewritten
    evaluation = adapter.cfg.eval
    # the protocol every number below was measured with, beside the results
    protocol = OmegaConf.masked_copy(adapter.cfg, ["name", "n_action_steps", "eval", "simulator"])
    (output_dir / "protocol.yaml").write_text(OmegaConf.to_yaml(protocol, resolve=True))
    was_training = policy.training
    policy.eval()
    try:
        records = run_episodes(
            specs,
            adapter.env_factory(),
            local_policy_fn(policy),
            results,
            num_workers=evaluation.num_workers,
            replan_steps=adapter.cfg.n_action_steps,
            video_dir=output_dir / "videos",
        )
    finally:
        policy.train(was_training)
    summary = summarize(records)
    console = Console()
    console.print(summary.table("evaluation"))
    console.print(f"episodes: {output_dir / 'episodes.jsonl'}; protocol: {output_dir / 'protocol.yaml'}")
    if records and summary.overall.errors == summary.overall.episodes:
        first = next(r["error"] for r in records if r.get("error") is not None)
        message = (
            f"all {len(records)} evaluation episodes ended in an error, e.g. {first!r}; nothing measured "
            f"(details in {output_dir / 'episodes.jsonl'})"
        )
        if fail_if_all_errored:
            raise EvaluationFailed(message)
        log.error(message)
    return summary.metrics()
