"""Learning-rate schedules as multipliers of the base LR (METHODS 9). All have linear warm-up.

progress p runs from 0 (end of warm-up) to 1 (last step); `floor` = min_lr_ratio.
  constant  1
  linear    1 - (1 - floor) p
  cosine    floor + (1 - floor) (1 + cos(pi p)) / 2
  wsd       1 until the last `decay_fraction` of steps, then linear down to floor (MiniCPM's
            warmup-stable-decay; the paper's exponential decay variant is left out)
  rex       floor + (1 - floor) (1 - p) / (1 - p/2)       (REX, Chen et al. 2021)
"""

from __future__ import annotations

import math

NAMES = ("constant", "linear", "cosine", "wsd", "rex")


def lr_multiplier(step: int, total_steps: int, name: str, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.0, decay_fraction: float = 0.2) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
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
