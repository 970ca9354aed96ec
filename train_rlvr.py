"""Train a language model with RL from verifiable rewards: ``python train_rlvr.py experiment=rlvr_gsm8k
optimizer=pion_per_head algorithm=gmpo`` (configs/rlvr/).

A thin Hydra entry point; all work happens in :func:`vla_train.rlvr.training.train_rlvr`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vla_train.cli import exit_on_error, run_hydra
from vla_train.config import register_configs
from vla_train.rlvr.schema import register_rlvr_configs

register_configs()  # the optimizer and logger schemas
register_rlvr_configs()


@hydra.main(version_base="1.3", config_path="configs/rlvr", config_name="rlvr")
@exit_on_error
def main(cfg: DictConfig) -> float | None:
    from vla_train.rlvr.training import train_rlvr

    return train_rlvr(cfg).get("eval/accuracy")


if __name__ == "__main__":
    run_hydra(main)  # Hydra's own refusals (a misspelled option, a wrong type) in one error line too
