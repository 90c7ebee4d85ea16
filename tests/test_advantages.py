"""Advantage estimators against numbers derived by hand."""

import math

import torch

from rlcurr.algos.advantages import drgrpo_advantages, grpo_advantages, group_advantages, rloo_advantages


def test_grpo_binary_group():
    # r = [1, 0, 0, 0]: mean 0.25, population var = (0.75^2 + 3*0.25^2)/4 = 0.1875, std = 0.4330127
    # A = (r - 0.25)/0.4330127 = [1.7320508, -0.5773503 x3]
    a = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0)
    assert torch.allclose(a, torch.tensor([[math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)]]))


def test_grpo_mean_abs_is_dump_identity():
    # DUMP: for 0/1 rewards with success rate p, mean|A| = 2 sqrt(p(1-p)); p = 0.25 -> 0.8660254
    a = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0)
    assert math.isclose(a.abs().mean().item(), 2 * math.sqrt(0.25 * 0.75), rel_tol=1e-6)


def test_grpo_constant_group_is_zero():
    assert torch.equal(grpo_advantages(torch.tensor([[0.5, 0.5, 0.5]])), torch.zeros(1, 3))


def test_drgrpo_is_centred_reward():
    # r = [2, 0, 1]: mean 1 -> A = [1, -1, 0], no scaling
    assert torch.allclose(drgrpo_advantages(torch.tensor([[2.0, 0.0, 1.0]])), torch.tensor([[1.0, -1.0, 0.0]]))


def test_rloo_leave_one_out():
    # r = [1, 0, 0, 0]: A_0 = 1 - mean(0,0,0) = 1; A_1 = 0 - mean(1,0,0) = -1/3
    a = rloo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(a, torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]))
    # identity: RLOO = G/(G-1) * Dr.GRPO
    r = torch.tensor([[0.3, 1.2, -0.5, 2.0, 0.0]])
    assert torch.allclose(rloo_advantages(r), 5 / 4 * drgrpo_advantages(r))


def test_rows_are_independent_groups():
    r = torch.tensor([[1.0, 0.0], [5.0, 5.0]])
    a = grpo_advantages(r)  # row 0: mean 0.5, std 0.5 -> [1, -1] (up to eps); row 1: constant -> 0
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0]), atol=1e-5) and torch.equal(a[1], torch.zeros(2))


def test_group_advantages_list_interface():
    assert group_advantages("drgrpo", [3.0, 1.0]) == [1.0, -1.0]
