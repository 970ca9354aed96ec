"""VLA-Adapter(-Pro) checkpoints, as its fine-tuning script saves them, mapped onto ``head=l1``.

A checkpoint directory (``finetune.py``'s ``save_training_checkpoint``, and the released ``*-Pro``
checkpoints) holds:

- ``action_head--<step>_checkpoint.pt``: the ``L1RegressionActionHead`` state dict, saved from its DDP
  wrapper (keys prefixed ``module.``) → our ``head.model``;
- ``proprio_projector--<step>_checkpoint.pt``: the ``ProprioProjector`` → our ``head.proprio_projector``;
- the VLA in Hugging Face format (``model.safetensors``, or shards listed in
  ``model.safetensors.index.json``), whose ``action_queries.weight`` → our ``head.action_queries``.

The ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors only, no code unpickled.
Loading is strict both ways: every tensor of the head must be found with its shape, and every tensor
of the two head files must be used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

ACTION_HEAD, PROPRIO_PROJECTOR = "action_head", "proprio_projector"
QUERIES_KEY = "action_queries.weight"


def head_checkpoint_name(name: str) -> tuple[str, str]:
    """Our ``L1RegressionHead`` parameter name → (the file it is in, its key there)."""
    if name == "action_queries":
        return "vla", QUERIES_KEY
    if name.startswith(f"{PROPRIO_PROJECTOR}."):
        return PROPRIO_PROJECTOR, name.removeprefix(f"{PROPRIO_PROJECTOR}.")
    if name.startswith("model."):
        return ACTION_HEAD, name
    raise KeyError(f"{name} is not a parameter of VLA-Adapter-Pro's head")


def component_file(directory: Path, component: str) -> Path:
    """``<component>--<step>_checkpoint.pt`` in ``directory``; the highest step when there are several."""
    found = sorted(directory.glob(f"{component}--*_checkpoint.pt"))
    if not found:
        raise FileNotFoundError(
            f"{directory} holds no {component}--<step>_checkpoint.pt: not a VLA-Adapter checkpoint directory"
        )

    def step(path: Path) -> float:
        match = re.fullmatch(rf"{component}--(\d+)_checkpoint\.pt", path.name)
        return float(match.group(1)) if match else float("inf")  # e.g. "latest"

    return max(found, key=step)


def read_component(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable tensor checkpoint: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def read_vla_tensor(directory: Path, key: str) -> torch.Tensor:
    """``key`` from the VLA's safetensors (single file or shards)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        if key not in weight_map:
            raise KeyError(f"{index} lists no {key}")
        path = directory / weight_map[key]
    else:
        path = directory / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} holds neither model.safetensors nor its index (the VLA's {key})"
            )
    with safe_open(str(path), framework="pt") as file:
        if key not in file.keys():  # noqa: SIM118 (not a dict)
            raise KeyError(f"{path} has no {key}")
        return file.get_tensor(key)


def load_vla_adapter_head(head: nn.Module, checkpoint: str | Path) -> None:
    """Fill ``head`` (an ``L1RegressionHead``) from a VLA-Adapter checkpoint directory, strictly."""
    directory = Path(checkpoint).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"head.checkpoint={checkpoint}: no such directory")
    paths = {
        component: component_file(directory, component) for component in (ACTION_HEAD, PROPRIO_PROJECTOR)
    }
    stored = {component: read_component(path) for component, path in paths.items()}
    loaded, missing, mismatched = {}, [], []
    used: dict[str, set[str]] = {component: set() for component in stored}
    for name, tensor in head.state_dict().items():
        component, key = head_checkpoint_name(name)
        if component == "vla":
            value = read_vla_tensor(directory, key)
        elif key in stored[component]:
            value = stored[component][key]
            used[component].add(key)
        else:
            missing.append(f"{key} ({paths[component].name})")
            continue
        if value.shape != tensor.shape:
            mismatched.append(f"{key}: {tuple(value.shape)} in the checkpoint, {tuple(tensor.shape)} here")
            continue
        loaded[name] = value.to(tensor.dtype)
    unused = [
        f"{key} ({paths[c].name})" for c, state in stored.items() for key in sorted(set(state) - used[c])
    ]
    if missing or unused:
        raise KeyError(
            f"{directory} does not match head=l1 (VLA-Adapter-Pro): missing {missing[:6]}, unexpected "
            f"{unused[:6]} — was it trained with --use_pro_version False (then it is not this head)?"
        )
    if mismatched:
        raise ValueError(
            f"{directory}: shapes differ from the configured head for {mismatched[:4]} (env.action_dim, "
            "env.state_dim and the backbone's width must match the checkpoint's)"
        )
    head.load_state_dict(loaded, strict=True)
