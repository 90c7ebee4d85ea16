"""Token-budget schedules, the length penalty, and EAD temperatures
(docs/curriculum.md, "Budget tightening", and "EAD")."""

import math

import pytest
from pydantic import ValidationError

from rlcurr.curriculum.budget import budget_at, length_penalty
from rlcurr.curriculum.config import BudgetConfig, EADConfig
from rlcurr.curriculum.ead import ead_decay_length, ead_temperature, ead_temperatures


def test_exponential():
    cfg = BudgetConfig(shape="exponential", start=256, end=64, gamma=0.7, every=1)
    # B(t) = max(64, 256 * 0.7^t): 256, 179.2 -> 179, 125.44 -> 125, 87.808 -> 88, 61.47 -> floor 64
    assert [budget_at(t, cfg, 100) for t in range(6)] == [256, 179, 125, 88, 64, 64]
    stepped = BudgetConfig(shape="exponential", start=256, end=64, gamma=0.7, every=2)
    # T = 2: floor(t / 2) = 0, 0, 1, 1, 2 -> 256, 256, 179, 179, 125
    assert [budget_at(t, stepped, 100) for t in range(5)] == [256, 256, 179, 179, 125]


def test_linear():
    cfg = BudgetConfig(shape="linear", start=256, end=56, steps=11)
    # progress = t / (11 - 1): t = 5 -> 256 - 200 * 0.5 = 156; t = 10 (last step) -> 56; clamped after
    assert budget_at(0, cfg, 999) == 256
    assert budget_at(5, cfg, 999) == 156
    assert budget_at(3, cfg, 999) == 196  # 256 - 200 * 0.3
    assert budget_at(10, cfg, 999) == 56
    assert budget_at(20, cfg, 999) == 56


def test_cosine():
    cfg = BudgetConfig(shape="cosine", start=256, end=56, steps=11)
    # B = 56 + 200 (1 + cos(pi p)) / 2
    assert budget_at(0, cfg, 0) == 256
    assert budget_at(5, cfg, 0) == 156  # cos(pi / 2) = 0
    # t = 2: p = 0.2, cos(0.2 pi) = 0.809017 -> 56 + 200 * 0.9045085 = 236.90 -> 237
    assert budget_at(2, cfg, 0) == 237
    assert budget_at(10, cfg, 0) == 56


def test_step_is_a_linear_staircase():
    cfg = BudgetConfig(shape="step", start=256, end=56, steps=11, every=3)
    # linear evaluated at 3 * floor(t / 3): t = 0..2 -> 256; 3..5 -> p 0.3 -> 196; 6..8 -> 136; 9, 10 -> 76
    assert [budget_at(t, cfg, 0) for t in range(11)] == [256] * 3 + [196] * 3 + [136] * 3 + [76] * 2


def test_default_steps_is_total_steps_and_per_distribution():
    cfg = BudgetConfig(shape="linear", start=200, end=100, per_distribution={"hard": {"start": 400, "end": 300}})
    assert budget_at(5, cfg, total_steps=11) == 150
    assert budget_at(5, cfg, total_steps=11, distribution="hard") == 350
    assert budget_at(5, cfg, total_steps=11, distribution="other") == 150


def test_exponential_must_decay():
    with pytest.raises(ValidationError):
        BudgetConfig(shape="exponential", start=64, end=256)


def test_length_penalty():
    assert length_penalty(80, 100, weight=0.5, cap=1.0) == 0.0  # within budget
    assert length_penalty(100, 100, weight=0.5, cap=1.0) == 0.0
    assert length_penalty(150, 100, weight=0.5, cap=1.0) == pytest.approx(-0.25)  # 50 % over
    assert length_penalty(300, 100, weight=0.5, cap=1.0) == pytest.approx(-0.5)  # capped at 100 % over


# ------------------------------------------------- EAD (docs/curriculum.md, "EAD")


def test_ead_temperatures_by_hand():
    cfg = EADConfig()  # tau_max 1.2, tau_min 0.1, d0 25, alpha 5, d_max 40000
    # step 0: d = 25, so exp(t / 500)
    temps = ead_temperatures(600, 0, cfg)
    assert temps[:10] == [1.0] * 10  # t < 10
    assert temps[10] == pytest.approx(2.2 - math.exp(10 / 500))  # 1.1797987: jumps above 1
    assert temps[10] == pytest.approx(1.1797987, abs=1e-7)
    assert temps[250] == pytest.approx(2.2 - math.exp(0.5))  # 0.5512787
    assert temps[500] == 0.1  # 2.2 - e < 0.1 -> tau_min
    # step 15: d = 25 + 75 = 100, exp(t / 2000): t = 1000 gives the same 0.5512787
    assert ead_temperature(1000, 15, cfg) == pytest.approx(2.2 - math.exp(0.5))
    assert ead_decay_length(10**6, cfg) == 40000  # d_max
    assert ead_temperature(10**9, 0, cfg) == 0.1  # no overflow far out
