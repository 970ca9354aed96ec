"""The optimizer group's config schema: the optimizer's options object plus Hydra's target, so that
every field is a plain command-line override (``optimizer.kp=2``)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from vla_train.optim.options import ModalityOptimizerOptions


@dataclass
class OptimizerConfig(ModalityOptimizerOptions):
    """Modality-wise optimizer (Table A1 / A6), built as ``build_modality_optimizer(policy, rules, ...)``."""

    _target_: str = "vla_train.optim.build_modality_optimizer"
    _partial_: bool = True


ConfigStore.instance().store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
