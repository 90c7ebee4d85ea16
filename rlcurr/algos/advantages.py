"""Group-relative advantage estimators (pure functions on a [B, G] reward tensor).

B = prompts (groups), G = answers per prompt. Each returns one scalar advantage per answer,
broadcast over its tokens by the loss.

- grpo:   A = (r - mean_G r) / (std_G r + eps)      std is the population std (ddof = 0), so
          that for 0/1 rewards mean|A| of a group = 2 sqrt(p(1-p)), as DUMP (METHODS 1) uses.
          (verl and TRL divide by the Bessel-corrected std; the difference is a factor
          sqrt(G/(G-1)) that clip and Adam mostly absorb.)
- drgrpo: A = r - mean_G r                          (Dr.GRPO: no std division)
- rloo:   A = r - mean of the *other* G-1 rewards = G/(G-1) (r - mean_G r)
"""

from __future__ import annotations

import torch

EPS = 1e-6


def grpo_advantages(rewards_BG: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    mean_B1 = rewards_BG.mean(dim=1, keepdim=True)
    std_B1 = rewards_BG.std(dim=1, keepdim=True, unbiased=False)
    return (rewards_BG - mean_B1) / (std_B1 + eps)


def drgrpo_advantages(rewards_BG: torch.Tensor) -> torch.Tensor:
    return rewards_BG - rewards_BG.mean(dim=1, keepdim=True)


def rloo_advantages(rewards_BG: torch.Tensor) -> torch.Tensor:
    G = rewards_BG.shape[1]
    if G < 2:
        return torch.zeros_like(rewards_BG)
    others_mean_BG = (rewards_BG.sum(dim=1, keepdim=True) - rewards_BG) / (G - 1)
    return rewards_BG - others_mean_BG


ESTIMATORS = {"grpo": grpo_advantages, "drgrpo": drgrpo_advantages, "rloo": rloo_advantages}


def group_advantages(name: str, rewards_G: list[float]) -> list[float]:
    """Advantages for one group (groups may differ in size after filtering)."""
    return ESTIMATORS[name](torch.tensor([rewards_G], dtype=torch.float64))[0].tolist()
