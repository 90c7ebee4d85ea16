"""Group filters: DAPO dynamic sampling and D3S down-sampling
(docs/curriculum.md, "DAPO dynamic sampling", and "D3S").

DAPO: a group whose rewards are all equal has all-zero GRPO advantages and only dilutes the
batch; `dapo_filter` drops it and the trainer generates more prompts until the batch is full,
for at most `curriculum.dynamic_sampling.max_rounds` rounds, then raises
`DynamicSamplingExhausted` (stopping the run, as verl's DAPO recipe does: training on a part
batch would silently change the batch size, the loss scale and the step's meaning). Unlike
verl, which generates a whole generation batch per round, a refill round asks for
`refill_size` prompts: the groups still missing divided by the share kept so far (at most
prompts_per_step). Surplus kept groups are cut off, keeping the batch at prompts_per_step.

D3S (paper only; our reading):
- Sample level, `d3s_select_answers`: keep the n answers of a group whose advantages have the
  largest variance. Derivation: for a fixed subset size m, m Var(S) = sum x^2 - (sum x)^2 / m.
  Swap one chosen value x for an unchosen one; as a function of x (the other m - 1 fixed,
  s = their sum) it is x^2 - (x + s)^2 / m + const = (1 - 1/m) x^2 - (2 s / m) x + const, a
  convex parabola for m > 1. A convex function over the candidate values is maximal at the
  smallest or the largest one, so any chosen value lying strictly between two unchosen values
  can be swapped for one of them without lowering the variance. Hence some optimal subset is
  "the a smallest and the m - a largest" values for some a in 0..m; we try all m + 1 splits
  (O(G log G)) — not simply alternating most positive / most negative, which can be suboptimal
  when the advantages are skewed (e.g. one success among many failures).
- Token level, `d3s_token_mask`: keep the top ceil(k * #valid) tokens by |A_t| * H_t among the
  valid tokens of the tensor passed in (pass the whole batch for batch-level selection).
  The trainer passes one micro-batch (the answers of one forward pass), so selection is per
  micro-batch; with algo.micro_batch_size >= the mini-batch it is batch level.
- `d3s_subsample` applies the sample level to whole groups; the kept answers keep the
  advantages computed on the full group (the estimate does not change, only which answers train).
- Schedule, `d3s_schedule`: [n, k] = (1 - p) [n_init, k_init] + p [n_final, k_final], p in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math

import torch

from rlcurr.errors import UserError
from rlcurr.types import ScoredGroup


def is_zero_variance(rewards: list[float]) -> bool:
    return len(rewards) == 0 or max(rewards) == min(rewards)


def dapo_filter(groups: list[ScoredGroup]) -> tuple[list[ScoredGroup], list[ScoredGroup]]:
    """(kept, dropped): dropped groups have all rewards equal (zero GRPO advantage)."""
    kept = [g for g in groups if not is_zero_variance(g.rewards)]
    dropped = [g for g in groups if is_zero_variance(g.rewards)]
    return kept, dropped


def refill_size(missing: int, kept: int, generated: int, cap: int) -> int:
    """Prompts to plan in a refill round: enough to fill `missing` slots at the keep rate seen so
    far (kept / generated groups this step), at most `cap`; `cap` when nothing was kept yet."""
    if kept == 0 or generated == 0:
        return cap
    return max(1, min(cap, math.ceil(missing * generated / kept)))


class DynamicSamplingExhausted(UserError):
    """Dynamic sampling could not fill the batch with mixed-outcome groups in max_rounds."""

    def __init__(self, rounds: int, have: int, need: int):
        self.rounds, self.have, self.need = rounds, have, need
        super().__init__(
            f"dynamic sampling: after {rounds} generation round(s) only {have} of the {need} prompt "
            f"groups needed had mixed rewards (the others were all right or all wrong). Raise "
            f"curriculum.dynamic_sampling.max_rounds, make the task mix fit the model better "
            f"(e.g. curriculum.sampler=ucb steers away from solved and hopeless distributions), "
            f"or remove curriculum.dynamic_sampling."
        )


# ----------------------------------------------------------------------------- D3S


def d3s_schedule(progress: float, n_init: float, n_final: float, k_init: float, k_final: float) -> tuple[float, float]:
    """(n, k) keep fractions at training progress p in [0, 1] (clamped), linear from init to final."""
    p = min(max(progress, 0.0), 1.0)
    return (1 - p) * n_init + p * n_final, (1 - p) * k_init + p * k_final


def d3s_num_keep(group_size: int, frac: float) -> int:
    """Answers to keep out of a group: round(frac * G), at least 2 (a variance needs two), at most G."""
    return min(group_size, max(2, int(math.floor(frac * group_size + 0.5))))


def d3s_select_answers(advantages_G: list[float], n_keep: int) -> list[int]:
    """Indices (ascending) of the n_keep answers whose advantages have maximal variance.

    Tries every split "a lowest + (n_keep - a) highest" of the sorted advantages (optimal, see the
    module docstring); ties go to the split with the smallest a.
    """
    G = len(advantages_G)
    if n_keep >= G:
        return list(range(G))
    if n_keep <= 0:
        return []
    order = sorted(range(G), key=lambda i: advantages_G[i])
    best, best_var = None, -1.0
    for a in range(n_keep + 1):
        chosen = order[:a] + order[G - (n_keep - a):]  # a lowest + the rest highest
        vals = [advantages_G[i] for i in chosen]
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / len(vals)
        if var > best_var + 1e-12:
            best, best_var = chosen, var
    return sorted(best)


def d3s_subsample(groups: list[ScoredGroup], n_frac: float) -> list[ScoredGroup]:
    """Each group cut to its d3s_num_keep(G, n_frac) answers of maximal advantage variance (the
    groups need advantages); completions, rewards, reward parts and advantages are cut alike."""
    out = []
    for g in groups:
        keep = d3s_select_answers(list(g.advantages), d3s_num_keep(g.n, n_frac))
        out.append(dataclasses.replace(
            g, completions=[g.completions[i] for i in keep], rewards=[g.rewards[i] for i in keep],
            reward_parts={k: [v[i] for i in keep] for k, v in g.reward_parts.items()},
            advantages=[g.advantages[i] for i in keep]))
    return out


def d3s_token_mask(
    adv_BT: torch.Tensor, entropy_BT: torch.Tensor, mask_BT: torch.Tensor, keep_frac: float
) -> torch.Tensor:
    """mask_BT with only the top ceil(keep_frac * #valid) valid tokens by |A| * H left on.

    adv_BT may also be adv_B (one advantage per answer), broadcast over tokens. Returns a tensor
    of mask_BT's dtype; entries kept keep their original mask value.
    """
    if adv_BT.dim() == 1:
        adv_BT = adv_BT[:, None].expand_as(entropy_BT)
    valid_BT = mask_BT > 0
    n_valid = int(valid_BT.sum())
    n_keep = math.ceil(keep_frac * n_valid)
    if n_keep >= n_valid:
        return mask_BT.clone()
    score_BT = (adv_BT.abs() * entropy_BT).detach().float().masked_fill(~valid_BT, float("-inf"))
    top = torch.topk(score_BT.flatten(), n_keep).indices
    keep_flat = torch.zeros(score_BT.numel(), dtype=torch.bool, device=mask_BT.device)
    keep_flat[top] = True
    return mask_BT * keep_flat.view_as(mask_BT).to(mask_BT.dtype)
