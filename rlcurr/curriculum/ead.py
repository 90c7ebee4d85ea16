"""Exploratory Annealed Decoding — EAD (as in the authors' code;
docs/curriculum.md, "EAD").

The sampling temperature falls along the answer: explore on the first tokens (which fix the
answer's direction), exploit later. At answer position t (0-based) and training step s:

    tau_t = 1.0                                             for t < warm_tokens (10)
    tau_t = max(1 + tau_max - exp(t / (20 d_s)), tau_min)   otherwise
    d_s   = min(d0 + alpha s, d_max)

Defaults tau_max = 1.2, tau_min = 0.1 (0.8 for 7B models), d0 = 25, alpha = 5, d_max = 40000.
Note that the first annealed position (t = 10) jumps *above* 1 (1 + 1.2 - e^(10/500) ~ 1.18),
then the temperature decays; d_s grows with training so the decay stretches over longer answers.
The optional truncated importance correction min(pi_old / pi_rollout, 2) belongs to the loss.
"""

from __future__ import annotations

import math

from rlcurr.curriculum.config import EADConfig


def ead_decay_length(step: int, cfg: EADConfig) -> float:
    """d_s = min(d0 + alpha * s, d_max)."""
    return min(cfg.d0 + cfg.alpha * step, cfg.d_max)


def ead_temperature(position: int, step: int, cfg: EADConfig) -> float:
    if position < cfg.warm_tokens:
        return 1.0
    d = ead_decay_length(step, cfg)
    x = position / (20.0 * d)
    if x > 700:  # exp would overflow; the temperature is long at its floor
        return cfg.tau_min
    return max(1.0 + cfg.tau_max - math.exp(x), cfg.tau_min)


def ead_temperatures(num_positions: int, step: int, cfg: EADConfig) -> list[float]:
    """Temperature for answer positions 0 .. num_positions - 1 at training step `step`."""
    return [ead_temperature(t, step, cfg) for t in range(num_positions)]
