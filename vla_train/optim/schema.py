"""The optimizer group's config schema: every field a plain command-line override
(``optimizer.kp=2``), passed to :func:`~vla_train.optim.build_modality_optimizer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class OptimizerConfig:
    """Modality-wise optimizer (Table A1 / A6); every field is a plain command-line override."""

    _target_: str = "vla_train.optim.build_modality_optimizer"
    _partial_: bool = True
    vision: str = "muon"
    language: str = "muon"
    action: str = "pion"
    other: str = "muon"  # connectors: projectors, meta queries, state projectors (the official "O")
    lr: float = 1e-4
    aux_lr_ratio: float = 1.0  # lr × this for embeddings, output layers, norms, biases (VLANeXt: 0.1)
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adamw_eps: float = 1e-8
    momentum: float = 0.95
    nesterov: bool = True
    lr_scale: str = "moonlight"
    lr_scale_factor: float | None = None  # null: the rule's own (moonlight 0.2); π0.5's official run 2.0
    ns_steps: int = 5
    kp: int = 0
    rank: int = 16
    drop_null_directions: bool = True  # LRMuon: Alg. 1's k_eff; false = the official code's min(k, m, n)
    tau: float = 0.5
    compute_dtype: str = "auto"
    per_head_modalities: list[str] = field(default_factory=list)
    exclude_embeddings_and_outputs: bool = True


ConfigStore.instance().store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
