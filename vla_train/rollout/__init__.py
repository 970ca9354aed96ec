"""Closed-loop evaluation: episodes run in parallel env workers, one batched policy call per step.

This package needs only NumPy (and imageio for videos): env clients can run it in another Python
environment (LIBERO-Plus installs itself as ``libero``) and reach the policy through the server.
"""

from vla_train.rollout.episodes import EpisodeSpec, ResultsFile
from vla_train.rollout.evaluator import run_episodes
from vla_train.rollout.history import StateHistoryEnv, with_state_history
from vla_train.rollout.summary import summarize
from vla_train.rollout.worker import RolloutEnv

__all__ = [
    "EpisodeSpec",
    "ResultsFile",
    "RolloutEnv",
    "StateHistoryEnv",
    "run_episodes",
    "summarize",
    "with_state_history",
]
