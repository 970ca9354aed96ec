"""RLVR tasks: where the problems come from, how each becomes a prompt, and how its answers are scored.

A task yields a ``datasets.Dataset`` with the columns TRL's ``GRPOTrainer`` reads — ``prompt`` (one
chat user turn, so the model's own chat template frames it) and ``answer`` (the gold answer, handed
to :attr:`RLVRTask.reward`). Prompts are the paper's verl runs' (its ``examples/data_preprocess``):
the problem, then an instruction that fixes where the final answer goes.

``source`` is a hub id (downloaded into ``HF_HOME``) or a local ``.jsonl``/``.json``/``.parquet`` file or
directory of them in the hub dataset's own columns; a local source that is missing is an error naming
it, never a download.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vla_train.rlvr.rewards import gsm8k_gold, gsm8k_reward, last_boxed, last_number_reward, math_reward

#: verl's examples/data_preprocess/gsm8k.py
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
#: the paper's RL/verl/examples/data_preprocess/math_dataset.py
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}

Reward = Callable[..., list[float]]


def load_rows(source: str, split: str, config: str | None = None) -> Any:
    """``split`` of a hub dataset, or of local files (a file, or a directory of ``<split>.*`` files)."""
    import datasets

    path = Path(source).expanduser()
    local = path.suffix in LOCAL_FORMATS or source.startswith((".", "/", "~")) or path.exists()
    if not local:
        return datasets.load_dataset(source, config, split=split)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.stem == split and f.suffix in LOCAL_FORMATS)
        if not files:
            raise FileNotFoundError(f"{path} has no {split}.jsonl, {split}.json or {split}.parquet")
        path = files[0]
    if not path.is_file():
        raise FileNotFoundError(f"task source {path}: no such file (a hub id has no leading '.', '/' or '~')")
    if path.suffix not in LOCAL_FORMATS:
        raise ValueError(f"task source {path}: must be one of {sorted(LOCAL_FORMATS)}")
    if path.stat().st_size == 0:
        raise ValueError(f"task source {path}: the file is empty")
    try:
        return datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    except (
        Exception
    ) as error:  # a torn line, not JSON, not parquet: whatever the library raises, name the file
        cause = error.__cause__ or error
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ValueError(f"task source {path}: not a readable {path.suffix} file ({first})") from error


def chat_prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def convert_rows(table: Any, convert: Callable[[dict[str, Any]], dict[str, Any]], source: str) -> Any:
    """``table.map(convert)`` to the ``prompt``/``answer`` columns; a row that does not convert is named
    with its source, not left as a bare parsing error."""

    def checked(row: dict[str, Any]) -> dict[str, Any]:
        try:
            return convert(row)
        except ValueError as error:
            raise ValueError(f"task source {source}: {error}") from error

    return table.map(checked, remove_columns=table.column_names)


class RLVRTask:
    """Base class of ``task`` options: :meth:`rows` gives ``prompt``/``answer`` rows for a split."""

    reward: Reward

    def rows(self, split: str) -> Any:
        raise NotImplementedError


class GSM8KTask(RLVRTask):
    """GSM8K (``openai/gsm8k``, config ``main``): the gold answer is the number after ``####``."""

    reward = staticmethod(gsm8k_reward)

    def __init__(self, source: str = "openai/gsm8k", config: str | None = "main") -> None:
        self.source, self.config = source, config

    def rows(self, split: str) -> Any:
        table = load_rows(self.source, split, self.config)
        _require_columns(table, ("question", "answer"), self.source)
        return convert_rows(
            table,
            lambda row: {
                "prompt": chat_prompt(f"{row['question']} {GSM8K_INSTRUCTION}"),
                "answer": gsm8k_gold(row["answer"]),
            },
            self.source,
        )


class MathTask(RLVRTask):
    """MATH (``DigitalLearningGmbH/MATH-lighteval``, the copy the paper's runs read), optionally only some
    difficulty levels (the paper: 3–5); the gold answer is the solution's last ``\\boxed{}``. MATH-500
    (``HuggingFaceH4/MATH-500``) has an ``answer`` column, which is used as it is."""

    reward = staticmethod(math_reward)

    def __init__(
        self,
        source: str = "DigitalLearningGmbH/MATH-lighteval",
        config: str | None = None,
        levels: Sequence[int] | None = None,
    ) -> None:
        if levels is not None and not set(levels) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"task.levels={list(levels)}: MATH's levels are 1-5")
        self.source, self.config, self.levels = source, config, levels

    def rows(self, split: str) -> Any:
        table = load_rows(self.source, split, self.config)
        _require_columns(table, ("problem",), self.source)
        if self.levels is not None:
            _require_columns(table, ("level",), self.source)
            wanted = {f"Level {level}" for level in self.levels}
            table = table.filter(lambda row: row["level"] in wanted)
        has_answer = "answer" in table.column_names
        if not has_answer:
            _require_columns(table, ("solution",), self.source)
        return convert_rows(
            table,
            lambda row: {
                "prompt": chat_prompt(f"{row['problem']} {MATH_INSTRUCTION}"),
                "answer": row["answer"] if has_answer else _boxed_answer(row["solution"]),
            },
            self.source,
        )


