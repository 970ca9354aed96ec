"""Parameter counts per modality and optimizer of the full-size backbones, built on the meta device.

No weights are downloaded: the architectures come from ``policies/backbones/architectures.py`` (the
published configs) and timm's model definitions. Each backbone is wrapped in a ``VLAPolicy`` with the
configured head, and the counts are what ``build_modality_optimizer`` assigns.

    python scripts/param_counts.py                     # both backbones, l1 and flow heads
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from policies.backbones.architectures import QWEN3_VL_2B, QWEN25_05B
from policies.backbones.prismatic import PrismaticBackbone
from policies.backbones.qwen3_vl import Qwen3VLBackbone
from policies.vla_policy import VLAPolicy

HEADS = {
    "l1": {"_target_": "policies.heads.l1.L1RegressionHead", "_partial_": True},
    "flow": {"_target_": "policies.heads.flow.FlowMatchingHead", "_partial_": True},
}


def build_backbone(name: str) -> torch.nn.Module:
    if name == "prismatic_qwen25":
        return PrismaticBackbone(pretrained_vision=False, language_config=QWEN25_05B, dtype="float32")
    if name == "qwen3_vl":
        return Qwen3VLBackbone(pretrained=None, config=QWEN3_VL_2B)
    raise ValueError(f"unknown backbone {name!r}")


def count(backbone_name: str, head_name: str) -> dict[tuple[str, str], int]:
    with torch.device("meta"):
        backbone = build_backbone(backbone_name)
        head = instantiate(OmegaConf.create(HEADS[head_name]))
        policy = VLAPolicy(backbone, head, action_dim=7, state_dim=8, chunk_size=8)
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for a in policy.optimizer_rules().assign(policy.named_parameters()).values():
        totals[(a.modality, a.algorithm)] += a.parameter.numel()
    return totals


def training_state_bytes(totals: dict[tuple[str, str], int]) -> int:
    """Weights + gradients + optimizer state, by parameter counts: the backbone in bf16 (its config's
    ``dtype``), the head in fp32; AdamW keeps two moments per parameter, the spectral optimizers one
    momentum buffer."""
    total = 0
    for (modality, algorithm), count in totals.items():
        width = 4 if modality == "action" else 2
        states = 2 if algorithm == "adamw" else 1
        total += count * width * (2 + states)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["prismatic_qwen25", "qwen3_vl"])
    parser.add_argument("--heads", nargs="+", default=["l1", "flow"])
    args = parser.parse_args()
    for backbone in args.backbones:
        for head in args.heads:
            totals = count(backbone, head)
            print(f"\n{backbone} + head={head} (optimizer=pion assignment)")
            by_modality: dict[str, int] = defaultdict(int)
            for (modality, algorithm), n in sorted(totals.items()):
                by_modality[modality] += n
                print(f"  {modality:<9} {algorithm:<6} {n / 1e6:10.2f} M")
            summary = ", ".join(f"{m} {n / 1e6:.1f} M" for m, n in by_modality.items())
            print(f"  total {sum(totals.values()) / 1e6:.1f} M ({summary})")
            print(f"  training state ≈ {training_state_bytes(totals) / 2**30:.1f} GiB before activations")


if __name__ == "__main__":
    main()
