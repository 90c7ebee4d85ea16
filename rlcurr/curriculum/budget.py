"""Token-budget schedules and the length penalty — "Train Long, Think Short"
(docs/curriculum.md, "Budget tightening").

B(t) is the budget at training step t (0 at the first step). `start` = B0, `end` = B_min.
With `steps` = S (default: trainer.steps) and progress p(t) = min(t / (S - 1), 1), so that the
last step of a run of S steps uses `end`:

- exponential  B(t) = max(end, start * gamma ** floor(t / every))     (the paper's formula,
               T = `every`; `steps` is not used)
- linear       B(t) = start + (end - start) * p(t)
- cosine       B(t) = end + (start - end) * (1 + cos(pi * p(t))) / 2
- step         the linear schedule held constant for `every` steps at a time:
               B(t) = linear(every * floor(t / every)) — a staircase of equal drops.

Values are rounded to the nearest integer and never below 1. `per_distribution` replaces
start/end for the named distributions; shape, gamma, every and steps are shared.

The budget becomes the generation's max_tokens (plus `slack`) and feeds the length penalty.
The paper does not publish the exact length term; ours (`length_penalty`) is 0 within budget
and falls linearly past it, bounded: -weight * min((tokens - budget) / budget, cap). It is applied
by the `length_budget` reward (rlcurr/rewards/builtin.py) with weight = curriculum.budget.penalty
and cap = curriculum.budget.penalty_cap (bound as the reward's params by rlcurr.config); its
weight in the recipe's `rewards` list scales it again; the trainer passes each answer's budget
as a column.
Note that with slack = 0 generation stops at the budget, so the penalty only acts when the
slack lets answers run over.
"""

from __future__ import annotations

import math

from rlcurr.curriculum.config import BudgetConfig


def _progress(step: int, steps: int) -> float:
    return min(max(step, 0) / max(steps - 1, 1), 1.0)


def _round(x: float) -> int:
    return max(1, int(math.floor(x + 0.5)))  # half up, not banker's rounding


def schedule_value(step: int, shape: str, start: float, end: float, gamma: float, every: int, steps: int) -> int:
    """B(step) for one (start, end) pair; see the module docstring."""
    if shape == "exponential":
        return _round(max(end, start * gamma ** (max(step, 0) // every)))
    if shape == "linear":
        return _round(start + (end - start) * _progress(step, steps))
    if shape == "cosine":
        return _round(end + (start - end) * (1 + math.cos(math.pi * _progress(step, steps))) / 2)
    if shape == "step":
        return _round(start + (end - start) * _progress(every * (max(step, 0) // every), steps))
    raise ValueError(f"unknown budget shape {shape!r}")


def budget_at(step: int, cfg: BudgetConfig, total_steps: int, distribution: str | None = None) -> int:
    """Token budget at `step`, for `distribution` if it has its own start/end."""
    start, end = cfg.start, cfg.end
    if distribution is not None and cfg.per_distribution and distribution in cfg.per_distribution:
        r = cfg.per_distribution[distribution]
        start, end = r.start, r.end
    return schedule_value(step, cfg.shape, start, end, cfg.gamma, cfg.every, cfg.steps or total_steps)


def length_penalty(num_tokens: int, budget: int, weight: float, cap: float) -> float:
    """A reward term <= 0: 0 within budget, -weight * (overshoot / budget) past it, floored at
    -weight * cap. E.g. budget 100, weight 0.5, cap 1: 150 tokens -> -0.25; 300 tokens -> -0.5."""
    over = max(0, num_tokens - budget) / max(budget, 1)
    return -weight * min(over, cap)
