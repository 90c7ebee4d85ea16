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
