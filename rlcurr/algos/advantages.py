"""Group-relative advantage estimators (pure functions on a [B, G] reward tensor).

B = prompts (groups), G = answers per prompt. Each returns one scalar advantage per answer,
broadcast over its tokens by the loss.

- grpo:   A = (r - mean_G r) / (std_G r + eps)      std is the population std (ddof = 0), so
          that for 0/1 rewards mean|A| of a group = 2 sqrt(p(1-p)), as DUMP uses
          (docs/curriculum.md, "UCB sampling (DUMP)").
          (verl and TRL divide by the Bessel-corrected std; the difference is a factor
          sqrt(G/(G-1)) that clip and Adam mostly absorb.)
- drgrpo: A = r - mean_G r                          (Dr.GRPO: no std division)
- rloo:   A = r - mean of the *other* G-1 rewards = G/(G-1) (r - mean_G r)

PPO (algo.name: ppo) is not a group estimator: its per-token advantages need the critic's
values, so the learner computes them with `gae_BT` below. `group_advantages("ppo", ...)` returns
GRPO's values, which only feed the curriculum's |A| signal and the rollout metrics.
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
    """Advantages for one group (groups may differ in size after filtering).

    "ppo" gets GRPO's: the learner ignores them and recomputes per-token GAE with its critic.
    """
    name = "grpo" if name == "ppo" else name
    return ESTIMATORS[name](torch.tensor([rewards_G], dtype=torch.float64))[0].tolist()


# ---------------------------------------------------------------- PPO: GAE with a critic


def last_token_rewards(rewards_B: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Outcome reward at each answer's last token, 0 elsewhere, [B, T] (mask is right-padded)."""
    last_B = (mask_BT.sum(-1).long() - 1).clamp(min=0)
    rewards_BT = torch.zeros(mask_BT.shape, dtype=rewards_B.dtype, device=rewards_B.device)
    rewards_BT[torch.arange(len(last_B)), last_B] = rewards_B
    return rewards_BT * mask_BT.to(rewards_B.dtype)


def gae_BT(rewards_BT: torch.Tensor, values_BT: torch.Tensor, mask_BT: torch.Tensor, gamma: float,
           lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per token; returns (advantages_BT, returns_BT).

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1},   R_t = A_t + V_t,
    with V after an answer's last token = 0 (the episode ends there) and everything at padded
    positions 0. Variant: verl's `compute_gae_advantage_return` (= OpenRLHF's `get_advantages_and_returns`):
    V_t is the value of the state before response token t, the outcome reward sits on the last
    token (`last_token_rewards`), no per-token KL reward is folded in (the KL penalty, if any, is in
    the loss). Whitening is separate (`masked_whiten`).
    """
    mask_BT = mask_BT.to(values_BT.dtype)
    values_BT = values_BT * mask_BT
    T = values_BT.shape[1]
    adv_BT = torch.zeros_like(values_BT)
    next_adv_B = torch.zeros_like(values_BT[:, 0])
    for t in reversed(range(T)):
        next_value_B = values_BT[:, t + 1] if t + 1 < T else torch.zeros_like(next_adv_B)
        delta_B = rewards_BT[:, t] + gamma * next_value_B - values_BT[:, t]
        next_adv_B = (delta_B + gamma * lam * next_adv_B) * mask_BT[:, t]
        adv_BT[:, t] = next_adv_B
    return adv_BT, (adv_BT + values_BT) * mask_BT


def gae(rewards_T: list[float], values_T: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """`gae_BT` for one answer given as lists: (advantages, returns)."""
    r_1T = torch.tensor([rewards_T], dtype=torch.float64)
    adv_1T, ret_1T = gae_BT(r_1T, torch.tensor([values_T], dtype=torch.float64), torch.ones_like(r_1T), gamma, lam)
    return adv_1T[0].tolist(), ret_1T[0].tolist()


def masked_whiten(x_BT: torch.Tensor, mask_BT: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the real tokens of the whole batch (verl's masked_whiten:
    Bessel-corrected variance, mean shifted to 0); padded positions stay 0."""
    m_BT = mask_BT.to(x_BT.dtype)
    n = m_BT.sum()
    mean = (x_BT * m_BT).sum() / n.clamp(min=1)
    centred_BT = (x_BT - mean) * m_BT
    if n < 2:
        return centred_BT
    var = centred_BT.square().sum() / (n - 1)
    return centred_BT * torch.rsqrt(var + eps)


def explained_variance(values_BT: torch.Tensor, returns_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over real tokens: 1 = perfect critic, <= 0 = no better than a constant
    (population variances; 0 when the returns do not vary)."""
    m_BT = mask_BT.to(returns_BT.dtype)
    n = m_BT.sum().clamp(min=1)

    def var(x_BT: torch.Tensor) -> torch.Tensor:
        mean = (x_BT * m_BT).sum() / n
        return (((x_BT - mean) * m_BT).square()).sum() / n

    var_returns = var(returns_BT)
    if float(var_returns) == 0.0:
        return 0.0
    return float(1 - var(returns_BT - values_BT) / var_returns)
