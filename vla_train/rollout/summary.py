"""Success rates per task, per group (suite or perturbation category) and overall, with error counts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Tally:
    episodes: int = 0
    successes: int = 0
    errors: int = 0
    steps: int = 0

    def add(self, record: Mapping[str, Any]) -> None:
        self.episodes += 1
        self.successes += bool(record.get("success"))
        self.errors += record.get("error") is not None
        self.steps += int(record.get("steps") or 0)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass
class Summary:
    tasks: dict[tuple[str, str], Tally]  # (group, task) → tally
    groups: dict[str, Tally]
    overall: Tally

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat numbers for the metrics log: overall plus one success rate per group."""
        result = {
            f"{prefix}/success_rate": self.overall.success_rate,
            f"{prefix}/episodes": float(self.overall.episodes),
            f"{prefix}/errors": float(self.overall.errors),
            f"{prefix}/mean_steps": self.overall.steps / max(self.overall.episodes, 1),
        }
        if len(self.groups) > 1:
            result.update({f"{prefix}/success_rate/{g}": t.success_rate for g, t in self.groups.items()})
        return result

    def table(self, title: str = "evaluation") -> Any:
        """A rich table: one row per task, a subtotal per group, the total."""
        from rich.table import Table

        table = Table(title=title)
        for column in ("group", "task", "episodes", "success", "rate", "errors"):
            table.add_column(column, justify="right" if column not in ("group", "task") else "left")
        for group, tally in self.groups.items():
            for (task_group, task), task_tally in self.tasks.items():
                if task_group == group:
                    table.add_row(group, task, *_cells(task_tally))
            if len(self.groups) > 1:
                table.add_row(f"[bold]{group}[/bold]", "[bold]all[/bold]", *_cells(tally), end_section=True)
        table.add_row("[bold]total[/bold]", "", *_cells(self.overall))
        return table


def summarize(records: Iterable[Mapping[str, Any]]) -> Summary:
    tasks: dict[tuple[str, str], Tally] = defaultdict(Tally)
    groups: dict[str, Tally] = defaultdict(Tally)
    overall = Tally()
    for record in records:
        group = record.get("group") or ""
        tasks[(group, record["task"])].add(record)
        groups[group].add(record)
        overall.add(record)
    order = sorted(tasks)
    return Summary({key: tasks[key] for key in order}, {g: groups[g] for g in sorted(groups)}, overall)


def _cells(tally: Tally) -> list[str]:
    return [str(tally.episodes), str(tally.successes), f"{tally.success_rate:.1%}", str(tally.errors)]
