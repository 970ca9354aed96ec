"""Test accuracy of an RLVR policy: greedy decoding in batches, scored by the task's own reward, every
example written to ``predictions.jsonl`` (prompt, completion, gold answer, reward)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def prompt_text(prompt: Any, tokenizer: Any) -> str:
    """A chat prompt through the model's template (the assistant turn opened), or plain text as it is."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def drop_overlong_prompts(rows: Any, tokenizer: Any, max_length: int | None, split: str) -> Any:
    """``rows`` without those whose prompt (through the chat template) exceeds ``max_length`` tokens, as
    verl's ``filter_overlong_prompts`` does for the paper's runs; how many went is logged."""
    if max_length is None:
        return rows
    kept = rows.filter(
        lambda row: (
            len(tokenizer(prompt_text(row["prompt"], tokenizer), add_special_tokens=False).input_ids)
            <= max_length
        )
    )
    if len(kept) < len(rows):
        log.info("%s split: %d of %d prompts longer than rl.max_prompt_length=%d tokens dropped",
                 split, len(rows) - len(kept), len(rows), max_length)  # fmt: skip
    if not len(kept):
        raise ValueError(f"rl.max_prompt_length={max_length}: no {split} prompt is that short")
    return kept


@torch.no_grad()
def evaluate_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    reward: Callable[..., list[float]],
    output_dir: Path,
    max_examples: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 1024,
) -> dict[str, float]:
    """``{"eval/accuracy", "eval/examples"}``; the predictions go to ``output_dir/predictions.jsonl``.

    Under torchrun every process decodes its share (every ``world``-th example) and the counts are
    summed, so an evaluation takes 1/world of the time and no process idles into a collective's timeout;
    process 0 then merges the shares' predictions in the examples' order."""
    output_dir.mkdir(parents=True, exist_ok=True)
    count = len(rows) if max_examples is None else min(max_examples, len(rows))
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    mine = list(range(rank, count, world))
    share = output_dir / (PREDICTIONS if world == 1 else f"predictions.rank{rank}.jsonl")
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues every prompt from its own last token
    device = next(model.parameters()).device
    correct = 0
    try:
        with share.open("w") as file:
            for start in range(0, len(mine), batch_size):
                batch = [rows[i] for i in mine[start : start + batch_size]]
                completions = _greedy_completions(model, tokenizer, batch, max_new_tokens, device)
                scores = reward(completions, [row["answer"] for row in batch])
                for row, completion, score in zip(batch, completions, scores, strict=True):
                    correct += score == 1.0
                    record = {"prompt": row["prompt"], "completion": completion, "answer": row["answer"]}
                    file.write(json.dumps({**record, "reward": score}) + "\n")
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    if world > 1:
        total = torch.tensor([correct], device=device, dtype=torch.long)
        dist.all_reduce(total)  # after every share's file is closed: process 0 may merge them next
        correct = int(total.item())
        if rank == 0:
            _merge_shares(output_dir, world, count)
    return {"eval/accuracy": correct / max(count, 1), "eval/examples": float(count)}


#: the predictions of one evaluation, one JSON line per example in the test split's order
PREDICTIONS = "predictions.jsonl"


def _greedy_completions(
    model: torch.nn.Module, tokenizer: Any, batch: Sequence[dict[str, Any]], max_new_tokens: int, device: Any
) -> list[str]:
    texts = [prompt_text(row["prompt"], tokenizer) for row in batch]
    inputs = tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False
    ).to(device)
    generated = model.generate(
        **inputs,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(generated[:, inputs["input_ids"].size(1) :], skip_special_tokens=True)


def _merge_shares(output_dir: Path, world: int, count: int) -> None:
    """Process ``r`` decoded examples ``r, r + world, ...``: interleave their files back into one."""
    shares = [output_dir / f"predictions.rank{rank}.jsonl" for rank in range(world)]
    lines = [share.read_text().splitlines() for share in shares]
    with (output_dir / PREDICTIONS).open("w") as file:
        for index in range(count):
            file.write(lines[index % world][index // world] + "\n")
    for share in shares:  # written by this evaluation a moment ago
        share.unlink()
