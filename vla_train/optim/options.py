"""Every hyperparameter of the modality-wise optimizer, as one object (Table A1 / A6 defaults).

:func:`~vla_train.optim.build_modality_optimizer` reads it, and gives each algorithm the fields that
algorithm declares (``config_options`` of :class:`~vla_train.optim.SpectralOptimizer` subclasses);
the ``optimizer`` config group's schema is this class plus Hydra's target.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModalityOptimizerOptions:
    """Which algorithm trains each modality, and the algorithms' hyperparameters.

    ``kp`` (Pion), ``rank``/``drop_null_directions`` (LRMuon) and ``tau`` (LPMuon) only matter where
    that algorithm is used. Every algorithm shares ``lr`` and ``weight_decay``: with the ``moonlight``
    scale rule the spectral updates have AdamW's RMS, which is how the paper trains all three optimizer
    settings at one lr.
    """

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
    # false ignores the parts' AdamW patterns (an ablation of Table A1's footnote: embeddings and output
    # layers then go to their modality's spectral optimizer)
    exclude_embeddings_and_outputs: bool = True
