"""π0.5 weights as lerobot and openpi publish them (``lerobot/pi05_base``), mapped onto our modules.

The published ``model.safetensors`` holds one flat state dict of lerobot's ``PI05Pytorch``:
``paligemma_with_expert.paligemma.model.{vision_tower,multi_modal_projector,language_model}.*`` (the VLM),
``paligemma_with_expert.gemma_expert.model.{layers,norm}.*`` (the action expert, its norms adaptive:
``….dense.{weight,bias}``), and ``action_in_proj``, ``action_out_proj``, ``time_mlp_in``, ``time_mlp_out``.
Two quirks: the Gemma token embedding is stored only as the (tied) ``paligemma.lm_head.weight``, and the
expert carries an ``lm_head`` it never uses. Fine-tuned lerobot checkpoints prefix everything with
``model.``. Both the backbone and the head load their own part from the same file, by name, strictly:
a missing or mis-shaped tensor is an error, never a silently random weight (the adaptive norms being
dropped is the known failure mode of π0.5 ports: the expert then ignores the flow time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from safetensors import safe_open
from torch import nn

VLM_PREFIX = "paligemma_with_expert.paligemma."
EXPERT_PREFIX = "paligemma_with_expert.gemma_expert."
WEIGHTS_FILE = "model.safetensors"


def resolve_checkpoint(source: str | Path) -> Path:
    """A ``model.safetensors`` file, a directory holding one, or a hub id (downloaded to the HF cache)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no {WEIGHTS_FILE} (π0.5 weights in lerobot's layout)")
        return path / WEIGHTS_FILE
    if str(source).startswith((".", "/", "~")) or str(source).count("/") != 1:
        raise FileNotFoundError(f"π0.5 weights {source!r}: no such file or directory, and not a hub id")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(str(source), WEIGHTS_FILE))
    except (LocalEntryNotFoundError, HfHubHTTPError) as error:
        raise FileNotFoundError(
            f"could not get {WEIGHTS_FILE} of {source!r} from the hub ({type(error).__name__}); offline, "
            "point backbone.pretrained at a local copy (hf download lerobot/pi05_base --local-dir <dir>)"
        ) from error


def backbone_checkpoint_names(name: str) -> list[str]:
    """Our ``PI05Backbone`` parameter name → its candidate names in the published file, in order."""
    rest = name.removeprefix("paligemma.")
    names = [f"{VLM_PREFIX}model.{rest}"]
    if rest == "language_model.embed_tokens.weight":
        names.append(f"{VLM_PREFIX}lm_head.weight")  # tied, saved once under the head's name
    return names


def expert_checkpoint_names(name: str) -> list[str]:
    """Our ``PI05ActionExpert`` parameter name → its name in the published file."""
    if name.startswith("expert."):
        return [f"{EXPERT_PREFIX}model.{name.removeprefix('expert.')}"]
    return [name]  # action_in_proj, action_out_proj, time_mlp_in, time_mlp_out: same names


def load_mapped_weights(
    module: nn.Module, source: str | Path, checkpoint_names: Callable[[str], Sequence[str]]
) -> set[str]:
    """Fill every tensor of ``module.state_dict()`` from the file (cast to the module's dtype).

    Returns the checkpoint keys used. Raises if any tensor is missing or has another shape.
    """
    path = resolve_checkpoint(source)
    own = module.state_dict()
    loaded, used, missing, mismatched = {}, set(), [], []
    with safe_open(str(path), framework="pt") as file:
        stored = {key.removeprefix("model."): key for key in file.keys()}  # noqa: SIM118 (not a dict)
        for name, tensor in own.items():
            candidates = list(checkpoint_names(name))
            found = next((key for key in candidates if key in stored), None)
            if found is None:
                missing.append(f"{name} (as {candidates[0]})")
                continue
            value = file.get_tensor(stored[found])
            if value.shape != tensor.shape:
                mismatched.append(f"{found}: {tuple(value.shape)} in the file, {tuple(tensor.shape)} here")
                continue
            loaded[name] = value.to(tensor.dtype)
            used.add(stored[found])
    if missing:
        raise KeyError(
            f"{path} lacks {len(missing)} tensors of {type(module).__name__}, e.g. {missing[:4]}: "
            "is it a π0.5 checkpoint in lerobot's layout?"
        )
    if mismatched:
        raise ValueError(
            f"{path}: shapes differ from the configured {type(module).__name__} for {mismatched[:4]}"
        )
    module.load_state_dict(loaded, strict=True)
    return used
