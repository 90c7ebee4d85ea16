"""The curriculum controller: decides each batch and records why (DESIGN "Data flow", steps 1, 4,
5, 7, 10). Pure Python + numpy, no Ray, no model.

Per training step t the trainer calls, in this order:

  plan = ctrl.plan(t)                       1  prompts, their max_tokens (budget), sampling params
  ... rollout + score -> groups ...            the length reward wants ctrl.budget(t, dist)
                                               (item.max_tokens also includes the slack)
  if ctrl.guidance:                         4  Guide-GRPO re-rolls (see guidance.py)
      for i in ctrl.guidance.select(groups): rerolled = ...; if ctrl.guidance.record(rerolled): ...
  if ctrl.cfg.dynamic_sampling:             5  DAPO: kept, dropped = dapo_filter(new_groups);
      ctrl.observe_filter(kept, dropped)       once per generation round; more prompts with
      extra = ctrl.plan(t, num_prompts=k)      plan(t, num_prompts=k); past ctrl.max_rounds raise
                                               DynamicSamplingExhausted(rounds, have, need)
  ctrl.d3s_fractions(t) -> (n, k) | None       D3S keep fractions for this step
  ... advantages ...
  ctrl.observe(t, all_groups)               7  ONCE per step, with every on-policy group generated
                                               this step: all rounds, including the all-wrong
                                               groups that guidance replaced, before DAPO/D3S
                                               filtering (advantages filled in, or None -> GRPO).
                                               Groups with off_policy=True (hinted re-rolls) are
                                               ignored: they say nothing about the hint-free
                                               prompt's learnability.
  ctrl.observe_eval(t, {dist: accuracy})       after the trainer's evaluate(), for forgetting alerts
  row = ctrl.record(t)                     10  one JSON-able line of curriculum.jsonl
  ctrl.state_dict() / load_state_dict()        checkpoint / resume (exact, RNG included)

Why observe before filtering: zero-variance groups carry |A| = 0, which is precisely the signal
that makes UCB/SEC move away from mastered and hopeless distributions (METHODS 1).

The sampler signal per answer is |A_i| from `group.advantages` (the trainer's estimator, as in
DUMP); when a group has no advantages yet the controller uses GRPO advantages of its rewards.
SEC ignores the trainer's advantages and recomputes GRPO's from the rewards (samplers.py).

Prompt level (issue 14, prompts.py): observe() also updates a per-prompt memory (pass-rate EMA,
zero-variance streak); with curriculum.greso set, plan() picks the distribution with the sampler
as before and then skips candidate prompts with a zero-variance streak (GRESO, METHODS 10), also
in dynamic-sampling refill plans; record() adds "prompts" (per-distribution summary), "greso"
(p_easy, p_hard, prompts skipped this step) and "alerts" (starving / forgetting distributions).

Asynchronous trainer (trainer.max_staleness = k): plan/observe/record(s) run during trainer step
s - k, as soon as step s's groups are scored; the trainer logs the line when step s trains, with
the alerts recomputed (`current_alerts`) and the lag (s minus the policy version that generated
the groups). Checkpoints hold the state from before plan(t + 1), see Trainer.save.

Step indices are the trainer's (0 at the first step, budgets and D3S progress use
t / (total_steps - 1)). plan(t) for a new t starts that step's statistics; record(t) reports
the probabilities after observe(t), i.e. those that will shape step t + 1, and `planned`, the
prompts actually drawn for step t.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlcurr.algos.advantages import group_advantages
from rlcurr.curriculum.budget import budget_at
from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.curriculum.ead import ead_temperatures
from rlcurr.curriculum.filters import d3s_schedule
from rlcurr.curriculum.guidance import GuidancePolicy
from rlcurr.curriculum.prompts import Alerts, Greso, PromptMemory
from rlcurr.curriculum.samplers import DistStats, make_sampler, rng_state, set_rng_state
from rlcurr.errors import UserError
from rlcurr.types import BatchPlan, PlannedPrompt, Prompt, ScoredGroup

STATE_VERSION = 1


def _check_names(key: str, given: list[str] | None, valid: list[str], require_all: bool = False) -> None:
    if not given:
        return
    unknown = [n for n in given if n not in valid]
    if unknown:
        raise UserError(f"{key} names unknown distribution(s) {unknown}; this environment has {valid}")
    missing = [n for n in valid if n not in given]
    if require_all and missing:
        raise UserError(f"{key} must give every distribution; missing {missing} (distributions: {valid})")


def validate_against_env(cfg: CurriculumConfig, names: list[str]) -> None:
    """Config checks that need the environment's distribution names; raise UserError."""
    _check_names("curriculum.weights", list(cfg.weights or {}), names)
    if cfg.budget is not None:
        _check_names("curriculum.budget.per_distribution", list(cfg.budget.per_distribution or {}), names)
    if cfg.sampler == "alp_gmm" and cfg.alp_gmm.params is not None:
        _check_names("curriculum.alp_gmm.params", list(cfg.alp_gmm.params), names, require_all=True)
    K = len(names)
    if K * cfg.min_prob > 1 + 1e-12:
        raise UserError(
            f"curriculum.min_prob={cfg.min_prob} times {K} distributions is {K * cfg.min_prob:g} > 1; "
            f"use at most {1 / K:g}"
        )


