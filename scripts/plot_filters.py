"""Draw the spectral filters of the paper: Fig. 3 (Muon, Promotion, Suppression, Pion) and Fig. A2 (LPMuon).

Each curve is ``scalar_response``, the exact map that the matrix iteration applies to the
Frobenius-normalized singular values (Appendix D), so these plots are the optimizers' real filters.

    python scripts/plot_filters.py --output outputs/filters.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from vla_train.optim import (
    LPMUON_TAUS,
    MUON_COEFFICIENTS,
    PROMOTION_COEFFICIENTS,
    SUPPRESSION_COEFFICIENTS,
    lpmuon_schedule,
    pion_schedule,
    scalar_response,
)


def draw_figure_3(axes) -> None:
    sigma = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    repeated = [
        ("(a) Muon NS", MUON_COEFFICIENTS, r"$f_{NS}^{%d}$"),
        ("(b) Promotion $f_p$, eq. (7)", PROMOTION_COEFFICIENTS, r"$f_p^{%d}$"),
        ("(c) Suppression $f_s$, eq. (8)", SUPPRESSION_COEFFICIENTS, r"$f_s^{%d}$"),
    ]
    colors = plt.cm.viridis(torch.linspace(0.0, 0.9, 6).tolist())
    for ax, (title, coefficients, label) in zip(axes[:3], repeated, strict=True):
        for t in range(1, 6):
            ax.plot(sigma, scalar_response(sigma, [coefficients] * t), color=colors[t], label=label % t)
        ax.set_title(title)
    for kp in range(6):
        curve = scalar_response(sigma, pion_schedule(kp))
        axes[3].plot(sigma, curve, color=colors[kp], label=rf"$k_p={kp}$")
    axes[3].set_title(r"(d) Pion: $f_s^{5-k_p}\circ f_p^{k_p}$")
    for ax in axes:
        ax.plot(sigma, sigma, "k--", linewidth=0.8, label=r"$f(\sigma)=\sigma$")
        ax.set_xlabel(r"normalized singular value $\sigma$")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.05, 1.3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(r"$f(\sigma)$")


def draw_figure_a2(axes) -> None:
    sigma = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)
    for ax, tau in zip(axes, LPMUON_TAUS, strict=True):
        ax.plot(sigma, scalar_response(sigma, lpmuon_schedule(tau)), color="tab:red")
        target = torch.sign(sigma) * (sigma.abs() <= tau)
        ax.plot(sigma, target, "k:", linewidth=0.8)
        ax.axvline(tau, color="gray", linewidth=0.6)
        ax.axvline(-tau, color="gray", linewidth=0.6)
        ax.set_title(rf"LPMuon $\tau={tau:g}$")
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1.3, 1.3)
        ax.grid(alpha=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/filters.png"))
    args = parser.parse_args()

    figure = plt.figure(figsize=(16, 13), constrained_layout=True)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1, 2.1])
    top.suptitle("Fig. 3 — spectral maps of one optimizer step (5 polynomial steps)")
    draw_figure_3(top.subplots(1, 4))
    bottom.suptitle("Fig. A2 — LPMuon low-pass filters of Table A7 (dotted: target sign(σ)·1[|σ| ≤ τ])")
    draw_figure_a2(bottom.subplots(3, 3).ravel())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output.resolve()}")


if __name__ == "__main__":
    main()
