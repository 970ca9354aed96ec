"""Adding a backbone and a head touches no file outside its own: this module is such an addition.

A toy backbone and a toy head are defined and registered here only — no YAML, no edit to the
package — and then composed by name like the built-in parts, routed by every optimizer option,
trained, and paired (or refused) through the backbone/head contract.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from helpers import compose_train
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from torch import nn

from policies.base import POLICY_SUPPLIED, ActionHead, Backbone, BackboneOutput, OptimizerRules
from policies.contract import BackboneSpec
from policies.heads.common import masked_mean
from policies.vla_policy import VLAPolicy
from vla_train import options
from vla_train.config import ConfigError, validate_config
from vla_train.optim import ModalityRule
from vla_train.schemas import register_schema
from vla_train.trainer.metrics_log import read_metrics
from vla_train.training import train


class ToyBackbone(Backbone):
    """Patchify convolution + instruction bytes, then a residual MLP stack: per-layer tokens only."""

    provides = frozenset({"layer_tokens"})

    def __init__(self, width: int = 16, layers: int = 2, patch: int = 16) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = width, layers
        self.vision = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.embed = nn.Embedding(256, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, images, instructions, queries=None, state=None) -> BackboneOutput:
        visual = self.vision(images.flatten(0, 1)).flatten(2).transpose(1, 2)
        visual = visual.reshape(images.size(0), -1, self.hidden_size)
        encoded = [list(text.encode()[:32]) or [0] for text in instructions]
        longest = max(map(len, encoded))
        ids = torch.tensor([row + [0] * (longest - len(row)) for row in encoded], device=images.device)
        text_mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in encoded])
        x = torch.cat([visual, self.embed(ids)], dim=1)
        mask = torch.cat([torch.ones(visual.shape[:2], dtype=torch.bool), text_mask.bool()], dim=1)
        states = [x]
        for layer in self.layers:
            x = x + torch.nn.functional.gelu(layer(x))
            states.append(x)
        return BackboneOutput(x, mask.to(images.device), tuple(states))

    def optimizer_rules(self) -> OptimizerRules:
        return OptimizerRules(
            modality_rules=[
                ModalityRule(r"^vision\.", "vision"),
                ModalityRule(r"^(embed|layers)\.", "language"),
            ],
            adamw_patterns=[r"^embed\."],
        )


class ToyHead(ActionHead):
    """Pooled last-layer tokens + state → the whole chunk, by an MLP, with an ℓ1 loss."""

    requires = frozenset({"layer_tokens"})

    def __init__(
        self, backbone: BackboneSpec, action_dim: int, state_dim: int, chunk_size: int, hidden: int = 32
    ) -> None:
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.context = nn.Linear(backbone.hidden_size, hidden)
        self.state = nn.Linear(state_dim, hidden)
        self.body = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, chunk_size * action_dim)

    def predict(self, features, state, generator=None) -> torch.Tensor:
        weights = features.mask.unsqueeze(-1).float()
        pooled = (features.layer_tokens[-1] * weights).sum(1) / weights.sum(1)
        x = torch.nn.functional.gelu(self.context(pooled) + self.state(state))
        return self.out(torch.nn.functional.gelu(self.body(x))).view(-1, self.chunk_size, self.action_dim)

    def loss(self, features, state, actions, action_is_pad, generator=None) -> torch.Tensor:
        return masked_mean((self.predict(features, state) - actions).abs(), action_is_pad)

    def optimizer_rules(self) -> OptimizerRules:
        return OptimizerRules(modality_rules=[ModalityRule(r".*", "action")], adamw_patterns=[r"^out\."])


register_schema("backbone", "toy", ToyBackbone)  # an option itself, composed as backbone=toy
register_schema("head", "toy", ToyHead, partial=True, supplied=POLICY_SUPPLIED)


def test_registered_parts_are_options_like_the_built_in_ones() -> None:
    assert {"toy", "tiny", "pi05"} <= set(options.options("backbone"))
    assert {"toy", "l1", "flow"} <= set(options.options("head"))
    assert options.option_class("backbone", "toy") is ToyBackbone


def test_their_schema_is_their_constructor(tmp_path: Path) -> None:
    cfg = compose_train(["backbone=toy", "head=toy", "backbone.width=24", "head.hidden=8"], tmp_path)
    assert cfg.backbone.width == 24 and cfg.head.hidden == 8 and cfg.head._partial_
    assert pickle.loads(pickle.dumps(cfg)).backbone.width == 24  # joblib sweeps pickle the config
    with pytest.raises(ConfigError, match="widht"):
        validate_config(compose_train(["backbone=toy", "head=toy", "+backbone.widht=24"], tmp_path))
    with pytest.raises(ConfigCompositionException, match="hidden"):
        compose_train(["backbone=toy", "head=toy", "head.hidden=many"], tmp_path)


def test_the_optimizer_routes_them_by_their_own_rules(tmp_path: Path) -> None:
    cfg = compose_train(["backbone=toy", "head=toy", "optimizer=pion"], tmp_path)
    policy = VLAPolicy(
        instantiate(cfg.backbone), instantiate(cfg.head), action_dim=7, state_dim=8, chunk_size=4
    )
    routed = {
        n: (a.modality, a.algorithm)
        for n, a in policy.optimizer_rules().assign(policy.named_parameters()).items()
    }
    assert routed["backbone.layers.0.weight"] == ("language", "muon")
    assert routed["backbone.embed.weight"] == ("language", "adamw")
    assert routed["head.body.weight"] == ("action", "pion")
    assert routed["head.out.weight"] == ("action", "adamw")


def test_the_contract_pairs_them(tmp_path: Path) -> None:
    validate_config(compose_train(["backbone=toy", "head=toy"], tmp_path))
    validate_config(compose_train(["backbone=tiny", "head=toy"], tmp_path))  # tiny offers layer_tokens too
    with pytest.raises(ConfigError, match="queries") as refused:  # VLA-Adapter's head runs queries
        validate_config(compose_train(["backbone=toy", "head=l1"], tmp_path))
    assert "head=toy" in str(refused.value) and "backbone=tiny" in str(refused.value)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", options.options("optimizer"))
def test_they_train_with_every_optimizer(optimizer: str, lift_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_train(
        [
            "backbone=toy",
            "head=toy",
            f"optimizer={optimizer}",
            "trainer=tiny",
            "trainer.steps=2",
            "trainer.checkpoint_every=0",
            "logger=none",
            "evaluate=false",
            f"env.dataset.root={lift_dataset}",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    assert metrics["step"] == 2 and math.isfinite(metrics["train/loss"])
    losses = [m["train/loss"] for m in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in m]
    assert len(losses) == 2 and all(map(math.isfinite, losses))
