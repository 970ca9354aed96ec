"""RLVR tasks read local files in the hub datasets' own columns and never reach for the network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vla_train.rlvr.tasks import (
    GSM8K_INSTRUCTION,
    MATH_INSTRUCTION,
    ArithmeticTask,
    GSM8KTask,
    MathTask,
    write_arithmetic_task,
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_gsm8k_rows_are_chat_prompts_with_the_gold_number(tmp_path: Path) -> None:
    row = {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
           "answer": "48/2 = <<48/2=24>>24 in May.\n48+24 = <<48+24=72>>72\n#### 72"}  # fmt: skip
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [row])
    (sample,) = GSM8KTask(str(tmp_path / "gsm8k")).rows("train")
    assert sample["prompt"] == [{"role": "user", "content": f"{row['question']} {GSM8K_INSTRUCTION}"}]
    assert sample["answer"] == "72"
    assert GSM8KTask.reward([f"... #### {sample['answer']}"], [sample["answer"]]) == [1.0]


def test_math_keeps_the_chosen_levels_and_the_boxed_answer(tmp_path: Path) -> None:
    import datasets

    rows = [  # MATH-lighteval's columns
        {"problem": "What is $1/2 + 1/4$?", "solution": r"It is $\boxed{\frac{3}{4}}$.", "level": "Level 2",
         "type": "Prealgebra"},
        {"problem": r"Solve $2x = 1$.", "solution": r"So $x = \boxed{\frac{1}{2}}$.", "level": "Level 4",
         "type": "Algebra"},
    ]  # fmt: skip
    (tmp_path / "math").mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "math" / "test.parquet"))
    everything = MathTask(str(tmp_path / "math")).rows("test")
    assert [row["answer"] for row in everything] == [r"\frac{3}{4}", r"\frac{1}{2}"]
    (hard,) = MathTask(str(tmp_path / "math"), levels=[3, 4, 5]).rows("test")
    assert hard["prompt"][0]["content"] == f"Solve $2x = 1$. {MATH_INSTRUCTION}"
    assert MathTask.reward([r"\boxed{0.5}"], [hard["answer"]]) == [1.0]

    math500 = write_jsonl(tmp_path / "math500.jsonl", [{"problem": "p", "answer": "5", "solution": "s"}])
    assert MathTask(str(math500)).rows("test")[0]["answer"] == "5"  # MATH-500's own answer column
    with pytest.raises(ValueError, match=r"task\.levels=\[6\]"):
        MathTask(levels=[6])


def test_missing_local_sources_and_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such file"):
        GSM8KTask(str(tmp_path / "nope.jsonl")).rows("train")
    with pytest.raises(FileNotFoundError, match=r"no train\.jsonl"):
        GSM8KTask(str(tmp_path)).rows("train")
    write_jsonl(tmp_path / "bad" / "train.jsonl", [{"q": "1+1", "a": "2"}])
    with pytest.raises(ValueError, match=r"no column \['question', 'answer'\]"):
        GSM8KTask(str(tmp_path / "bad")).rows("train")


def test_the_arithmetic_task_is_gsm8ks_format_scored_by_the_last_number(tmp_path: Path) -> None:
    source = write_arithmetic_task(tmp_path / "arithmetic", examples=8, seed=3)
    first = json.loads((source / "train.jsonl").read_text().splitlines()[0])
    a, b = (int(n) for n in first["question"].rstrip("=").split("+"))
    assert first["answer"].endswith(f"#### {a + b}")
    task = ArithmeticTask(str(source), examples=8, seed=3)
    rows = task.rows("train")
    assert len(rows) == 8 and len(task.rows("test")) == 2
    row = rows[0]
    assert row["prompt"] == first["question"] and row["answer"] == first["answer"].split("#### ")[-1]
    assert ArithmeticTask.reward([f" {row['answer']}", "12 then 99"], [row["answer"], "12"]) == [1.0, 0.0]


def test_generated_arithmetic_files_are_reused_only_with_the_same_settings(tmp_path: Path) -> None:
    source = tmp_path / "sums"
    rows = ArithmeticTask(str(source), operands=5, examples=16).rows("train")
    assert len(rows) == 16 and all(int(row["answer"]) <= 8 for row in rows)
    assert len(ArithmeticTask(str(source), operands=5, examples=16).rows("test")) == 4  # reused as they are
    with pytest.raises(ValueError, match=r"task\.operands=7 \(files: 5\)"):
        ArithmeticTask(str(source), operands=7, examples=16).rows("train")
    user = tmp_path / "mine"  # files of the user's own in this format: read, never rewritten
    write_arithmetic_task(user, examples=8)
    (user / "generated.json").unlink()
    before = (user / "train.jsonl").read_text()
    assert len(ArithmeticTask(str(user), operands=3).rows("train")) == 8
    assert (user / "train.jsonl").read_text() == before


def test_unreadable_task_files_are_named(tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"question": "1+1=", "answer": "#### 2"}\n{"question": "2+2=", "ans')
    with pytest.raises(ValueError, match=rf"{re.escape(str(torn))}: not a readable \.jsonl file"):
        GSM8KTask(str(torn)).rows("train")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))}: the file is empty"):
        GSM8KTask(str(empty)).rows("train")
    unmarked = tmp_path / "unmarked.jsonl"
    unmarked.write_text('{"question": "1+1=", "answer": "two"}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(unmarked))}: a GSM8K solution without '####"):
        GSM8KTask(str(unmarked)).rows("train")


def test_arithmetic_files_appear_all_at_once_in_a_new_or_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(ArithmeticTask(str(empty), examples=8).rows("train")) == 8
    assert sorted(p.name for p in empty.iterdir()) == ["generated.json", "test.jsonl", "train.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no staging directory left behind
