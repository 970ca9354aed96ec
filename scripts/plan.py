"""Will a run fit? Per-GPU memory and Newton–Schulz work under DDP and FSDP2, from the config alone.

    python scripts/plan.py experiment=vlanext_libero --gpus 8 --gpu-memory 48
    python scripts/plan.py experiment=pi05_droid --gpus 1 --gpu-memory 80 --measure-activations

Builds the configured policy on the meta device (nothing downloaded, no compute) and counts what a
step holds (:mod:`vla_train.planning`): weights, gradients, optimizer state and the largest block FSDP2
gathers, and the Newton–Schulz work per rank. Activations at the configured micro-batch
(``trainer.batch_size`` / GPUs / ``gradient_accumulation_steps``) need a real forward pass:
``--measure-activations`` runs one on the CPU with random weights (full size: minutes and about the
model's fp32 size in memory), or ``--activations-per-sample`` takes a figure measured elsewhere (GiB,
e.g. ``scripts/bench_step.py``'s peak minus the training state). Allocator slack and temporaries come
on top, so a plan within ~10 % of the memory is marked tight.
"""

from __future__ import annotations

import argparse

from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table

from vla_train.cli import exit_on_error
from vla_train.config import register_configs
from vla_train.options import CONFIG_DIR
from vla_train.planning import GIB, footprint, plan


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. experiment=vlanext_libero")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-memory", type=float, default=48.0, help="GiB per GPU")
    parser.add_argument("--measure-activations", action="store_true", help="one CPU forward pass")
    parser.add_argument(
        "--activations-per-sample", type=float, help="GiB saved per sample, measured elsewhere"
    )
    args = parser.parse_args(argv)
    if args.gpus < 1 or args.gpu_memory <= 0:
        parser.error(f"--gpus must be >= 1 and --gpu-memory > 0, got {args.gpus} and {args.gpu_memory}")
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=args.overrides)
    trainer = cfg.trainer
    per_gpu = trainer.batch_size // (args.gpus * trainer.gradient_accumulation_steps)
    if per_gpu < 1 or trainer.batch_size % (args.gpus * trainer.gradient_accumulation_steps):
        parser.error(
            f"trainer.batch_size={trainer.batch_size} does not split over {args.gpus} GPUs × "
            f"gradient_accumulation_steps={trainer.gradient_accumulation_steps}"
        )
    run = footprint(cfg, measure_activations=args.measure_activations)
    if args.activations_per_sample is not None:
        run.activations_per_sample = int(args.activations_per_sample * GIB)
    bf16 = trainer.mixed_precision in ("auto", "bf16")  # on GPUs, "auto" is bf16 autocast
    plans = plan(run, args.gpus, per_gpu, bf16_activations=bf16)
    table = Table(
        title=f"{' '.join(args.overrides) or 'defaults'}: {args.gpus} GPU(s) × {args.gpu_memory:g} GiB, "
        f"{per_gpu} samples per GPU per micro-step (GiB per GPU)"
    )
    for column in ("strategy", "weights", "gradients", "optimizer", "activations", "gathered", "total",
                   "NS GMAC/rank", "fits"):  # fmt: skip
        table.add_column(column, justify="right")
    rows = []
    counted = run.activations_per_sample is not None
    for gpu in plans:
        verdict = (
            "no" if gpu.total > args.gpu_memory else "tight" if gpu.total > 0.9 * args.gpu_memory else "yes"
        )
        if not counted and verdict != "no":
            verdict += ", before activations"
        table.add_row(
            gpu.strategy,
            *(f"{value:.3g}" for value in (gpu.weights, gpu.gradients, gpu.optimizer_state)),
            f"{gpu.activations:.3g}" if counted else "—",
            f"{gpu.gathered:.3g}",
            f"{gpu.total:.3g}",
            f"{gpu.spectral_macs_per_rank / 1e9:.1f}",
            verdict,
        )
        rows.append({"strategy": gpu.strategy, "total_gib": gpu.total, "fits": verdict})
    console = Console(width=140)
    console.print(table)
    total_macs = sum(run.spectral_macs)
    if run.activations_per_sample is None:
        measured = "not counted (add --measure-activations or --activations-per-sample)"
    else:
        measured = f"{run.activations_per_sample / GIB:.3g} GiB per sample saved for backward (fp32"
        measured += ", halved for bf16 autocast)" if bf16 else ")"
    console.print(
        f"activations: {measured}; Newton–Schulz: "
        f"{total_macs / 1e9:.1f} GMAC per step in all, shared over the ranks (without sharing every rank "
        "would do all of it)"
    )
    return rows


if __name__ == "__main__":
    exit_on_error(main)()  # a misspelled option or key: one `error:` line naming it, exit 2
