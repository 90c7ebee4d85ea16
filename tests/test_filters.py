"""DAPO zero-variance filter and D3S down-sampling
(docs/curriculum.md, "DAPO dynamic sampling", and "D3S")."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcurr.curriculum.filters import (
    DynamicSamplingExhausted,
    d3s_num_keep,
    d3s_schedule,
    d3s_select_answers,
    d3s_token_mask,
    dapo_filter,
)
from rlcurr.errors import UserError
from rlcurr.types import Completion, Prompt, ScoredGroup


def group(rewards, dist="d"):
    c = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
    return ScoredGroup(prompt=Prompt(uid="u", distribution=dist, question="q", answer="a"), prompt_ids=[1],
                       completions=[c] * len(rewards), rewards=list(rewards), reward_parts={}, max_tokens=4)


def test_dapo_filter_drops_zero_variance_groups():
    groups = [group([1, 1, 1]), group([0, 1, 0]), group([0, 0, 0]), group([0.5, 0.5]), group([0.2, 0.3])]
    kept, dropped = dapo_filter(groups)
    assert [g.rewards for g in kept] == [[0, 1, 0], [0.2, 0.3]]
    assert [g.rewards for g in dropped] == [[1, 1, 1], [0, 0, 0], [0.5, 0.5]]


def test_dynamic_sampling_exhausted_is_a_user_error_with_a_way_out():
    e = DynamicSamplingExhausted(rounds=4, have=5, need=8)
    assert isinstance(e, UserError)
    assert "4 generation round" in str(e) and "5 of the 8" in str(e)
    assert "curriculum.dynamic_sampling.max_rounds" in str(e)


def _var(vals):
    return float(np.var(vals)) if vals else 0.0


def test_d3s_select_beats_alternating_on_skewed_advantages():
    adv = [4.0, 0.0, -1.0, 0.0, -1.0, -1.0]
    # candidates "a lowest + (3 - a) highest" (sorted: -1 -1 -1 0 0 4):
    #   a=0 {0, 0, 4}: var 3.556   a=1 {-1, 0, 4}: var 4.667
    #   a=2 {-1, -1, 4}: mean 2/3, var ((25/9) * 2 + 100/9) / 3 = 5.556   a=3 {-1, -1, -1}: 0
    # alternating most positive / most negative would take {4, -1, 0} (4.667)
    idx = d3s_select_answers(adv, 3)
    assert sorted(adv[i] for i in idx) == [-1.0, -1.0, 4.0]
    assert _var([adv[i] for i in idx]) == pytest.approx(50 / 9)
    assert d3s_select_answers(adv, 6) == list(range(6))
    assert d3s_select_answers(adv, 2) == [0, 2]  # the extremes; ties go to the first -1


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=8), st.integers(1, 8))
def test_d3s_select_is_optimal_against_brute_force(adv, m):
    m = min(m, len(adv))
    idx = d3s_select_answers(adv, m)
    assert len(idx) == m and len(set(idx)) == m
    best = max(_var([adv[i] for i in c]) for c in itertools.combinations(range(len(adv)), m))
    assert _var([adv[i] for i in idx]) == pytest.approx(best, abs=1e-9)


def test_d3s_num_keep():
    assert d3s_num_keep(8, 0.5) == 4
    assert d3s_num_keep(8, 0.1) == 2  # at least two answers
    assert d3s_num_keep(8, 1.0) == 8


def test_d3s_token_mask_by_hand():
    adv_B = torch.tensor([1.0, -2.0])
    entropy_BT = torch.tensor([[0.5, 1.0, 0.1], [0.2, 0.3, 9.0]])
    mask_BT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # |A| H = [[0.5, 1.0, 0.1], [0.4, 0.6, (18, padding)]]; 5 valid tokens, keep ceil(0.4 * 5) = 2
    out = d3s_token_mask(adv_B, entropy_BT, mask_BT, 0.4)
    assert out.tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    assert out.dtype == mask_BT.dtype
    # a [B, T] advantage and a bool mask work too; keep_frac 1 keeps every valid token
    adv_BT = adv_B[:, None].expand(2, 3)
    bool_out = d3s_token_mask(adv_BT, entropy_BT, mask_BT.bool(), 0.4)
    assert bool_out.tolist() == [[False, True, False], [False, True, False]]
    assert torch.equal(d3s_token_mask(adv_B, entropy_BT, mask_BT, 1.0), mask_BT)


def test_d3s_schedule_is_linear_in_progress():
    # [n, k] = (1 - p) [0.5, 0.2] + p [1.0, 1.0]; p = 0.25 -> [0.625, 0.4]
    assert d3s_schedule(0.25, 0.5, 1.0, 0.2, 1.0) == pytest.approx((0.625, 0.4))
    assert d3s_schedule(0.0, 0.5, 1.0, 0.2, 1.0) == pytest.approx((0.5, 0.2))
    assert d3s_schedule(2.0, 0.5, 1.0, 0.2, 1.0) == pytest.approx((1.0, 1.0))  # clamped
