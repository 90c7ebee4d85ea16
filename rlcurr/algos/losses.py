"""Policy-gradient loss pieces as pure tensor functions.

B = sequences in the micro-batch, T = response positions (padded); `mask_BT` marks real tokens.

Variant: PPO-clip on per-token ratios with separate low/high clip ranges (DAPO clip-higher;
docs/algorithms.md, "Policy loss"), the dual-clip of verl is left out. Off-policy tokens (Guide-GRPO hinted answers,
docs/curriculum.md, "Guide-GRPO") use the shaped ratio r / (r + gamma) without clipping instead.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mode: str, norm_len: int | None = None) -> torch.Tensor:
    """Reduce per-token losses to a scalar.

    token-mean:              sum(loss*mask) / sum(mask)                  (DAPO; every token weighs the same)
    seq-mean-token-mean:     mean_b [ sum_t(loss*mask) / sum_t(mask) ]   (original GRPO)
    seq-mean-token-sum-norm: mean_b [ sum_t(loss*mask) / norm_len ]      (Dr.GRPO; norm_len = a constant,
                                                                          the learner passes the generation limit)
    """
    mask_BT = mask_BT.to(loss_BT.dtype)
    if mode == "token-mean":
        return (loss_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return ((loss_BT * mask_BT).sum(-1) / mask_BT.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum-norm":
        norm = norm_len if norm_len is not None else loss_BT.shape[1]
        return ((loss_BT * mask_BT).sum(-1) / norm).mean()
    raise ValueError(f"unknown loss aggregation {mode!r}; choose from {AGGREGATIONS}")


def offpolicy_gamma(ratios: torch.Tensor, quantile: float = 0.9, gamma_floor: float = 1e-4) -> float:
    """Guide-GRPO's gamma: the `quantile` of the off-policy token ratios (any shape), >= floor.
    The learner computes it once over the whole mini-batch (all micro-batches and ranks)."""
    return float(torch.quantile(ratios.detach().float().flatten(), quantile).clamp(min=gamma_floor))


def shaped_offpolicy_ratio(ratio_BT: torch.Tensor, offpolicy_mask_BT: torch.Tensor, quantile: float = 0.9,
                           gamma_floor: float = 1e-4, gamma: float | None = None) -> torch.Tensor:
    """Guide-GRPO's r / (r + gamma), gamma = detached `quantile` of the off-policy ratios (>= floor),
    over this tensor's off-policy tokens unless `gamma` is given (the mini-batch's)."""
    if gamma is None:
        selected = ratio_BT.detach()[offpolicy_mask_BT.bool()]
        if selected.numel() == 0:
            return ratio_BT
        gamma = offpolicy_gamma(selected, quantile, gamma_floor)
    return ratio_BT / (ratio_BT + gamma)


def policy_loss(
    logprobs_BT: torch.Tensor,
    old_logprobs_BT: torch.Tensor,
    advantages: torch.Tensor,
    mask_BT: torch.Tensor,
    clip_low: float,
    clip_high: float,
    agg: str,
    offpolicy_B: torch.Tensor | None = None,
    norm_len: int | None = None,
    is_weight_BT: torch.Tensor | None = None,
    gamma: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss  -min(r A, clip(r, 1-clip_low, 1+clip_high) A), aggregated.

    `advantages` is [B] (one per answer, broadcast over its tokens: GRPO family) or [B, T]
    (one per token: PPO's GAE).

    `is_weight_BT` (detached, e.g. `truncated_is_weights`) multiplies every token's term.
    `gamma`: Guide-GRPO's off-policy shaping constant fixed by the caller (the whole mini-batch's);
    None = the quantile over this call's off-policy tokens.
    Returns the loss and token-mean statistics: clip fraction below/above, approx KL to old.
    """
    adv_BT = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(logprobs_BT)
    log_ratio_BT = logprobs_BT - old_logprobs_BT
    ratio_BT = log_ratio_BT.exp()
    unclipped_BT = ratio_BT * adv_BT
    clipped_BT = ratio_BT.clamp(1 - clip_low, 1 + clip_high) * adv_BT
    loss_BT = -torch.minimum(unclipped_BT, clipped_BT)

    m = mask_BT.to(logprobs_BT.dtype)
    if offpolicy_B is not None and bool(offpolicy_B.any()):
        off_BT = offpolicy_B[:, None].expand_as(logprobs_BT) & mask_BT.bool()
        shaped_BT = shaped_offpolicy_ratio(ratio_BT, off_BT, gamma=gamma)
        loss_BT = torch.where(off_BT, -shaped_BT * adv_BT, loss_BT)
        m_on = m * (~off_BT).to(m.dtype)
    else:
        m_on = m
    if is_weight_BT is not None:
        loss_BT = loss_BT * is_weight_BT
    n_on = m_on.sum().clamp(min=1)
    # A token is clipped when the clipped branch is active: ratio left the range on the side that matters.
    low_BT = (ratio_BT < 1 - clip_low) & (adv_BT < 0)
    high_BT = (ratio_BT > 1 + clip_high) & (adv_BT > 0)
    stats = {
        "clip_frac_low": (low_BT.to(m.dtype) * m_on).sum().detach() / n_on,
        "clip_frac_high": (high_BT.to(m.dtype) * m_on).sum().detach() / n_on,
        "approx_kl_old": ((-log_ratio_BT).detach() * m).sum() / m.sum().clamp(min=1),
    }
    return aggregate(loss_BT, mask_BT, agg, norm_len), stats


