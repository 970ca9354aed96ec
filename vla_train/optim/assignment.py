"""Modality-wise optimizer assignment (Table A1, Appendix K.3): ordered name rules → one optimizer.

The paper's recipe is Muon on vision and language hidden matrices, Pion on action hidden matrices
and AdamW on everything else — embeddings, the LM head, the action head's output layer, action
queries, norms and biases. The official runs add a fourth modality, ``other`` ("O"): the connectors
between the others (projectors, VLANeXt's meta queries, proprio/state projectors), on Muon in the
Muon and Pion runs and on AdamW in the AdamW run.

Getting a single parameter wrong silently changes the experiment, so the assignment is strict, like
torchtitan's: every trainable parameter lands in exactly one group, a rule that matches nothing is an
error, a parameter that no rule matches is an error, and the resulting table (rule → tensors,
parameters, optimizer) is logged for the record.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from vla_train.optim.low_rank import LowRankMuon
from vla_train.optim.modality_optimizer import ModalityOptimizer
from vla_train.optim.options import ModalityOptimizerOptions
from vla_train.optim.polynomial import LowPassMuon, Muon, Pion
from vla_train.optim.spectral import HeadLayout

log = logging.getLogger(__name__)

MODALITIES = ("vision", "language", "action", "other")
SPECTRAL_ALGORITHMS = {"muon": Muon, "pion": Pion, "lrmuon": LowRankMuon, "lpmuon": LowPassMuon}
ALGORITHMS = ("adamw", *SPECTRAL_ALGORITHMS)


@dataclass(frozen=True)
class ModalityRule:
    """Parameters whose name matches ``pattern`` (``re.search``) belong to ``modality``."""

    pattern: str
    modality: str

    def __post_init__(self) -> None:
        _compile(self.pattern, "rule")
        if self.modality not in MODALITIES:
            raise ValueError(
                f"rule {self.pattern!r}: modality must be one of {MODALITIES}, got {self.modality!r}"
            )


@dataclass(frozen=True)
class PerHeadRule:
    """Parameters matching ``pattern`` split into heads of ``head_dim`` along ``axis`` in per-head mode."""

    pattern: str
    head_dim: int
    axis: int = 0

    def __post_init__(self) -> None:
        _compile(self.pattern, "per-head rule")
        HeadLayout(head_dim=self.head_dim, axis=self.axis)  # validates head_dim and axis

    @property
    def layout(self) -> HeadLayout:
        return HeadLayout(head_dim=self.head_dim, axis=self.axis)


@dataclass
class ParameterAssignment:
    """Where one named parameter goes, and which rule sent it there."""

    name: str
    parameter: torch.nn.Parameter = field(repr=False)
    modality: str
    algorithm: str
    rule: str
    head_layout: HeadLayout | None = None
    #: on AdamW whatever its modality's optimizer: not a hidden matrix, or matched by an adamw pattern
    auxiliary: bool = False


def assign_parameters(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    rules: Sequence[ModalityRule | Mapping[str, Any]],
    optimizers: Mapping[str, str],
    adamw_patterns: Sequence[str] = (),
    per_head_rules: Sequence[PerHeadRule | Mapping[str, Any]] = (),
    per_head_modalities: Sequence[str] = (),
) -> list[ParameterAssignment]:
    """Decide modality, algorithm and head layout for every trainable parameter.

    Args:
        named_parameters: e.g. ``model.named_parameters()``; frozen parameters are skipped.
        rules: ordered; the first rule whose pattern is found in the name sets the modality.
        optimizers: modality → algorithm for its hidden matrices, e.g. ``{"vision": "muon",
            "language": "muon", "action": "pion", "other": "muon"}`` (``other`` left out: AdamW).
        adamw_patterns: names kept on AdamW although they are matrices (embeddings, LM head, the
            action head's output layer, learnable queries): Table A1's footnote.
        per_head_rules: how attention projections split into heads, for per-head mode.
        per_head_modalities: modalities whose spectral matrices run in per-head mode (Alg. 3).

    Raises:
        ValueError: naming the offending rule or parameters.
    """
    modality_rules = [r if isinstance(r, ModalityRule) else ModalityRule(**r) for r in rules]
    head_rules = [r if isinstance(r, PerHeadRule) else PerHeadRule(**r) for r in per_head_rules]
    if not modality_rules:
        raise ValueError("optimizer assignment needs at least one modality rule")
    choices = _check_choices(optimizers)
    for modality in per_head_modalities:
        if modality not in MODALITIES:
            raise ValueError(f"per_head_modalities: unknown modality {modality!r}, allowed: {MODALITIES}")

    compiled = [(rule, re.compile(rule.pattern)) for rule in modality_rules]
    adamw_compiled = [(pattern, _compile(pattern, "adamw pattern")) for pattern in adamw_patterns]
    head_compiled = [(rule, re.compile(rule.pattern)) for rule in head_rules]
    used_rules: set[str] = set()
    used_adamw: set[str] = set()
    used_heads: set[str] = set()
    unmatched: list[str] = []
    assignments: list[ParameterAssignment] = []

    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        rule = next((rule for rule, regex in compiled if regex.search(name)), None)
        if rule is None:
            unmatched.append(name)
            continue
        used_rules.add(rule.pattern)
        forced_adamw = next((pattern for pattern, regex in adamw_compiled if regex.search(name)), None)
        if forced_adamw is not None:
            used_adamw.add(forced_adamw)
        algorithm = choices[rule.modality]
        auxiliary = not is_hidden_matrix(parameter) or forced_adamw is not None
        if auxiliary:
            algorithm = "adamw"
        layout = None
        head_rule = next((r for r, regex in head_compiled if regex.search(name)), None)
        if head_rule is not None:
            used_heads.add(head_rule.pattern)  # a pattern is checked whichever modality runs per-head
            if algorithm != "adamw" and rule.modality in per_head_modalities:
                layout = head_rule.layout
        assignments.append(
            ParameterAssignment(name, parameter, rule.modality, algorithm, rule.pattern, layout, auxiliary)
        )

    if unmatched:
        shown = ", ".join(unmatched[:20]) + (
            f" … and {len(unmatched) - 20} more" if len(unmatched) > 20 else ""
        )
        raise ValueError(f"{len(unmatched)} trainable parameters match no modality rule: {shown}")
    _check_all_used("modality rule", [r.pattern for r in modality_rules], used_rules)
    _check_all_used("adamw pattern", list(adamw_patterns), used_adamw)
    if per_head_modalities:
        _check_all_used("per-head rule", [r.pattern for r in head_rules], used_heads)
    return assignments


def build_modality_optimizer(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]] | torch.nn.Module,
    rules: Sequence[ModalityRule | Mapping[str, Any]],
    options: ModalityOptimizerOptions | None = None,
    *,
    adamw_patterns: Sequence[str] = (),
    per_head_rules: Sequence[PerHeadRule | Mapping[str, Any]] = (),
    **overrides: Any,
) -> ModalityOptimizer:
    """Build the paper's modality-wise optimizer (defaults: Table A1, configuration (iii)).

    Args:
        rules, adamw_patterns, per_head_rules: what the model's parts say of their parameters
            (:meth:`~policies.base.OptimizerRules`).
        options: every hyperparameter (:class:`ModalityOptimizerOptions`); ``overrides`` replace
            single fields (``lr=1e-3``), as the ``optimizer`` config group's fields do.

    ``aux_lr_ratio`` scales the lr of the auxiliary parameters only — those on AdamW whatever their
    modality's optimizer (embeddings, output layers, queries, norms, biases) — as VLANeXt's official run
    does (``lr_ratio`` 0.1); matrices of a modality that chose AdamW keep ``lr``. Each spectral algorithm
    gets the fields it declares in ``config_options``.
    """
    options = dataclasses.replace(options or ModalityOptimizerOptions(), **overrides)
    if isinstance(named_parameters, torch.nn.Module):
        named_parameters = named_parameters.named_parameters()
    assignments = assign_parameters(
        named_parameters,
        rules,
        {m: getattr(options, m) for m in ("vision", "language", "action", "other")},
        adamw_patterns=adamw_patterns if options.exclude_embeddings_and_outputs else (),
        per_head_rules=per_head_rules,
        per_head_modalities=options.per_head_modalities,
    )
    lr = options.lr

    groups: dict[tuple[str, str, HeadLayout | None, bool], list[ParameterAssignment]] = {}
    for assignment in assignments:
        key = (assignment.algorithm, assignment.modality, assignment.head_layout, assignment.auxiliary)
        groups.setdefault(key, []).append(assignment)

    optimizers: dict[str, torch.optim.Optimizer] = {}
    for algorithm in ALGORITHMS:
        param_groups = []
        for (group_algorithm, modality, layout, auxiliary), members in groups.items():
            if group_algorithm != algorithm:
                continue
            group: dict[str, Any] = {
                "params": [m.parameter for m in members],
                "name": f"{modality}/{algorithm}"
                + (f"/heads{layout.head_dim}x_axis{layout.axis}" if layout else "")
                + ("/aux" if auxiliary else ""),
                "modality": modality,
                "algorithm": algorithm,
                "auxiliary": auxiliary,
                "param_names": [m.name for m in members],
            }
            if auxiliary:
                group["lr"] = lr * options.aux_lr_ratio
            if layout is not None:
                group["per_head"] = layout
            param_groups.append(group)
        if not param_groups:
            continue
        if algorithm == "adamw":
            optimizers[algorithm] = torch.optim.AdamW(
                param_groups,
                lr=lr,
                betas=tuple(options.betas),
                eps=options.adamw_eps,
                weight_decay=options.weight_decay,
            )
        else:
            spectral = SPECTRAL_ALGORITHMS[algorithm]
            own = {name: getattr(options, name) for name in spectral.config_options}
            optimizers[algorithm] = spectral(param_groups, lr=lr, weight_decay=options.weight_decay, **own)

    summary = summarize_assignments(assignments)
    log.info("optimizer assignment\n%s", summary)
    return ModalityOptimizer(optimizers, summary=summary)


def is_hidden_matrix(parameter: torch.Tensor) -> bool:
    """A weight a spectral optimizer can use: 2-D or more, and a real matrix once flattened to
    ``(size(0), rest)``. Vectors in disguise — ``(1, N, D)`` position embeddings, ``(1, 1, D)`` class
    tokens — have a single singular value, where orthogonalization degenerates to sign-like scaling.
    """
    return parameter.ndim >= 2 and parameter.size(0) > 1 and math.prod(parameter.shape[1:]) > 1


def summarize_assignments(assignments: Sequence[ParameterAssignment]) -> str:
    """A text table: one row per (rule, modality, optimizer) with tensor and parameter counts."""
    rows: dict[tuple[str, str, str], list[int]] = {}
    for a in assignments:
        algorithm = a.algorithm + (" (per-head)" if a.head_layout else "")
        counts = rows.setdefault((a.rule, a.modality, algorithm), [0, 0])
        counts[0] += 1
        counts[1] += a.parameter.numel()
    table = Table(title="optimizer assignment", show_lines=False)
    for column, justify in (
        ("rule", "left"),
        ("modality", "left"),
        ("optimizer", "left"),
        ("tensors", "right"),
        ("parameters", "right"),
    ):
        table.add_column(column, justify=justify)
    for (rule, modality, algorithm), (tensors, numel) in rows.items():
        table.add_row(rule, modality, algorithm, str(tensors), f"{numel:,}")
    table.add_section()
    totals: dict[str, list[int]] = {}
    for a in assignments:
        counts = totals.setdefault(a.algorithm, [0, 0])
        counts[0] += 1
        counts[1] += a.parameter.numel()
    for algorithm, (tensors, numel) in totals.items():
        table.add_row("total", "", algorithm, str(tensors), f"{numel:,}")
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(table)
    return buffer.getvalue().rstrip()


def _check_choices(optimizers: Mapping[str, str]) -> dict[str, str]:
    choices = {"other": "adamw"}
    for modality, algorithm in optimizers.items():
        if modality not in MODALITIES:
            raise ValueError(f"optimizer choice for unknown modality {modality!r}, allowed: {MODALITIES}")
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"optimizer for modality {modality!r} must be one of {ALGORITHMS}, got {algorithm!r}"
            )
        choices[modality] = algorithm
    missing = [m for m in MODALITIES if m not in choices]
    if missing:
        raise ValueError(f"no optimizer chosen for modalities {missing}")
    return choices


def _check_all_used(kind: str, patterns: Sequence[str], used: set[str]) -> None:
    unused = [pattern for pattern in patterns if pattern not in used]
    if unused:
        raise ValueError(
            f"{kind}(s) {unused} matched no trainable parameter (or only ones claimed by an earlier rule); "
            "fix the pattern or remove it"
        )


def _compile(pattern: str, kind: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{kind} {pattern!r} is not a valid regular expression: {error}") from error
