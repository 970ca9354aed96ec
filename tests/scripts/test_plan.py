"""The planner's numbers are what a run really holds: checked against a real tiny policy and optimizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_train
from hydra.utils import instantiate
from plan import main

from vla_train.optim.spectral import assign_owners
from vla_train.options import instantiate_policy
from vla_train.planning import footprint, plan

TINY = ["trainer=tiny", "backbone=tiny", "head=l1", "optimizer=pion"]


def test_state_bytes_equal_a_real_policy_and_optimizer_after_a_step(tmp_path: Path) -> None:
    cfg = compose_train(TINY, tmp_path)
    run = footprint(cfg)
    env = cfg.env
    policy = instantiate_policy(
        cfg, action_dim=env.action_dim, state_dim=env.state_dim, chunk_size=env.chunk_size, random_init=True
    )
    rules = policy.optimizer_rules()
    optimizer = instantiate(cfg.optimizer)(
        policy, rules.modality_rules, adamw_patterns=rules.adamw_patterns, per_head_rules=rules.per_head_rules
    )
    for param in policy.parameters():
        param.grad = torch.randn_like(param) if param.requires_grad else None
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert run.optimizer_state == sum(t.numel() * t.element_size() for t in state)
    assert run.weights == sum(p.numel() * p.element_size() for p in policy.parameters())
    assert run.gradients == sum(p.numel() * 4 for p in policy.parameters() if p.requires_grad)
    assert run.activations_per_sample is None  # not measured unless asked


def test_activations_and_the_per_gpu_split(tmp_path: Path) -> None:
    cfg = compose_train(TINY, tmp_path)
    run = footprint(cfg, measure_activations=True)
    assert run.activations_per_sample > 0
    ddp, fsdp = plan(run, gpus=4, micro_batch=2, bf16_activations=False)
    ddp_half = plan(run, gpus=4, micro_batch=1, bf16_activations=False)[0]
    assert ddp.activations == pytest.approx(2 * ddp_half.activations)
    assert fsdp.optimizer_state == pytest.approx(ddp.optimizer_state / 4)
    assert fsdp.activations == ddp.activations and fsdp.total < ddp.total
    owners = assign_owners(run.spectral_blocks, 4)
    loads = [sum(m for m, o in zip(run.spectral_macs, owners, strict=True) if o == r) for r in range(4)]
    assert ddp.spectral_macs_per_rank == max(loads) < sum(run.spectral_macs)


def test_the_script_says_what_fits(capsys) -> None:
    rows = main([*TINY, "trainer.batch_size=8", "--gpus", "2", "--gpu-memory", "0.0001"])
    assert [row["fits"] for row in rows] == ["no", "no"]
    rows = main([*TINY, "trainer.batch_size=8", "--gpus", "2", "--gpu-memory", "80"])
    assert [row["fits"] for row in rows] == ["yes, before activations"] * 2
    assert "Newton–Schulz" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*TINY, "trainer.batch_size=5", "--gpus", "2"])  # the batch does not split over 2 GPUs
