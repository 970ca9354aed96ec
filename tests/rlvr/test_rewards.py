"""Verifiable rewards on real-format GSM8K and MATH examples."""

from __future__ import annotations

import pytest

from vla_train.rlvr.rewards import gsm8k_answer, gsm8k_gold, gsm8k_reward, last_boxed, math_reward

#: an ``openai/gsm8k`` row as the hub stores it (calculator annotations and all)
GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def test_gsm8k_gold_is_the_number_after_the_marks() -> None:
    assert gsm8k_gold(GSM8K_SOLUTION) == "72"
    assert gsm8k_gold("... #### 1,250") == "1250"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no marks here")


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("48/2 = 24 in May, 24 + 48 = 72 in all.\n#### 72", 1.0),
        ("So the total is #### 72.00", 1.0),  # the same number
        ("#### $72", 1.0),
        ("#### 71", 0.0),
        ("The answer is 72.", 0.0),  # the format the prompt asks for is part of the reward
        ("#### 72\nWait, I made a mistake. #### 70", 0.0),  # the last answer counts
        ("#### 72 " + "x" * 400, 0.0),  # an early guess outside the final 300 characters
        ("", 0.0),
    ],
)
def test_gsm8k_reward_reads_the_last_answer_in_the_required_format(completion: str, reward: float) -> None:
    assert gsm8k_reward([completion], ["72"]) == [reward]


def test_gsm8k_reward_takes_chat_messages_and_handles_thousands() -> None:
    messages = [{"role": "assistant", "content": "It costs 1,250 dollars. #### 1,250"}]
    assert gsm8k_reward([messages, "#### 1250"], ["1250", "125"]) == [1.0, 0.0]
    assert gsm8k_answer("nothing") is None


def test_last_boxed_balances_braces() -> None:
    assert last_boxed(r"so \boxed{1} no, \boxed{\frac{\sqrt{3}}{2}} done") == r"\frac{\sqrt{3}}{2}"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None  # unclosed
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("gold", "completion", "reward"),
    [
        (r"\frac{1}{2}", r"Hence $x = \boxed{0.5}$.", 1.0),  # equivalent, not equal
        (r"\frac{1}{2}", r"$\boxed{\dfrac{1}{2}}$", 1.0),
        (r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{\sqrt{3}}{2}}", 1.0),
        (r"(3, -1)", r"\boxed{(3,-1)}", 1.0),
        (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}", 0.0),
        (r"10", r"The answer is 10.", 0.0),  # MATH's answers are boxed
    ],
)
def test_math_reward_compares_the_boxed_answer(gold: str, completion: str, reward: float) -> None:
    assert math_reward([completion], [gold]) == [reward]
