"""GMPO's loss: the geometric mean of token ratios, clipped in log space by the advantage's sign."""

from __future__ import annotations

import math

import torch

from vla_train.rlvr.gmpo import gmpo_loss


def test_on_policy_the_loss_is_minus_the_mean_advantage_and_its_gradient_is_grpos() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.2, 0.3]])).requires_grad_()
    advantages, mask = torch.tensor([1.0, -0.5]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, clipped = gmpo_loss(logps, logps.detach(), advantages, mask)
    torch.testing.assert_close(loss, -advantages.mean())
    assert clipped == 0
    loss.backward()
    # d/dlogp of −A·exp(mean logρ) at ρ = 1: −A / (|o| · B) for each completion token, 0 on padding
    expected = -(advantages / mask.sum(-1)).unsqueeze(1) * mask / 2
    torch.testing.assert_close(logps.grad, expected)


def test_ratios_average_geometrically_and_clip_pessimistically() -> None:
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    new = torch.tensor([[0.2, -0.1]])  # inside the clip range: the geometric mean exp(0.05)
    loss, clipped = gmpo_loss(new, old, torch.tensor([2.0]), mask)
    torch.testing.assert_close(loss, torch.tensor(-2.0 * math.exp(0.05)))
    assert clipped == 0

    far = torch.tensor([[1.0, -1.0]])  # both tokens beyond ±0.4
    positive, clipped = gmpo_loss(far, old, torch.tensor([1.0]), mask)
    # A > 0: the lower of each pair — 0.4 for the first token, −1.0 for the second
    torch.testing.assert_close(positive, torch.tensor(-math.exp((0.4 - 1.0) / 2)))
    assert clipped == 1.0
    negative, _ = gmpo_loss(far, old, torch.tensor([-1.0]), mask)
    # A < 0: the higher of each — 1.0 for the first, −0.4 for the second
    torch.testing.assert_close(negative, torch.tensor(math.exp((1.0 - 0.4) / 2)))


def test_clipped_tokens_pass_no_gradient_and_zero_advantages_none_at_all() -> None:
    logps = torch.tensor([[1.0, 0.1]], requires_grad=True)
    loss, _ = gmpo_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    loss.backward()
    assert logps.grad[0, 0] == 0 and logps.grad[0, 1] != 0
    logps.grad = None
    loss, _ = gmpo_loss(logps, torch.zeros(1, 2), torch.tensor([0.0]), torch.ones(1, 2))
    loss.backward()
    assert torch.equal(logps.grad, torch.zeros(1, 2))
