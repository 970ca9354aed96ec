"""Activation checkpointing in every head: the same loss and gradients, fewer tensors kept for backward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_train

from vla_train.options import instantiate_policy

#: each head option on a small backbone it fits
PAIRS = [("tiny", "l1"), ("tiny", "l1_bridge"), ("qwen3_vl_tiny", "flow_tiny"), ("pi05_tiny", "pi05_tiny")]


def loss_gradients_and_saved_bytes(
    backbone: str, head: str, recompute: bool, tmp_path: Path
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    cfg = compose_train(
        [f"backbone={backbone}", f"head={head}", f"head.gradient_checkpointing={recompute}"], tmp_path
    )
    env = cfg.env
    torch.manual_seed(0)
    policy = instantiate_policy(
        cfg, action_dim=env.action_dim, state_dim=env.state_dim, chunk_size=env.chunk_size, random_init=True
    ).train()
    flags = {getattr(module, "gradient_checkpointing", None) for module in policy.head.modules()}
    assert recompute in flags
    size, batch_size = policy.backbone.image_size, 2
    batch = {
        "images": torch.rand(batch_size, len(env.cameras), 3, size, size),
        "instruction": ["lift the red cube", "lift"],
        "state": torch.randn(batch_size, env.state_dim),
        "actions": torch.randn(batch_size, env.chunk_size, env.action_dim),
        "action_is_pad": torch.zeros(batch_size, env.chunk_size, dtype=torch.bool),
    }
    saved = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(1)  # the heads' noise and flow times
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = policy(batch)
    loss.backward()
    gradients = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return loss.detach(), gradients, sum(saved)


@pytest.mark.parametrize(("backbone", "head"), PAIRS)
def test_checkpointed_heads_keep_the_math_and_save_less(backbone: str, head: str, tmp_path: Path) -> None:
    loss, gradients, saved = loss_gradients_and_saved_bytes(backbone, head, False, tmp_path / "a")
    loss_r, gradients_r, saved_r = loss_gradients_and_saved_bytes(backbone, head, True, tmp_path / "b")
    torch.testing.assert_close(loss_r, loss, rtol=0, atol=0)
    assert gradients_r.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradients_r[name], gradient, msg=name)
    assert saved_r < saved, (saved_r, saved)
