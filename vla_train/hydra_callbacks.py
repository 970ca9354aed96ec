"""Hydra callbacks of ``train.py`` (``hydra.callbacks`` in configs/train.yaml)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vla_train.cli import exit_on_error
from vla_train.trainer.run_directory import claim_run_directory, foreign_entries


class RunDirectoryGuard(Callback):
    """Refuse a run directory of the user's before Hydra writes ``.hydra/`` and ``train.log`` into it
    (:func:`~vla_train.training.train` checks again for callers without Hydra)."""

    @exit_on_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(
            config
        )  # run.dir reads ${hydra:runtime.choices...}; run_job sets it too
        run_dir = str(config.hydra.run.dir)
        if foreign_entries(run_dir):
            claim_run_directory(run_dir)  # raises, naming what is there