def _boxed_answer(solution: str) -> str:
    answer = last_boxed(solution)
    if answer is None:
        raise ValueError(f"a MATH solution without \\boxed{{}}: {solution[-80:]!r}")
    return answer


def _require_columns(table: Any, columns: Sequence[str], source: str) -> None:
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise ValueError(f"task source {source}: no column {missing} (it has {table.column_names})")


class ArithmeticTask(RLVRTask):
    """Sums ``"a+b="`` of numbers below ``operands``, as plain text (no chat template), scored by the
    completion's last number: a verifiable task a tiny random model earns reward on by chance — the
    offline stand-in for GSM8K. Its files are GSM8K's format (``question``, ``answer`` ending
    ``#### <n>``), written by :func:`write_arithmetic_task` into an empty ``source`` with ``generate``,
    with the settings they were made with in ``generated.json``: other settings over them are an error,
    not a silent reuse."""

    reward = staticmethod(last_number_reward)

    def __init__(
        self, source: str, generate: bool = True, examples: int = 256, seed: int = 0, operands: int = 10
    ) -> None:
        if not 2 <= operands <= 10_000:
            raise ValueError(f"task.operands={operands}: must be 2-10000 (sums of numbers below it)")
        if examples < 4:
            raise ValueError(f"task.examples={examples}: must be >= 4 (a quarter more is the test split)")
        self.source, self.generate = source, generate
        self.settings = {"examples": examples, "seed": seed, "operands": operands}

    def rows(self, split: str) -> Any:
        directory = Path(self.source).expanduser()
        if self.generate:
            self._generate(directory)
        table = load_rows(self.source, split)
        _require_columns(table, ("question", "answer"), self.source)
        return convert_rows(
            table, lambda row: {"prompt": row["question"], "answer": gsm8k_gold(row["answer"])}, self.source
        )

    def _generate(self, directory: Path) -> None:
        """Write the files into a new or empty directory, all at once (a staging directory renamed into
        place: a concurrent or interrupted run never reads half of them); check existing ones."""
        if not directory.exists() or not any(directory.iterdir()):
            staging = directory.parent / f".{directory.name}.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)  # our own, left by a killed run of this process id
            write_arithmetic_task(staging, **self.settings)
            try:
                staging.replace(directory)  # POSIX: replaces a missing or empty directory atomically
            except OSError:  # another run wrote it first: theirs is checked below
                shutil.rmtree(staging, ignore_errors=True)
        manifest = directory / GENERATED
        if not manifest.is_file():
            return  # the user's own files in this format
        made = json.loads(manifest.read_text())
        if made != self.settings:
            changed = ", ".join(f"task.{k}={v} (files: {made.get(k)})" for k, v in self.settings.items()
                                if made.get(k) != v)  # fmt: skip
            raise ValueError(
                f"task.source={directory} was generated with other settings: {changed}; point "
                "task.source at another directory"
            )


#: the settings :class:`ArithmeticTask` generated a directory's files with
GENERATED = "generated.json"


def write_arithmetic_task(directory: Path, examples: int = 256, seed: int = 0, operands: int = 10) -> Path:
    """``train.jsonl`` (``examples`` rows) and ``test.jsonl`` (a quarter as many) of
    :class:`ArithmeticTask` in ``directory``, and ``generated.json`` with these settings."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, count in (("train", examples), ("test", max(examples // 4, 1))):
        with (directory / f"{split}.jsonl").open("w") as file:
            for _ in range(count):
                a, b = rng.randrange(operands), rng.randrange(operands)
                row = {"question": f"{a}+{b}=", "answer": f"{a}+{b}={a + b}\n#### {a + b}"}
                file.write(json.dumps(row) + "\n")
    settings = {"examples": examples, "seed": seed, "operands": operands}
    (directory / GENERATED).write_text(json.dumps(settings) + "\n")
    return directory
