"""SPEED-RL (docs/curriculum.md, "SPEED-RL"): screen each candidate prompt with a few answers, finish only the
informative ones. Pure logic (no Ray, no model); `Trainer.collect_speed` drives it.

The authors' rule (Zhang, Arora, Mei, Zanette 2025, arXiv 2506.09016; code Zanette-Labs/speed-rl,
read in the copy stored as guanning03/JSPO-Official: verl/trainer/ppo/data_controller.py
`DataController.update_prompts`, recipe/dapo/src/fast_dapo_ray_trainer.py, run_fast_dapo_7b_slurm.sh):
- screening: every prompt of a generation batch gets `rollout.n` = 4 answers (their
  `initial_n`); a prompt qualifies when the std of its answers' `acc` (the verifier's
  correctness, `filter_groups.metric=acc`) is > 0, i.e. its screened pass rate is strictly
  between 0 and 1 - there is no other band in their code;
- completion: a qualified prompt gets `n_continue` = 20 more answers; its screening answers are
  kept and merged with them into one group of 24 (`prompts_for_training` holds both), and the
  advantages are computed over the whole group;
- filling: generation batches of `gen_batch_size` = 64 prompts (4x the train batch of 16) are
  screened until train_batch_size groups are complete; past `max_num_gen_batches` = 50 their
  trainer raises ("Generated too many batches"). Surplus complete groups wait in a buffer for the
  next step, and the screening of the next batch shares an inference call with the completion of
  the current one.

Ours, per training step (what differs from the authors is marked):
- `screen_n` (default 4) screening answers, `n - screen_n` more for accepted prompts (n =
  rollout.n, the full group; the authors' n_continue is our n - screen_n);
- accepted: screened pass rate strictly inside (low, high), default (0, 1) = the authors' rule.
  Pass = `ScoredGroup.correct` (the environment verifier > 0, the authors' `acc`) when set, else
  reward > 0;
- rounds (differs): round 0 screens prompts_per_step prompts; each later round screens
  `screen_size(missing, kept, screened, cap)` prompts, the missing groups divided by the share of
  screened prompts that ended up in the batch so far (DAPO's `refill_size`), at most `cap` =
  prompts_per_step * n // screen_n, so that a screening round never costs more answers than one
  full batch of n-answer groups;
- completion (differs): only as many accepted prompts as the batch still misses are completed
  (in plan order); the other accepted prompts keep their screen_n answers only. No buffer
  across steps: every trained answer is on-policy for the step that trains it;
- screening and completion are two sequential generation calls per round (no overlap);
- past `max_rounds` rounds the run stops with `SpeedExhausted` (like DynamicSamplingExhausted
  and like the authors' max_num_gen_batches error; a part batch would silently change the batch
  size and the loss scale, see filters.py);
- with curriculum.dynamic_sampling, completed groups whose n rewards are all equal are still
  dropped (possible when the reward is not the verifier, or with a band that admits 0 or 1);
  the rounds are then counted by speed.max_rounds (dynamic_sampling.max_rounds is not used);
- with curriculum.guidance the run is refused (`check_speed_config`): guidance re-rolls
  all-failed groups, which SPEED never trains (a screened pass rate of 0 is rejected), so the
  combination would either silently do nothing or train prompts that SPEED rejected.
"""

from __future__ import annotations

import math

from rlcurr.errors import UserError
from rlcurr.types import ScoredGroup


def passes(group: ScoredGroup) -> list[bool]:
    """Per scored answer: did it pass? The verifier's `correct` when set, else reward > 0."""
    if group.correct is not None:
        return [bool(c) for c in group.correct]
    return [r > 0 for r in group.rewards]


def pass_rate(group: ScoredGroup) -> float | None:
    """Share of the group's scored answers that passed; None for a group with no scored answer."""
    p = passes(group)
    return sum(p) / len(p) if p else None


def in_band(rate: float | None, low: float, high: float) -> bool:
    """The screening test: low < rate < high, strictly (a group with no scored answer fails)."""
    return rate is not None and low < rate < high


def screen_cap(prompts_per_step: int, n: int, screen_n: int) -> int:
    """At most this many prompts per screening round: as many screening answers as one full
    batch of n-answer groups (prompts_per_step * n), at least prompts_per_step."""
    return max(prompts_per_step, prompts_per_step * n // screen_n)


def screen_size(missing: int, kept: int, screened: int, cap: int) -> int:
    """Prompts to screen in a later round: enough to fill `missing` slots at the rate seen so far
    this step (groups kept in the batch / prompts screened), at most `cap`; `cap` when nothing
    was kept yet."""
    if kept == 0 or screened == 0:
        return cap
    return max(1, min(cap, math.ceil(missing * screened / kept)))


def merge(screen: ScoredGroup, rest: ScoredGroup) -> ScoredGroup:
    """One group of the screening answers followed by the completion answers of the same prompt
    (on-policy, hint-free); advantages are left unset, to be computed over all answers."""
    if screen.prompt.uid != rest.prompt.uid or screen.prompt_ids != rest.prompt_ids:
        raise ValueError(f"merging answers of different prompts ({screen.prompt.uid} / {rest.prompt.uid})")
    keys = list(screen.reward_parts) + [k for k in rest.reward_parts if k not in screen.reward_parts]
    parts = {k: list(screen.reward_parts.get(k, [None] * screen.n)) + list(rest.reward_parts.get(k, [None] * rest.n))
             for k in keys}
    correct = None
    if screen.correct is not None and rest.correct is not None:
        correct = list(screen.correct) + list(rest.correct)
    return ScoredGroup(
        prompt=screen.prompt, prompt_ids=screen.prompt_ids, completions=list(screen.completions) + list(rest.completions),
        rewards=list(screen.rewards) + list(rest.rewards), reward_parts=parts, max_tokens=screen.max_tokens,
        correct=correct, num_failed=screen.num_failed + rest.num_failed)


def check_speed_config(cfg) -> None:
    """Checks of curriculum.speed against the rest of the recipe (a rlcurr.config.Config); UserError."""
    speed = cfg.curriculum.speed
    if speed is None:
        return
    if speed.screen_n >= cfg.rollout.n:
        raise UserError(f"curriculum.speed.screen_n={speed.screen_n} must be smaller than rollout.n={cfg.rollout.n} "
                        f"(the full group: screen_n screening answers + rollout.n - screen_n for accepted prompts)")
    if cfg.curriculum.guidance is not None:
        raise UserError("curriculum.speed cannot be combined with curriculum.guidance: guidance re-rolls "
                        "all-failed groups, and SPEED never trains them (a screened pass rate of 0 is rejected). "
                        "Remove one of the two")


class SpeedExhausted(UserError):
    """SPEED screening could not complete prompts_per_step groups in max_rounds rounds."""

    def __init__(self, rounds: int, have: int, need: int, screened: int, accepted: int):
        self.rounds, self.have, self.need = rounds, have, need
        self.screened, self.accepted = screened, accepted
        super().__init__(
            f"SPEED screening: after {rounds} round(s) ({screened} prompts screened, {accepted} with a "
            f"screened pass rate inside the band) only {have} of the {need} prompt groups needed were "
            f"complete. Raise curriculum.speed.max_rounds, widen curriculum.speed.low/high, make the task "
            f"mix fit the model better, or remove curriculum.speed."
        )
