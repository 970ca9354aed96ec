"""vla-train: fine-tune vision-language-action policies with spectral optimizers (Muon, Pion)."""

__version__ = "0.1.0"
