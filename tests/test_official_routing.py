"""Every full-size policy routes each tensor where the paper's official run routes it (``optimizer=pion``).

The official rules are written out here from the official training scripts (GitHub OPTML-Group/Pion),
as the keyword tests those scripts apply to *their* parameter names. Each of our names is translated to
the official module it stands for, then judged by those rules; the policies are built on the meta
device (no weights), so the check covers all of their tensors.
"""

from __future__ import annotations

import pytest
import torch

from policies.pi05_weights import backbone_checkpoint_names, expert_checkpoint_names
from vla_train.options import build_policy

OPTIMIZER_OF = {"V": "muon", "L": "muon", "A": "pion", "O": "muon"}  # run_pion.sh: V/L/O Muon, A Pion


def vla_adapter_official(name: str, ndim: int) -> str:
    """VA ``vla-scripts/finetune_pion.py``: ``force_adamw_aux``, then ``get_modality``."""
    if (
        ndim < 2
        or "cls_token" in name
        or "reg_token" in name
        or ("embed" in name and "patch_embed" not in name)
        or "lm_head" in name
        or "action_queries" in name
        or ("action_head" in name and "fc2" in name)
    ):
        return "adamw"
    if "vision_backbone" in name:
        return OPTIMIZER_OF["V"]
    if "language_model" in name:
        return OPTIMIZER_OF["L"]
    if "action_head" in name:
        return OPTIMIZER_OF["A"]
    return OPTIMIZER_OF["O"]


def vla_adapter_name(ours: str) -> str:
    """Our prismatic_qwen25 + l1 (VLA-Adapter-Pro) names → the official module each stands for."""
    translations = [
        ("backbone.dino.", "vla.vision_backbone.featurizer."),
        ("backbone.siglip.", "vla.vision_backbone.fused_featurizer."),
        ("backbone.projector.", "vla.projector."),
        ("backbone.language.", "vla.language_model."),
        ("head.action_queries", "vla.action_queries.weight"),
        ("head.proprio_projector.", "proprio_projector."),
        ("head.model.", "action_head.model."),
    ]
    return next(
        official + ours[len(prefix) :] for prefix, official in translations if ours.startswith(prefix)
    )


def vlanext_official(name: str, ndim: int) -> str:
    """VN ``scripts/train_pion.py``: ``force_adamw_aux``, then ``get_modality``."""
    if ndim < 2 or "final_layer" in name or "embed" in name:
        return "adamw"
    if "visual" in name:
        return OPTIMIZER_OF["V"]
    if "language_model" in name:
        return OPTIMIZER_OF["L"]
    if "action_head" in name:
        return OPTIMIZER_OF["A"]
    return OPTIMIZER_OF["O"]


def vlanext_name(ours: str) -> str:
    """Our qwen3_vl + flow names → VLANeXt's modules (VLANeXt.py, policies.py)."""
    translations = [
        ("backbone.model.", "lmm.model."),
        ("head.meta_queries", "meta_queries"),
        ("head.state_proj.", "action_projector."),
        ("head.action_in_proj.", "action_head.input_proj."),
        ("head.time_mlp.", "action_head.t_embedder.mlp."),
        ("head.position", "action_head.pos_embed"),
        ("head.final_modulation.", "action_head.final_layer.adaLN_modulation.1."),
        ("head.output_proj.", "action_head.final_layer.linear."),
        ("head.blocks.", "action_head.blocks."),
    ]
    return next(
        official + ours[len(prefix) :] for prefix, official in translations if ours.startswith(prefix)
    )


def pi05_official(name: str, ndim: int) -> str:
    """OP ``src/openpi/training/optim_groups.py``, scheme "pion"."""
    hints = ("embed_tokens", "embeddings.weight", "position_embedding", "patch_embedding", "lm_head")
    if ndim < 2 or any(hint in name for hint in hints) or "action_out_proj" in name:
        return "adamw"
    action_roots = ("action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out")
    if "paligemma_with_expert.gemma_expert" in name or name.startswith(action_roots):
        return "pion"
    if "paligemma_with_expert.paligemma" in name:
        return "muon"
    return "adamw"


def pi05_name(ours: str) -> str:
    """Our pi05 + pi05 names → lerobot/pi05_base's (openpi's) names, by the weight loader's own map."""
    if ours.startswith("backbone."):
        return backbone_checkpoint_names(ours.removeprefix("backbone."))[0]
    return expert_checkpoint_names(ours.removeprefix("head."))[0]


CASES = {
    "prismatic_qwen25+l1": ("prismatic_qwen25", "l1", vla_adapter_name, vla_adapter_official),
    "qwen3_vl+flow": ("qwen3_vl", "flow", vlanext_name, vlanext_official),
    "pi05+pi05": ("pi05", "pi05", pi05_name, pi05_official),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_official_routing_of_every_tensor(case: str) -> None:
    backbone_name, head_name, translate, official = CASES[case]
    with torch.device("meta"):
        policy = build_policy(
            backbone_name, head_name, action_dim=7, state_dim=8, chunk_size=8, random_init=True
        )
    ours = policy.optimizer_rules().assign(policy.named_parameters())
    disagreements = {
        name: (a.algorithm, official(translate(name), a.parameter.ndim), translate(name))
        for name, a in ours.items()
        if a.algorithm != official(translate(name), a.parameter.ndim)
    }
    assert not disagreements, f"{len(disagreements)} of {len(ours)} tensors (ours, official, as): " + str(
        dict(list(disagreements.items())[:10])
    )
    assert len(ours) > 300  # every tensor of a full-size policy was judged
