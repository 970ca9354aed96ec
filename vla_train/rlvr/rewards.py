"""Verifiable rewards: 1.0 for a completion whose final answer is right, else 0.0.

The rules are the ones the paper's verl runs score with (its ``reward_score/gsm8k.py`` and the MATH
scorer), written here as TRL reward functions — ``reward(completions, answer, **columns) -> list[float]``:

- **GSM8K**: the gold answer is the number after ``####`` in the dataset's solution; a completion is
  right when the last ``#### <number>`` it writes (in its final 300 characters, so a long ramble cannot
  smuggle an early guess) equals it, commas and ``$`` removed. The prompt asks for that format, and a
  completion without it earns nothing ("strict", verl's default).
- **MATH**: the completion's last ``\\boxed{...}`` against the gold answer, equal when ``math-verify``
  finds them mathematically equivalent (``\\frac{1}{2}`` = ``0.5`` = ``1/2``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: how much of a completion's end is searched for its answer (verl's ``_SOLUTION_CLIP_CHARS``)
ANSWER_WINDOW = 300
_GSM8K_ANSWER = re.compile(r"####\s*(-?[0-9.,$]+)")
_NUMBER = re.compile(r"-?[0-9][0-9.,]*")


def gsm8k_gold(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution (``openai/gsm8k``'s ``answer`` column)."""
    found = _GSM8K_ANSWER.findall(solution)
    if not found:
        raise ValueError(f"a GSM8K solution without '#### <number>': {solution[-80:]!r}")
    return _plain_number(found[-1])


def gsm8k_answer(completion: str) -> str | None:
    """The last ``#### <number>`` of a completion's final characters, or None."""
    found = _GSM8K_ANSWER.findall(completion[-ANSWER_WINDOW:])
    return _plain_number(found[-1]) if found else None


def last_number(completion: str) -> str | None:
    """The completion's last number, in any format (verl's "flexible" GSM8K method), or None."""
    found = _NUMBER.findall(completion[-ANSWER_WINDOW:])
    numbers = [n for n in found if n.strip(".,")]
    return _plain_number(numbers[-1]) if numbers else None


def _plain_number(text: str) -> str:
    text = text.replace(",", "").replace("$", "").rstrip(".")
    try:  # 18 == 18.0 == 18.00
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for index in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[opening + 1 : index]
    return None


def math_equivalent(gold: str, answer: str) -> bool:
    """``math-verify``'s equivalence of two LaTeX answers (no timeouts: they need the main thread)."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    answer_parsed = parse(f"${answer}$", parsing_timeout=None)
    if not gold_parsed or not answer_parsed:
        return gold.strip() == answer.strip()
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def completion_text(completion: Any) -> str:
    """TRL hands a reward function plain strings, or chat messages for conversational datasets."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion)


def gsm8k_reward(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
    """TRL reward function; ``answer``: the gold numbers (the dataset's column, :func:`gsm8k_gold`)."""
    pairs = zip(completions, answer, strict=True)
    return [float(gsm8k_answer(completion_text(c)) == str(gold)) for c, gold in pairs]


def last_number_reward(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
    """TRL reward function: the completion's last number against the gold one, no format required (the
    synthetic arithmetic task, where a tiny model must be able to earn reward by chance)."""
    pairs = zip(completions, answer, strict=True)
    return [float(last_number(completion_text(c)) == str(gold)) for c, gold in pairs]


def math_reward(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
    """TRL reward function; ``answer``: the gold answers in LaTeX (MATH's boxed answer)."""
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        boxed = last_boxed(completion_text(completion))
        rewards.append(float(boxed is not None and math_equivalent(str(gold), boxed)))
    return rewards
