"""Parameter counts per modality and optimizer of the full-size backbones, built on the meta device.

No weights are downloaded: each class's ``random_init`` options build its architecture from the
published configs (``policies/backbones/architectures.py``) and timm's model definitions. Each
``backbone=… head=…`` pair is built as ``python train.py`` would build it, and the counts are what
``build_modality_optimizer`` assigns.

    python scripts/param_counts.py                     # every backbone with its paper's head(s)
    python scripts/param_counts.py --backbones pi05    # π0.5 (PaliGemma-3B + Gemma-300M expert)
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from policies.backbones.architectures import GEMMA_300M_EXPERT, PALIGEMMA_3B
from vla_train.options import build_policy, options

#: the heads each full-size backbone's paper pairs it with
PAPER_HEADS = {"prismatic_qwen25": ["l1", "flow"], "qwen3_vl": ["flow"], "pi05": ["pi05"]}
#: (action_dim, state_dim, chunk_size) of each backbone's paper environment: LIBERO (env=libero_*) for
#: VLA-Adapter and VLANeXt, DROID (env=droid) for π0.5; the heads' input and output layers depend on them
ENV_SHAPES = {"prismatic_qwen25": (7, 8, 8), "qwen3_vl": (7, 8, 8), "pi05": (8, 8, 16)}
#: published π0.5 checkpoints also hold an ``lm_head`` for the expert (vocabulary × expert width) that
#: π0.5 never uses; the published total (lerobot/pi05_base: 3,616,757,520) includes it
PI05_UNUSED_EXPERT_LM_HEAD = PALIGEMMA_3B["vocab_size"] * GEMMA_300M_EXPERT["width"]


def count(backbone_name: str, head_name: str) -> dict[tuple[str, str], int]:
    """Parameters per (modality, algorithm) of ``backbone=<name> head=<name>``, built on the meta device
    with random weights (nothing downloaded)."""
    action_dim, state_dim, chunk_size = ENV_SHAPES.get(backbone_name, (7, 8, 8))
    with torch.device("meta"):
        policy = build_policy(
            backbone_name,
            head_name,
            action_dim=action_dim,
            state_dim=state_dim,
            chunk_size=chunk_size,
            random_init=True,
        )
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for a in policy.optimizer_rules().assign(policy.named_parameters()).values():
        totals[(a.modality, a.algorithm)] += a.parameter.numel()
    frozen = sum(p.numel() for p in policy.parameters() if not p.requires_grad)
    if frozen:  # built in, not trained (π0.5: the VLM's last-layer output path, see its backbone)
        totals[("untrained", "—")] = frozen
    return totals


def training_state_bytes(totals: dict[tuple[str, str], int]) -> int:
    """Weights + gradients + optimizer state, by parameter counts, all fp32 (the configs train fp32
    weights under bf16 autocast); AdamW keeps two moments per parameter, the spectral optimizers one
    momentum buffer; untrained parameters only their weights."""
    total = 0
    for (modality, algorithm), count in totals.items():
        states = -2 if modality == "untrained" else 2 if algorithm == "adamw" else 1
        total += count * 4 * (2 + states)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(PAPER_HEADS), choices=options("backbone"))
    parser.add_argument("--heads", nargs="+", choices=options("head"), help="default: each paper's heads")
    args = parser.parse_args()
    for backbone in args.backbones:
        for head in args.heads or PAPER_HEADS.get(backbone, options("head")):
            totals = count(backbone, head)
            print(f"\n{backbone} + head={head} (optimizer=pion assignment)")
            by_modality: dict[str, int] = defaultdict(int)
            for (modality, algorithm), n in sorted(totals.items()):
                by_modality[modality] += n
                print(f"  {modality:<9} {algorithm:<6} {n / 1e6:10.2f} M")
            summary = ", ".join(f"{m} {n / 1e6:.1f} M" for m, n in by_modality.items())
            print(f"  total {sum(totals.values()) / 1e6:.1f} M ({summary})")
            print(f"  training state ≈ {training_state_bytes(totals) / 2**30:.1f} GiB before activations")
            if backbone == "pi05":
                published = sum(totals.values()) + PI05_UNUSED_EXPERT_LM_HEAD
                print(
                    f"  + the expert's unused lm_head {PI05_UNUSED_EXPERT_LM_HEAD / 1e6:.1f} M "
                    f"= {published:,} "
                    "(lerobot/pi05_base publishes 3,616,757,520)"
                )


if __name__ == "__main__":
    main()
