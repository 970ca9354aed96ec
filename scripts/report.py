"""Turn a run or a sweep directory into a Markdown report with the paper's tables and plots.

    python scripts/report.py multirun/2026-11-25_10-00-00            # a sweep (one subdirectory per job)
    python scripts/report.py outputs/vla_adapter-libero_object-pion  # a single run
    python scripts/report.py multirun/... --output reports/fig5      # where report.md and the PNGs go

Reads each run's ``config.yaml``, ``metrics.jsonl``, its latest ``eval/*/episodes.jsonl`` and its
real-robot trials ``eval/robot/episodes.jsonl`` (:mod:`envs.droid.trials`), and writes:
- a table of runs (optimizer per modality, environment, steps, final loss, success, time per step);
- success rates as optimizer × suite (Table A5 / the LIBERO columns of Table 1), per LIBERO-Plus
  category (Table 1), per modality-wise setting (Table A6), and per real-robot task (Table 3);
- PNG plots: success vs training step (Fig. 5b), per-modality gradient effective rank (Fig. 1a) and
  gradient SNR (Fig. 2a / 7) over training, seconds per training step by optimizer (Fig. 1c, A1b).

RLVR runs (``train_rlvr.py``, e.g. ``python train_rlvr.py -m experiment=rlvr_arithmetic``) get their own
table (test accuracy before training and at the end, final reward) and Fig. 6's curves: test accuracy
and training reward over steps, one panel per task · model · algorithm and one curve per optimizer, and
gradient SNR / effective rank per decoder module.

A partial sweep is fine: runs without an evaluation show "—" (missing), never 0.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # headless machines get the Agg backend automatically
from omegaconf import OmegaConf

from envs.droid.trials import ROBOT_GROUP
from envs.libero.plus import CATEGORY_COLUMNS, table1_row
from vla_train.optim.schema import OptimizerConfig
from vla_train.rollout import ResultsFile, summarize

MODALITIES = ("vision", "language", "action")
DECODER_MODULES = ("attention", "mlp")  # vla_train.rlvr.diagnostics.decoder_module's matrices
MISSING = "—"
ROBOT_TRIALS = "robot"  # <run>/eval/robot/episodes.jsonl: trials on the real robot


@dataclass
class Run:
    path: Path
    config: Any
    metrics: list[dict[str, Any]]
    episodes: list[dict[str, Any]] = field(default_factory=list)
    robot_episodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_rlvr(self) -> bool:
        """A ``train_rlvr.py`` run (its config has ``rl``), not a VLA one."""
        return "rl" in self.config

    @property
    def optimizer(self) -> str:
        """``adamw`` / ``muon`` / ``pion`` when one algorithm covers the matrices, else V/L/A."""
        opt = self.config.optimizer
        if self.is_rlvr:  # one algorithm on every decoder matrix
            return opt.language + (" (per-head)" if "language" in opt.get("per_head_modalities", []) else "")
        algorithms = [opt[m] for m in MODALITIES]
        if len(set(algorithms)) == 1:
            label = algorithms[0]
        elif algorithms[:2] == ["muon", "muon"]:
            label = algorithms[2]  # the paper's convention: Muon on V/L, named by the action optimizer
        else:
            label = "/".join(algorithms)
        if "action" in opt.get("per_head_modalities", []) and opt.action == "pion":
            label += " (per-head)"
        if opt.action == "lrmuon":
            label += f" k={opt.rank}"
        if opt.action == "pion" and opt.kp != OptimizerConfig.kp:  # named when not the default
            label += f" kp={opt.kp}"
        return label

    @property
    def label(self) -> str:
        """How a curve is named in a plot: the optimizer, and what else tells runs apart."""
        return f"{self.optimizer} · {self.rlvr_panel if self.is_rlvr else self.suite}"

    @property
    def rlvr_panel(self) -> str:
        """The Fig. 6 panel of an RLVR run: its task, model and algorithm."""
        task = str(self.config.task._target_).rsplit(".", 1)[-1].removesuffix("Task").lower()
        model = str(self.config.model.name_or_path or "tiny").rsplit("/", 1)[-1]
        return f"{task} · {model} · {self.config.algorithm.name}"

    @property
    def architecture(self) -> str:
        return " + ".join(str(self.config[part]._target_).rsplit(".", 1)[-1] for part in ("backbone", "head"))

    @property
    def suite(self) -> str:
        simulator = self.config.env.get("simulator") or {}
        return str(simulator.get("suite") or self.config.env.name)

    def last(self, key: str) -> float | None:
        values = [m[key] for m in self.metrics if key in m]
        return values[-1] if values else None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        points = [(m["step"], m[key]) for m in self.metrics if key in m]
        return [p[0] for p in points], [p[1] for p in points]


def load_run(path: Path) -> Run | None:
    if not (path / "config.yaml").is_file():
        return None
    metrics_file = path / "metrics.jsonl"
    metrics = []
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a killed run
    run = Run(path, OmegaConf.load(path / "config.yaml"), metrics)
    evaluations = sorted(
        (p for p in (path / "eval").glob("*/episodes.jsonl") if p.parent.name != ROBOT_TRIALS),
        key=lambda p: int("".join(c for c in p.parent.name if c.isdigit()) or 0),
    )
    robot = path / "eval" / ROBOT_TRIALS / "episodes.jsonl"
    if robot.is_file():
        run.robot_episodes = ResultsFile(robot).records()
    if evaluations:
        # results written before the parallel evaluator have no task field: shown as missing
        run.episodes = [r for r in ResultsFile(evaluations[-1]).records() if "task" in r]
    return run


def find_runs(root: Path) -> list[Run]:
    """``root`` itself, or every run directory below it (Hydra's and wandb's own config files skipped)."""
    if (root / "metrics.jsonl").is_file():
        candidates = [root]
    else:
        candidates = sorted(
            p.parent
            for p in root.rglob("metrics.jsonl")
            if not {".hydra", "wandb"} & set(p.relative_to(root).parts)
        )
    runs = [load_run(path) for path in candidates]
    return [run for run in runs if run is not None]


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def runs_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        episodes = run.episodes or run.robot_episodes
        success = summarize(episodes).overall.success_rate if episodes else None
        seconds = run.last("train/seconds_per_step")
        rows.append(
            [
                run.path.name,
                run.optimizer,
                run.config.env.name,
                str(run.last("step") or 0),
                MISSING if run.last("train/loss") is None else f"{run.last('train/loss'):.4f}",
                percent(success),
                str(len(episodes)) if episodes else MISSING,
                MISSING if seconds is None else f"{seconds:.3f}",
            ]
        )
    header = ["run", "optimizer", "env", "steps", "final loss", "success %", "episodes", "s / step"]
    return markdown_table(header, rows)


def optimizer_by_suite(runs: list[Run]) -> str:
    """Table A5 / Table 1 (LIBERO): success rate per optimizer (rows) and suite (columns), plus the mean."""
    libero = [run for run in runs if run.config.env.name != "libero_plus"]
    suites = sorted({run.suite for run in libero})
    cells: dict[tuple[str, str], float | None] = {}
    for run in libero:
        cells[(run.optimizer, run.suite)] = (
            summarize(run.episodes).overall.success_rate if run.episodes else None
        )
    optimizers = sorted({run.optimizer for run in libero})
    rows = []
    for optimizer in optimizers:
        values = [cells.get((optimizer, suite)) for suite in suites]
        known = [v for v in values if v is not None]
        average = sum(known) / len(known) if known and len(known) == len(values) else None
        rows.append([optimizer, *map(percent, values), percent(average)])
    return markdown_table(["optimizer", *suites, "average"], rows)


def plus_table(runs: list[Run]) -> str | None:
    """Table 1 (LIBERO-Plus part): per optimizer, the average and each perturbation's success rate."""
    plus = [run for run in runs if run.config.env.name == "libero_plus"]
    if not plus:
        return None
    episodes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in plus:
        episodes[run.optimizer] += run.episodes
    columns = ["LIBERO-Plus", *CATEGORY_COLUMNS.values()]
    rows = [
        [optimizer, *(percent(table1_row(records)[c]) for c in columns)]
        for optimizer, records in sorted(episodes.items())
    ]
    return markdown_table(["optimizer", *columns], rows)