class CurriculumController:
    def __init__(
        self,
        cfg: CurriculumConfig,
        prompts: dict[str, list[Prompt]],
        *,
        prompts_per_step: int,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        total_steps: int,
        seed: int,
    ):
        self.names = list(prompts)
        if not self.names:
            raise UserError("the environment has no distributions to sample from")
        empty = [d for d in self.names if not prompts[d]]
        if empty:
            raise UserError(f"distribution(s) {empty} have no training prompts")
        validate_against_env(cfg, self.names)
        self.cfg = cfg
        self.prompts = {d: prompts[d] for d in self.names}  # sequences may be lazy (reasoning_gym)
        self.prompts_per_step = prompts_per_step
        self.n, self.temperature, self.top_p = n, temperature, top_p
        self.max_tokens = max_tokens
        self.total_steps = total_steps
        self.sampler = make_sampler(cfg, self.names, seed)
        self.rng = np.random.default_rng(seed % 2**63)  # slots -> distributions -> prompts
        self.guidance = GuidancePolicy(cfg.guidance, self.names) if cfg.guidance is not None else None
        # without-replacement cursors (SEC): a shuffled order per distribution, refilled when used up
        self._order: dict[str, list[int]] = {d: [] for d in self.names}
        self._cursor: dict[str, int] = {d: 0 for d in self.names}
        self._step: int | None = None  # step whose statistics are being collected
        self._observed_step: int | None = None
        self._planned = {d: 0 for d in self.names}
        self._filter = self._empty_filter()
        self.memory = PromptMemory(cfg.prompt_memory.ema_alpha)  # per-prompt statistics (prompts.py)
        self.greso = Greso(cfg.greso) if cfg.greso is not None else None
        self.alerts = Alerts(cfg.alerts, self.names, cfg.min_prob, self.sampler.kind in ("uniform", "weights"))

    # ------------------------------------------------------------------ knobs for the trainer
    def budget(self, step: int, distribution: str | None = None) -> int | None:
        """The token budget (without slack) at `step`, or None when no budget is configured."""
        if self.cfg.budget is None:
            return None
        return budget_at(step, self.cfg.budget, self.total_steps, distribution)

    def max_tokens_for(self, step: int, distribution: str) -> int:
        b = self.budget(step, distribution)
        return self.max_tokens if b is None else b + self.cfg.budget.slack

    @property
    def max_rounds(self) -> int | None:
        ds = self.cfg.dynamic_sampling
        return None if ds is None else ds.max_rounds

    def progress(self, step: int) -> float:
        return min(max(step, 0) / max(self.total_steps - 1, 1), 1.0)

    def d3s_fractions(self, step: int) -> tuple[float, float] | None:
        """(answer keep fraction, token keep fraction) at `step`, or None without D3S."""
        c = self.cfg.d3s
        return None if c is None else d3s_schedule(self.progress(step), c.n_init, c.n_final, c.k_init, c.k_final)

    def temperatures(self, step: int, num_positions: int) -> list[float] | None:
        """EAD per-position temperatures, or None without EAD (use plan.temperature)."""
        return None if self.cfg.ead is None else ead_temperatures(num_positions, step, self.cfg.ead)

    # ------------------------------------------------------------------ plan
    def _begin(self, step: int) -> None:
        if self._step == step:
            return
        self._step = step
        self._planned = {d: 0 for d in self.names}
        self._filter = self._empty_filter()
        if self.guidance is not None:
            self.guidance.begin_step()
        if self.greso is not None:
            self.greso.begin_step()

    def _pick(self, dist: str) -> Prompt:
        pool = self.prompts[dist]
        if not self.sampler.without_replacement:
            return pool[int(self.rng.integers(len(pool)))]  # uniform with replacement (DUMP)
        if self._cursor[dist] >= len(self._order[dist]):
            self._order[dist] = self.rng.permutation(len(pool)).tolist()
            self._cursor[dist] = 0
        i = self._order[dist][self._cursor[dist]]
        self._cursor[dist] += 1
        return pool[i]

    def plan(self, step: int, num_prompts: int | None = None) -> BatchPlan:
        """The prompts of step `step`: a distribution per slot from the sampler, then a prompt.
        `num_prompts` (default prompts_per_step) lets dynamic sampling ask for more in the same step."""
        self._begin(step)
        k = self.prompts_per_step if num_prompts is None else num_prompts
        items = []
        for dist in self.sampler.draw(k, self.rng):
            self._planned[dist] += 1
            if self.greso is None:
                prompt = self._pick(dist)
            else:  # GRESO: skip candidates with a zero-variance streak (refill plans too)
                prompt = self.greso.choose(dist, lambda: self._pick(dist), self.memory, self.rng)
            items.append(PlannedPrompt(prompt, self.max_tokens_for(step, dist)))
        return BatchPlan(step=step, items=items, n=self.n, temperature=self.temperature, top_p=self.top_p)

    # ------------------------------------------------------------------ observe
    def observe(self, step: int, groups: list[ScoredGroup]) -> None:
        """Feed the sampler this step's on-policy groups (call once per step, see module doc)."""
        if self._observed_step == step:
            raise RuntimeError(f"observe() called twice for step {step}; pass all of the step's groups at once")
        self._begin(step)
        self._observed_step = step
        stats: dict[str, DistStats] = {}
        outcomes = []
        for arrival, g in enumerate(groups):
            if g.off_policy or not g.rewards:
                continue
            dist = g.prompt.distribution
            if dist not in self.prompts:
                raise ValueError(f"group from unknown distribution {dist!r} (known: {self.names})")
            _, zero_var, kind = self.memory.update(step, g)
            outcomes.append((zero_var, kind))
            adv = g.advantages if g.advantages is not None else group_advantages("grpo", list(g.rewards))
            s = stats.setdefault(dist, DistStats())
            s.rewards_G.append([float(r) for r in g.rewards])
            s.advantages_G.append([float(a) for a in adv])
            s.arrival_G.append(arrival)  # ALP-GMM feeds its teacher in this order
        self.sampler.observe(stats)
        if self.greso is not None:
            self.greso.adapt(outcomes)
        self.alerts.observe_probs(self.sampler.probabilities())

    def observe_eval(self, step: int, accuracy_by_distribution: dict[str, float]) -> None:
        """Held-out accuracy per distribution at `step` (the trainer's evaluate()), for forgetting alerts."""
        self.alerts.observe_eval(step, accuracy_by_distribution)

    @staticmethod
    def _empty_filter() -> dict[str, Any]:
        return {"rounds": 0, "kept": {}, "dropped": {}}

    def observe_filter(self, kept: list[ScoredGroup], dropped: list[ScoredGroup]) -> None:
        """Count one DAPO generation round: groups kept / dropped per distribution."""
        self._filter["rounds"] += 1
        for key, groups in (("kept", kept), ("dropped", dropped)):
            for g in groups:
                d = g.prompt.distribution
                self._filter[key][d] = self._filter[key].get(d, 0) + 1

    # ------------------------------------------------------------------ record
    def record(self, step: int) -> dict[str, Any]:
        """One JSON-able snapshot (a line of curriculum.jsonl) for `step`."""
        dists = self.sampler.report()
        for d in self.names:
            dists[d]["planned"] = self._planned[d] if self._step == step else 0
        budget = None
        if self.cfg.budget is not None:
            budget = {"default": self.budget(step), "slack": self.cfg.budget.slack,
                      "per_distribution": {d: self.budget(step, d) for d in self.names}}
        d3s = self.d3s_fractions(step)
        return {
            "step": step,
            "sampler": self.sampler.kind,
            "distributions": dists,
            "budget": budget,
            "hints": None if self.guidance is None else self.guidance.report(),
            "filter": None if self.cfg.dynamic_sampling is None else {
                "rounds": self._filter["rounds"], "kept": dict(self._filter["kept"]),
                "dropped": dict(self._filter["dropped"])},
            "d3s": None if d3s is None else {"n": d3s[0], "k": d3s[1]},
            "prompts": self.memory.summary(self.names, self.cfg.prompt_memory.bins, self.cfg.prompt_memory.top),
            "greso": None if self.greso is None else self.greso.report(),
            "alerts": self.alerts.active({d: v["prob"] for d, v in dists.items()}),
        }

    def current_alerts(self, row: dict[str, Any]) -> list:
        """`row`'s alerts (a `record` line, possibly taken a few steps ago in an asynchronous run)
        recomputed with every evaluation observed since: its probabilities, today's evals."""
        return self.alerts.active({d: v["prob"] for d, v in row["distributions"].items()})

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "names": list(self.names),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(self.rng),
            "order": {d: list(o) for d, o in self._order.items()},
            "cursor": dict(self._cursor),
            "step": self._step,
            "observed_step": self._observed_step,
            "planned": dict(self._planned),
            "filter": {"rounds": self._filter["rounds"], "kept": dict(self._filter["kept"]),
                       "dropped": dict(self._filter["dropped"])},
            "guidance": None if self.guidance is None else self.guidance.state_dict(),
            "prompt_memory": self.memory.state_dict(),
            "greso": None if self.greso is None else self.greso.state_dict(),
            "alerts": self.alerts.state_dict(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd.get("version") != STATE_VERSION:
            raise UserError(f"curriculum state version {sd.get('version')} is not supported (expected {STATE_VERSION})")
        if sd["names"] != self.names:
            raise UserError(
                f"the checkpoint's curriculum covers distributions {sd['names']}, the environment now has "
                f"{self.names}; resume with the same env config"
            )
        try:
            self.sampler.load_state_dict(sd["sampler"])
        except ValueError as e:
            raise UserError(f"cannot resume the curriculum: {e} (was curriculum.sampler changed?)") from None
        set_rng_state(self.rng, sd["rng"])
        self._order = {d: list(sd["order"][d]) for d in self.names}
        self._cursor = {d: int(sd["cursor"][d]) for d in self.names}
        self._step = sd["step"]
        self._observed_step = sd["observed_step"]
        self._planned = {d: int(sd["planned"][d]) for d in self.names}
        f = sd["filter"]
        self._filter = {"rounds": f["rounds"], "kept": dict(f["kept"]), "dropped": dict(f["dropped"])}
        if self.guidance is not None and sd.get("guidance") is not None:
            self.guidance.load_state_dict(sd["guidance"])
        # issue 14 keys: absent in older checkpoints (same STATE_VERSION), which then start empty
        if sd.get("prompt_memory") is not None:
            self.memory.load_state_dict(sd["prompt_memory"])
        if self.greso is not None and sd.get("greso") is not None:
            self.greso.load_state_dict(sd["greso"])
        if sd.get("alerts") is not None:
            self.alerts.load_state_dict(sd["alerts"])