def truncated_is_weights(old_logprobs_BT: torch.Tensor, rollout_logprobs_BT: torch.Tensor, mask_BT: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Truncated importance weights min(pi_old / pi_rollout, cap) per token, detached
    (docs/algorithms.md, "Truncated importance sampling").

    Corrects the mismatch between the engine that sampled (pi_rollout) and the learner's
    recomputation of the same policy (pi_old). Only the upper side is truncated; padding gets 0.
    """
    log_w_BT = (old_logprobs_BT - rollout_logprobs_BT).detach()
    return log_w_BT.exp().clamp(max=cap) * mask_BT.to(log_w_BT.dtype)


def value_loss(values_BT: torch.Tensor, old_values_BT: torch.Tensor, returns_BT: torch.Tensor, mask_BT: torch.Tensor,
               clip: float, agg: str, norm_len: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped value loss  0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2), aggregated.

    Variant: verl's `compute_value_loss` (= OpenRLHF's ValueLoss with value_clip): the pessimistic
    max of the clipped and unclipped errors, clipped around the values the critic gave before this
    step's updates. Left out: unclipped / Huber variants (the clip is always on).
    Returns the loss and the token share where the clipped branch is the larger one.
    """
    clipped_BT = old_values_BT + (values_BT - old_values_BT).clamp(-clip, clip)
    err_BT = (values_BT - returns_BT).square()
    err_clipped_BT = (clipped_BT - returns_BT).square()
    loss_BT = 0.5 * torch.maximum(err_BT, err_clipped_BT)
    m_BT = mask_BT.to(values_BT.dtype)
    clip_frac = ((err_clipped_BT > err_BT).to(m_BT.dtype) * m_BT).sum().detach() / m_BT.sum().clamp(min=1)
    return aggregate(loss_BT, mask_BT, agg, norm_len), {"value_clip_frac": clip_frac}


def kl_penalty(logprobs_BT: torch.Tensor, ref_logprobs_BT: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3).

    with d = log pi_ref - log pi:  k1 = -d,   k2 = d^2 / 2,   k3 = exp(d) - 1 - d  (>= 0, unbiased).
    """
    d_BT = ref_logprobs_BT - logprobs_BT
    if estimator == "k1":
        return -d_BT
    if estimator == "k2":
        return 0.5 * d_BT.square()
    if estimator == "k3":
        return d_BT.clamp(-20, 20).exp() - 1 - d_BT
    raise ValueError(f"unknown KL estimator {estimator!r}; choose from k1, k2, k3")