def modality_table(runs: list[Run]) -> str | None:
    """Table A6: success per modality-wise assignment (vision, language, action)."""
    settings = {tuple(run.config.optimizer[m] for m in MODALITIES) for run in runs}
    if len(settings) < 4:  # more than the three configurations (i)–(iii): an ablation
        return None
    rows = []
    for run in sorted(runs, key=lambda r: tuple(r.config.optimizer[m] for m in MODALITIES)):
        success = summarize(run.episodes).overall.success_rate if run.episodes else None
        rows.append([*(run.config.optimizer[m] for m in MODALITIES), run.config.env.name, percent(success)])
    return markdown_table(["vision", "language", "action", "env", "success %"], rows)


def robot_table(runs: list[Run]) -> str | None:
    """Table 3: real-robot success per optimizer (rows) and task (columns), and the task average."""
    robot = [run for run in runs if run.robot_episodes]
    if not robot:
        return None
    tasks = list(dict.fromkeys(r["task"] for run in robot for r in run.robot_episodes))
    episodes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in robot:
        episodes[run.optimizer] += run.robot_episodes
    rows = []
    for optimizer, records in sorted(episodes.items()):
        tally = summarize(records).tasks
        rates = [
            tally[(ROBOT_GROUP, task)].success_rate if (ROBOT_GROUP, task) in tally else None
            for task in tasks
        ]
        average = sum(rates) / len(rates) if None not in rates else None
        trials = "/".join(
            str(tally[(ROBOT_GROUP, t)].episodes) if (ROBOT_GROUP, t) in tally else "0" for t in tasks
        )
        rows.append([optimizer, *map(percent, rates), percent(average), trials])
    return markdown_table(["optimizer", *tasks, "average", "trials per task"], rows)


