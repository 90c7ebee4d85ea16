"""Adaptive guidance — when to re-roll a group with a hint (docs/curriculum.md, "Guide-GRPO").

Decision logic only; building the hinted prompt, generating, and the off-policy loss live in
the trainer / learner. Per step the trainer:

  1. `idx = policy.select(groups)`        groups (on-policy, with a hint) whose success rate
                                           <= success_threshold, at most `max_rerolls`
  2. for each i in idx: roll n answers from the prompt *with* its hint -> `rerolled`
  3. `if policy.record(rerolled): ...`    counts the re-roll; True when its outcomes are mixed,
                                           so the group is kept (re-attached to the hint-free
                                           prompt and marked off_policy=True)

(`observe_step(rerolled, kept)` is the batch form of step 3 for a trainer that applies `keep`
itself; it does not count groups seen / failed / skipped, which only `select` does.)

Success of an answer, first that applies:
  1. `success_reward` set: that reward function's value > 0 (a `None` part counts as failure);
  2. `group.correct` (set by the trainer: the environment's verifier scored it > 0);
  3. otherwise the total reward > 0.
So a format or length term in the total never turns a wrong answer into a success. The
authors' threshold 0.001 on a 0..1 success rate means "no answer succeeded".

`keep` follows the authors: a re-rolled group is kept only if its outcomes are mixed, i.e. some
answers succeed and some fail (an all-correct hinted group carries no GRPO signal either, and an
all-wrong one whose rewards differ only by format/length terms teaches nothing about the task).
Deviation for callers that give neither `success_reward` nor `correct`: kept when the rewards are
not all equal (success = reward > 0 would drop partial-credit groups). Statistics per distribution, this
step and since the start: groups seen, failed (all wrong), rerolled, kept, solved (a hinted
answer succeeded), skipped_no_hint, skipped_cap, and solved_rate = solved / rerolled.
"""

from __future__ import annotations

from typing import Any

from rlcurr.curriculum.config import GuidanceConfig
from rlcurr.types import ScoredGroup

COUNTERS = ("groups", "failed", "rerolled", "kept", "solved", "skipped_no_hint", "skipped_cap")


def _zeros(names: list[str]) -> dict[str, dict[str, int]]:
    return {n: {c: 0 for c in COUNTERS} for n in names}


class GuidancePolicy:
    def __init__(self, cfg: GuidanceConfig, names: list[str]):
        self.cfg = cfg
        self.names = list(names)
        self.step_stats = _zeros(self.names)
        self.total_stats = _zeros(self.names)
        self._chosen_in_step = 0  # max_rerolls is per step, and a step may have several rounds

    # ---- pure decisions
    def successes(self, group: ScoredGroup) -> list[bool]:
        if self.cfg.success_reward is None:
            if group.correct is not None:
                return [bool(c) for c in group.correct]
            return [r > 0 for r in group.rewards]
        part = group.reward_parts.get(self.cfg.success_reward)
        if part is None:
            raise KeyError(
                f"curriculum.guidance.success_reward={self.cfg.success_reward!r} is not among this "
                f"group's rewards {sorted(group.reward_parts)}"
            )
        return [v is not None and v > 0 for v in part]

    def success_rate(self, group: ScoredGroup) -> float:
        s = self.successes(group)
        return sum(s) / len(s) if s else 0.0

    def needs_hint(self, group: ScoredGroup) -> bool:
        """All (or nearly all, per the threshold) answers failed."""
        return self.success_rate(group) <= self.cfg.success_threshold

    def keep(self, rerolled: ScoredGroup) -> bool:
        """Mixed outcomes: some answers succeed, some fail (see the module docstring; without
        `success_reward` and `correct`: the rewards are not all equal)."""
        if self.cfg.success_reward is None and rerolled.correct is None:
            return len(set(rerolled.rewards)) > 1
        return len(set(self.successes(rerolled))) > 1

    # ---- per-step bookkeeping
    def begin_step(self) -> None:
        self.step_stats = _zeros(self.names)
        self._chosen_in_step = 0

    def _count(self, dist: str, key: str) -> None:
        for stats in (self.step_stats, self.total_stats):
            stats.setdefault(dist, {c: 0 for c in COUNTERS})[key] += 1

    def select(self, groups: list[ScoredGroup]) -> list[int]:
        """Indices of the groups to re-roll with a hint, in order; at most `max_rerolls` per step
        over all calls since `begin_step` (dynamic sampling calls it once per generation round,
        with that round's on-policy groups; it counts them)."""
        chosen: list[int] = []
        for i, g in enumerate(groups):
            if g.off_policy:
                continue
            dist = g.prompt.distribution
            self._count(dist, "groups")
            if not self.needs_hint(g):
                continue
            self._count(dist, "failed")
            if g.prompt.hint is None:
                self._count(dist, "skipped_no_hint")
            elif self.cfg.max_rerolls is not None and self._chosen_in_step + len(chosen) >= self.cfg.max_rerolls:
                self._count(dist, "skipped_cap")
            else:
                chosen.append(i)
        self._chosen_in_step += len(chosen)
        return chosen

    def record(self, rerolled: ScoredGroup) -> bool:
        """Count one hinted re-roll of `rerolled.prompt`; returns `keep(rerolled)`."""
        dist = rerolled.prompt.distribution
        kept = self.keep(rerolled)
        self._count(dist, "rerolled")
        if any(self.successes(rerolled)):
            self._count(dist, "solved")
        if kept:
            self._count(dist, "kept")
        return kept

    def observe_step(self, rerolled: list[ScoredGroup], kept: list[ScoredGroup]) -> None:
        """Batch form of `record` for a trainer that re-rolled and kept groups itself: counts
        rerolled / solved per re-rolled group and kept per kept group (`kept` must be a subset)."""
        for g in rerolled:
            dist = g.prompt.distribution
            self._count(dist, "rerolled")
            if any(self.successes(g)):
                self._count(dist, "solved")
        for g in kept:
            self._count(g.prompt.distribution, "kept")

    def report(self) -> dict[str, Any]:
        def with_rate(stats: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
            out = {}
            for n, s in stats.items():
                out[n] = dict(s, solved_rate=(s["solved"] / s["rerolled"]) if s["rerolled"] else None)
            return out

        return {"step": with_rate(self.step_stats), "total": with_rate(self.total_stats)}

    def state_dict(self) -> dict:
        return {"step": {n: dict(s) for n, s in self.step_stats.items()},
                "total": {n: dict(s) for n, s in self.total_stats.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.step_stats = {n: dict(s) for n, s in sd["step"].items()}
        self.total_stats = {n: dict(s) for n, s in sd["total"].items()}
