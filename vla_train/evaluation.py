"""Closed-loop evaluation: run the policy in the environment and count successes.

Each finished episode is appended to ``episodes.jsonl`` at once, so an interrupted evaluation keeps
what it measured; a few episodes are saved as MP4 videos.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from envs.base import EnvAdapter
from policies.vla_policy import VLAPolicy


@torch.no_grad()
def evaluate_policy(
    policy: VLAPolicy,
    adapter: EnvAdapter,
    episodes: int,
    max_steps: int,
    seed: int,
    videos: int,
    output_dir: Path,
) -> dict[str, float]:
    """Run ``episodes`` episodes (seeds ``seed``, ``seed + 1``, …) and return success statistics."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    results_path = output_dir / "episodes.jsonl"
    results_path.unlink(missing_ok=True)
    successes, lengths = [], []
    progress = tqdm(range(episodes), desc="eval", dynamic_ncols=True)
    env = None
    for episode in progress:
        start = time.perf_counter()
        frames: list[np.ndarray] = []
        success, steps, error = False, 0, None
        try:
            env = env or adapter.make_env()
            observation = env.reset(seed + episode)
            policy.reset()
            for step in range(1, max_steps + 1):
                steps = step
                if episode < videos:
                    frames.append(env.render())
                batch = _to_device(default_collate([adapter.observation_to_policy(observation)]), device)
                action = policy.select_action(batch)[0].float().cpu().numpy()
                observation, success, done = env.step(adapter.action_to_env(action))
                if success or done:
                    break
        except Exception as exc:  # a simulator failure is recorded, never silently dropped
            error = f"{type(exc).__name__}: {exc}"
            if env is not None:
                env.close()
            env = None  # start the next episode from a fresh simulator
        if frames:
            imageio.mimsave(
                output_dir / f"episode_{episode:03d}.mp4", frames, fps=adapter.cfg.fps, macro_block_size=1
            )
        record = {
            "episode": episode,
            "seed": seed + episode,
            "success": bool(success),
            "steps": steps,
            "seconds": round(time.perf_counter() - start, 3),
            "error": error,
        }
        with results_path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        successes.append(bool(success))
        lengths.append(steps)
        progress.set_postfix(success=f"{sum(successes)}/{len(successes)}")
    progress.close()
    if env is not None:
        env.close()
    policy.train(was_training)
    return {
        "eval/success_rate": float(np.mean(successes)) if successes else 0.0,
        "eval/episodes": float(len(successes)),
        "eval/mean_steps": float(np.mean(lengths)) if lengths else 0.0,
    }


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
