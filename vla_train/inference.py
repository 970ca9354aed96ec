"""A trained policy from its run: the run's saved config, the checkpoint's weights, ready to act.

Used by ``scripts/eval.py`` and by the policy server; the normalization statistics travel inside the
checkpoint (they are buffers of the policy), so no dataset is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_model

from policies.vla_policy import VLAPolicy
from vla_train.config import ConfigError, check_boolean_overrides, validate_config
from vla_train.trainer.checkpoint import CheckpointUnreadable, list_checkpoints, resolve_resume
from vla_train.training import build_policy, load_saved_config


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Hydra's ``key=value`` override grammar (lists, numbers, null) applied to a saved config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for text in overrides:
        if "=" not in text or text.lstrip("+~").startswith("="):
            raise ValueError(f"override {text!r}: must be key=value (a key of the run's config)")
    check_boolean_overrides(cfg, list(overrides))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" and not override.is_add():
            raise KeyError(
                f"override {override.input_line!r}: the run's config has no key {key!r} (use +{key}=...)"
            )
        value = override.value()
        OmegaConf.update(cfg, key, value, merge=True, force_add=override.is_add())
    return cfg


#: what a checkpoint was trained as (dotted prefixes): an override would evaluate or serve another policy
TRAINED_AS = (
    "backbone",
    "head",
    "env.chunk_size",
    "env.action_dim",
    "env.state_dim",
    "env.state_history",
    "env.image_size",
    "env.cameras",
    "env.action_normalization",
)
#: options of a trained part that change only how it runs (inference steps, memory), never its weights
RUNTIME_OPTIONS = ("num_inference_steps", "gradient_checkpointing")


def check_trained_settings_kept(saved: DictConfig, cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse overrides that change what the checkpoint was trained as, naming the run's value: a head
    with another chunk size, say, loads the same weights and acts wrongly without an error."""
    for text in overrides:
        key = text.lstrip("+~").split("=", 1)[0]
        part, _, leaf = key.partition(".")
        if not any(key == p or key.startswith(p + ".") for p in TRAINED_AS):
            continue
        if part in ("backbone", "head") and leaf in RUNTIME_OPTIONS + _weight_sources(saved, part):
            continue
        before, after = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if before != after:
            shown = list(before) if OmegaConf.is_list(before) else before
            raise ConfigError(
                f"{text}: the checkpoint was trained with {key}={shown}; an evaluated or served policy "
                f"keeps what it was trained as (change env.eval.*, env.n_action_steps, env.simulator.*, or "
                f"train a new run)"
            )


def _weight_sources(cfg: DictConfig, part: str) -> tuple[str, ...]:
    from hydra.utils import get_class

    try:
        return tuple(getattr(get_class(cfg[part]._target_), "weight_sources", ()))
    except Exception:  # a config without a loadable target is refused by validate_config next
        return ()


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
    saved = load_saved_config(config_file)
    cfg = apply_overrides(saved.copy(), overrides)
    check_trained_settings_kept(saved, cfg, overrides)
    validate_config(cfg)  # the run's config with the overrides, checked as a new run's would be
    policy = build_policy(cfg, None, "", "", pretrained_weights=False)
    weights = path / "model.safetensors"
    try:
        missing, unexpected = load_model(policy, str(weights), strict=False)
    except (SafetensorError, OSError) as error:  # missing, truncated, not safetensors at all
        raise CheckpointUnreadable(
            f"{weights} cannot be read ({type(error).__name__}: {(str(error).splitlines() or [''])[0]}); "
            f"{_fallback(path)}"
        ) from error
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
    check_finite_weights(policy, weights, path)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg, policy.to(device).eval(), path


def check_finite_weights(policy: torch.nn.Module, weights: Path, checkpoint: Path) -> None:
    """A checkpoint with NaN or infinite values is refused: it would act NaN on every step, and an
    evaluation would report a success rate of a broken policy. Training never saves one as good (the
    trainer's ``_save``); this catches weights written by other tools or edited afterwards."""
    bad = [  # parameters and saved buffers (the normalizers' scale and shift among them)
        name
        for name, t in policy.state_dict().items()
        if t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:
        raise CheckpointUnreadable(
            f"{weights} holds non-finite weights (NaN or infinity) in {len(bad)} tensors, e.g. {bad[:3]}; "
            f"{_fallback(checkpoint)}"
        )


def _fallback(checkpoint: Path) -> str:
    """What to evaluate instead of a checkpoint that cannot be used: the run's latest other one."""
    others = [c for c in list_checkpoints(checkpoint.parent.parent) if c != checkpoint]
    return f"evaluate another checkpoint ({others[-1]})" if others else "the run has no other checkpoint"
