"""Which directories a training run may write into: new ones, and its own.

A run writes ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``eval/`` and ``wandb/`` into its
directory, and a resumed run truncates ``metrics.jsonl``. Pointed at a directory of the user's
(``hydra.run.dir=~/data``) that would overwrite their files. So the first run in a directory leaves
:data:`RUN_MARKER` there, and a directory holding anything else is refused before a file is written.
"""

from __future__ import annotations

from pathlib import Path

#: left in a run directory by the run that created it
RUN_MARKER = ".vla_train_run"

#: what Hydra itself writes into a job's directory before our code runs: a job that failed validation
#: leaves only these, and re-running it with the mistake fixed must not be refused
HYDRA_FILES = frozenset({".hydra", "train.log", "eval.log", "serve.log"})
HYDRA_SAVED_CONFIGS = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


class ForeignDirectory(FileExistsError):
    """The run directory holds files this project did not write."""


def is_run_directory(path: Path) -> bool:
    """A directory a run of ours created (marked), or one from before markers: its saved config next to
    its checkpoints."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def foreign_entries(path: Path) -> list[str]:
    """The entries of ``path`` that neither a run of ours nor Hydra wrote (empty when ``path`` is a run
    directory of ours, or does not exist)."""
    path = Path(path)
    if not path.exists() or is_run_directory(path):
        return []
    if not path.is_dir():
        return [path.name]
    foreign = []
    for entry in sorted(path.iterdir()):
        if entry.name == ".hydra" and entry.is_dir():
            foreign += [f".hydra/{e.name}" for e in entry.iterdir() if e.name not in HYDRA_SAVED_CONFIGS]
        elif entry.name not in HYDRA_FILES or not entry.is_file():
            foreign.append(entry.name)
    return foreign


def claim_run_directory(path: Path) -> None:
    """Create ``path`` (or accept it as one of ours) and mark it; refuse a directory of the user's
    untouched, naming what is in it."""
    path = Path(path)
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise ForeignDirectory(
            f"output_dir={path} is not a run directory of vla-train: it holds {shown}, which a run would "
            "overwrite. Nothing was written. Choose a new or empty directory (hydra.run.dir=<path>, or "
            "run_name=<name> for outputs/<name>)"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).touch()
