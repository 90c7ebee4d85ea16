"""LR schedules at chosen steps (total 11 steps, warm-up 1 -> progress p = (t-1)/9)."""

import math

import pytest

from rlcurr.algos.schedules import lr_multiplier


@pytest.mark.parametrize("name", ["constant", "linear", "cosine", "wsd", "rex"])
def test_warmup_is_linear(name):
    # warm-up of 4 steps: (t+1)/4
    assert [lr_multiplier(t, 20, name, warmup_steps=4) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_values_after_warmup():
    f = lambda t, name, **kw: lr_multiplier(t, 11, name, warmup_steps=1, **kw)
    # t=1 -> p=0; t=5.5 would be p=0.5; use t=10 -> p=1 and t=4 -> p=1/3
    assert f(10, "linear") == pytest.approx(0.0)
    assert f(4, "linear") == pytest.approx(2 / 3)
    assert f(4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))  # 0.75
    assert f(10, "cosine", min_lr_ratio=0.1) == pytest.approx(0.1)
    # rex at p=1/3: (2/3)/(1-1/6) = 0.8
    assert f(4, "rex") == pytest.approx(0.8)
    # wsd, decay over the last 20%: flat until p=0.8, then linear to 0; p=8/9 -> 1 - (8/9-0.8)/0.2 = 5/9
    assert f(7, "wsd") == 1.0
    assert f(9, "wsd") == pytest.approx(5 / 9)
    assert f(10, "wsd") == pytest.approx(0.0)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="choose from"):
        lr_multiplier(0, 10, "triangle")


def test_power_schedule():
    # Power scheduler (Shen et al. 2024) as a multiplier: after a warm-up of W steps,
    # m(t) = max(floor, ((t + 1) / W) ** -b), b = power_exponent; continuous with the warm-up's
    # (t + 1) / W, which reaches 1 at t = W - 1.
    f = lambda t, **kw: lr_multiplier(t, 100, "power", warmup_steps=4, **kw)
    assert [f(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # b = 0.5: t = 15 -> (16/4)^-0.5 = 1/2; t = 63 -> (64/4)^-0.5 = 1/4
    assert f(15, power_exponent=0.5) == pytest.approx(0.5)
    assert f(63, power_exponent=0.5) == pytest.approx(0.25)
    assert f(63, power_exponent=0.5, min_lr_ratio=0.3) == pytest.approx(0.3)  # the floor
    # default b = 0.51: t = 15 -> 4^-0.51 = 2^-1.02 = 0.49311
    assert f(15) == pytest.approx(2 ** -1.02)
    # no warm-up: W counts as 1, m(t) = (t + 1)^-b; t = 3, b = 0.5 -> 1/2
    assert lr_multiplier(3, 100, "power", power_exponent=0.5) == pytest.approx(0.5)


def test_schedule_multiplier_reads_every_config_field():
    from rlcurr.algos.schedules import schedule_multiplier
    from rlcurr.config import ScheduleConfig

    cfg = ScheduleConfig(name="power", warmup_steps=4, power_exponent=0.5)
    assert schedule_multiplier(15, 100, cfg) == pytest.approx(0.5)  # (16 / 4) ** -0.5