def plot_over_training(runs: list[Run], keys: list[str], ylabel: str, path: Path) -> bool:
    series = [(run, key) for run in runs for key in keys if run.series(key)[0]]
    if not series:
        return False
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        for run in runs:
            steps, values = run.series(key)
            if steps:
                axis.plot(
                    steps,
                    values,
                    marker="o" if len(steps) < 20 else None,
                    label=run.label,
                )
        axis.set_title(key.split("/")[-1])
        axis.set_xlabel("training step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def rlvr_table(runs: list[Run]) -> str:
    """Table A2's results: test accuracy before training and at the end, and the final training reward."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.rlvr_panel, r.optimizer)):
        steps, accuracy = run.series("eval/accuracy")
        initial = accuracy[0] if steps and steps[0] == 0 else None
        rewards = run.series("reward")[1]
        tail = rewards[-max(1, len(rewards) // 10) :]  # the last tenth of the steps: less noise than one
        rows.append(
            [
                run.path.name,
                run.rlvr_panel,
                run.optimizer,
                str(run.last("step") or 0),
                percent(initial),
                percent(accuracy[-1] if steps else None),
                MISSING if not rewards else f"{sum(tail) / len(tail):.3f}",
            ]
        )
    header = ["run", "task · model · algorithm", "optimizer", "steps", "accuracy before %", "accuracy %"]
    return markdown_table([*header, "reward (last 10 % of steps)"], rows)


def trailing_mean(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / min(i + 1, window) for i in range(len(values))]


def plot_rlvr_curves(runs: list[Run], key: str, ylabel: str, path: Path, smooth: bool = False) -> bool:
    """Fig. 6: one panel per task · model · algorithm, one curve per optimizer."""
    panels = sorted({run.rlvr_panel for run in runs if run.series(key)[0]})
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for run in sorted(runs, key=lambda r: r.optimizer):
            steps, values = run.series(key)
            if run.rlvr_panel != panel or not steps:
                continue
            if smooth:  # per-step rewards are noisy: a trailing mean over a thirtieth of the run
                window = max(1, len(values) // 30)
                values = [
                    sum(values[max(0, i - window + 1) : i + 1]) / min(i + 1, window)
                    for i in range(len(values))
                ]
            axis.plot(steps, values, marker="o" if len(steps) < 20 else None, label=run.optimizer)
        axis.set_title(panel, fontsize=9)
        axis.set_xlabel("training step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def plot_step_time(runs: list[Run], path: Path) -> bool:
    timed = [(f"{run.optimizer}\n{run.suite}", run.last("train/seconds_per_step")) for run in runs]
    timed = [(label, value) for label, value in timed if value is not None]
    if not timed:
        return False
    figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(timed)), 3.5))
    axis.bar([label for label, _ in timed], [value for _, value in timed])
    axis.set_ylabel("seconds per training step")
    axis.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(root: Path, output: Path) -> Path:
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"{root} holds no run (no config.yaml below it)")
    output.mkdir(parents=True, exist_ok=True)
    vla = [run for run in runs if not run.is_rlvr]
    rlvr = [run for run in runs if run.is_rlvr]
    sections = [f"# Report: {root}", f"{len(runs)} run(s); missing results are shown as {MISSING}."]
    if vla:
        sections += vla_sections(vla, output)
    if rlvr:
        sections += rlvr_sections(rlvr, output)
    report = output / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    return report


def vla_sections(runs: list[Run], output: Path) -> list[str]:
    sections = ["## Runs", runs_table(runs)]
    sections += [
        "## Success rate by optimizer and suite (Table A5, Table 1 LIBERO)",
        optimizer_by_suite(runs),
    ]
    for title, table in (
        ("## LIBERO-Plus by perturbation (Table 1)", plus_table(runs)),
        ("## Modality-wise assignments (Table A6)", modality_table(runs)),
        ("## Real-robot trials (Table 3)", robot_table(runs)),
    ):
        if table:
            sections += [title, table]
    figures = {
        "success_vs_step.png": (
            "Success rate over training (Fig. 5b)",
            lambda p: plot_over_training(runs, ["eval/success_rate"], "success rate", p),
        ),
        **gradient_figures(runs, MODALITIES, "", "modality (Fig. 1a)", "modality (Fig. 2a, 7)"),
        "step_time.png": ("Seconds per training step (Fig. 1c, A1b)", lambda p: plot_step_time(runs, p)),
    }
    return sections + figure_sections(figures, output)


def rlvr_sections(runs: list[Run], output: Path) -> list[str]:
    sections = ["## RLVR runs (Table A2)", rlvr_table(runs)]
    figures = {
        "rlvr_accuracy_vs_step.png": (
            "RLVR test accuracy over training (Fig. 6)",
            lambda p: plot_rlvr_curves(runs, "eval/accuracy", "greedy test accuracy", p),
        ),
        "rlvr_reward_vs_step.png": (
            "RLVR training reward (trailing mean)",
            lambda p: plot_rlvr_curves(runs, "reward", "mean reward", p, smooth=True),
        ),
        **gradient_figures(runs, DECODER_MODULES, "rlvr_", "decoder module", "decoder module (Fig. 2a, 7)"),
    }
    return sections + figure_sections(figures, output)


def gradient_figures(
    runs: list[Run], modules: tuple[str, ...], prefix: str, erank_per: str, snr_per: str
) -> dict[str, tuple[str, Any]]:
    """Per-module gradient effective rank and SNR over training: ``<prefix>grad_erank.png``, ``..snr..``."""
    return {
        f"{prefix}grad_erank.png": (
            f"Gradient effective rank per {erank_per}",
            lambda p: plot_over_training(runs, [f"grad_erank/{m}" for m in modules], "effective rank", p),
        ),
        f"{prefix}grad_snr.png": (
            f"Gradient SNR per {snr_per}",
            lambda p: plot_over_training(runs, [f"grad_snr/{m}" for m in modules], "SNR", p),
        ),
    }


def figure_sections(figures: dict[str, tuple[str, Any]], output: Path) -> list[str]:
    sections = []
    for name, (title, draw) in figures.items():
        if draw(output / name):
            sections += [f"## {title}", f"![{title}]({name})"]
    return sections


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a run directory or a sweep directory")
    parser.add_argument("--output", type=Path, help="default: <root>/report")
    args = parser.parse_args(argv)
    report = write_report(args.root, args.output or args.root / "report")
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
