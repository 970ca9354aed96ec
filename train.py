"""Train a VLA policy: ``python train.py optimizer=pion head=flow env=libero_object``.

A thin Hydra entry point; all work happens in :func:`vla_train.train`, which tests call directly.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from vla_train.cli import exit_on_error, run_hydra
from vla_train.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@exit_on_error  # `error: <message>`, exit 2, instead of Hydra's truncated traceback
def main(cfg: DictConfig) -> float | None:
    from vla_train import train
    from vla_train.trainer.checkpoint import list_checkpoints

    metrics = train(cfg)
    if metrics.get("interrupted"):  # the checkpoint is saved: exit_on_error says so, with the shell's 130
        checkpoints = list_checkpoints(Path(cfg.output_dir))
        raise KeyboardInterrupt(
            f"checkpoint {checkpoints[-1]} saved; continue with trainer.resume=true"
            if checkpoints
            else "no checkpoint was saved"
        )
    # Hydra sweepers (e.g. Optuna) optimize the returned value.
    return metrics.get("eval/success_rate")


if __name__ == "__main__":
    run_hydra(main)  # Hydra's own refusals (a misspelled option, a wrong type) in one error line too
