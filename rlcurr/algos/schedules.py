"""Learning-rate schedules as multipliers of the base LR (docs/algorithms.md, "Learning-rate schedules").
All have linear warm-up.

progress p runs from 0 (end of warm-up) to 1 (last step); `floor` = min_lr_ratio.
  constant  1
  linear    1 - (1 - floor) p
  cosine    floor + (1 - floor) (1 + cos(pi p)) / 2
  wsd       1 until the last `decay_fraction` of steps, then linear down to floor (MiniCPM's
            warmup-stable-decay; the paper's exponential decay variant is left out)
  rex       floor + (1 - floor) (1 - p) / (1 - p/2)       (REX, Chen et al. 2021)
  power     max(floor, ((t + 1) / W) ** -b) for step t >= W = max(warmup_steps, 1), b =
            `power_exponent` (default 0.51: the Power scheduler of Shen et al. 2024, lr ~ n^-0.51).
            Continuous with the warm-up, whose (t + 1) / W reaches 1 at t = W - 1. It does not use
            total_steps, so it suits runs of unknown length like wsd. Variant: the paper's power
            law is in tokens seen with a batch-size factor (a = 4.6, muP); here it is in steps and
            peaks at the base LR where the warm-up ends. The paper's final decay phase is left out.
"""

from __future__ import annotations

import math

NAMES = ("constant", "linear", "cosine", "wsd", "rex", "power")


def lr_multiplier(step: int, total_steps: int, name: str, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.0, decay_fraction: float = 0.2, power_exponent: float = 0.51) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "power":
        return max(min_lr_ratio, ((step + 1) / max(warmup_steps, 1)) ** -power_exponent)
    span = max(total_steps - warmup_steps - 1, 1)
    p = min(max((step - warmup_steps) / span, 0.0), 1.0)
    floor = min_lr_ratio
    if name == "constant":
        return 1.0
    if name == "linear":
        return 1 - (1 - floor) * p
    if name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    if name == "wsd":
        decay_start = 1 - decay_fraction
        return 1.0 if p <= decay_start else 1 - (1 - floor) * (p - decay_start) / decay_fraction
    if name == "rex":
        return floor + (1 - floor) * (1 - p) / (1 - p / 2)
    raise ValueError(f"unknown schedule {name!r}; choose from {NAMES}")


def schedule_multiplier(step: int, total_steps: int, cfg) -> float:
    """`lr_multiplier` with every parameter from a `learner.schedule` config (ScheduleConfig)."""
    return lr_multiplier(step, total_steps, cfg.name, cfg.warmup_steps, cfg.min_lr_ratio, cfg.decay_fraction,
                         cfg.power_exponent)
