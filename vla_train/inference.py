"""A trained policy from its run: the run's saved config, the checkpoint's weights, ready to act.

Used by ``scripts/eval.py`` and by the policy server; the normalization statistics travel inside the
checkpoint (they are buffers of the policy), so no dataset is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model

from policies.vla_policy import VLAPolicy
from vla_train.config import validate_config
from vla_train.trainer.checkpoint import resolve_resume
from vla_train.training import build_policy


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Hydra's ``key=value`` override grammar (lists, numbers, null) applied to a saved config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for text in overrides:
        if "=" not in text or text.lstrip("+~").startswith("="):
            raise ValueError(f"override {text!r}: must be key=value (a key of the run's config)")
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" and not override.is_add():
            raise KeyError(
                f"override {override.input_line!r}: the run's config has no key {key!r} (use +{key}=...)"
            )
        OmegaConf.update(cfg, key, override.value(), merge=True, force_add=override.is_add())
    return cfg


def load_policy(
    checkpoint: str | Path, overrides: Sequence[str] = (), device: str = "auto"
) -> tuple[DictConfig, VLAPolicy, Path]:
    """``(config, policy in eval mode, checkpoint directory)`` from a run directory (its latest
    checkpoint) or a checkpoint directory, with ``overrides`` applied to the run's config."""
    path = resolve_resume(str(checkpoint), Path(checkpoint))
    config_file = path.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} is missing: a checkpoint is read with the config its run saved"
        )
    cfg = apply_overrides(OmegaConf.load(config_file), overrides)
    validate_config(cfg)  # the run's config with the overrides, checked as a new run's would be
    policy = build_policy(cfg, None, "", "", pretrained_weights=False)
    try:
        missing, unexpected = load_model(policy, str(path / "model.safetensors"), strict=False)
    except RuntimeError as error:  # tensor shapes differ: an override changed the architecture
        raise RuntimeError(
            f"checkpoint {path} does not fit its config with the overrides {list(overrides)}: the "
            f"policy they build has other tensor shapes ({str(error).splitlines()[-1].strip()})"
        ) from error
    if missing or unexpected:
        hint = ""
        if any(name.startswith("head.policy.blocks.") for name in unexpected):
            hint = (
                " — trained with VLA-Adapter's original head, which head=l1 named before the Pro head: "
                "add head._target_=policies.heads.l1_bridge.BridgeL1RegressionHead"
            )
        raise RuntimeError(
            f"checkpoint {path} does not match its config: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}{hint}"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg, policy.to(device).eval(), path
