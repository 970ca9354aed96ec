"""vla-train: fine-tune vision-language-action policies with spectral optimizers (Muon, Pion)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

__version__ = "0.1.0"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and evaluate) one policy from a composed config; see :mod:`vla_train.training`.

    Imported lazily so that ``import vla_train.optim`` stays light for users of the optimizers alone.
    """
    from vla_train.training import train as _train

    return _train(cfg)
