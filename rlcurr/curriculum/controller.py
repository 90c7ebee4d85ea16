"""The curriculum controller: decides each batch and records why (the trainer's steps 1 plan,
4 guide, 5 filter, 6 observe, 10 record; rlcurr/trainer.py). Pure Python + numpy, no Ray, no model.

Data flows one way: a plan carries everything a generation round needs, the trainer reports what
happened, and the step's row carries what the rest of the step needs. Per training step t the
trainer calls, in this order:

  plan = ctrl.plan(t)                       1  a BatchPlan: the prompts and, per prompt, its
                                               max_tokens (budget + slack), the budget the length
                                               reward scores against and the EAD temperatures;
                                               the sampling params (one call per round)
  ... rollout + score -> groups ...            read plan.items only
  if ctrl.guidance:                         4  Guide-GRPO re-rolls (see guidance.py)
      for i in ctrl.guidance.select(groups): rerolled = ...; if ctrl.guidance.record(rerolled): ...
  if ctrl.cfg.dynamic_sampling:             5  DAPO: kept, dropped = dapo_filter(new_groups);
      ctrl.observe_filter(kept, dropped)       once per generation round; more prompts with
      extra = ctrl.plan(t, num_prompts=k)      plan(t, num_prompts=k); past ctrl.max_rounds raise
                                               DynamicSamplingExhausted(rounds, have, need)
  ctrl.observe(t, all_groups)               6  ONCE per step, with every on-policy group generated
                                               this step: all rounds, including the all-wrong
                                               groups that guidance replaced, before DAPO/D3S
                                               filtering (advantages filled in, or None -> GRPO).
                                               Groups with off_policy=True (hinted re-rolls) are
                                               ignored: they say nothing about the hint-free
                                               prompt's learnability.
  row = ctrl.row(t)                            the step's CurriculumRow (row.py): its d3s holds the
                                               D3S keep fractions (n, k) the trainer applies (7)
  ctrl.observe_eval(t, {dist: accuracy})       after the trainer's evaluate(), for forgetting alerts
  row.alerts = ctrl.current_alerts(row)    10  recomputed with those evaluations; the trainer
                                               writes row.to_json() to curriculum.jsonl
  ctrl.state_dict() / load_state_dict()        checkpoint / resume (exact, RNG included)

`record(t)` is `row(t).to_json()`, the row as a JSON object (for scripts and simulations);
`budget`, `max_tokens_for`, `temperatures` and `d3s_fractions` are the schedules the plan and the
row are filled from; `planned_items` gives the plan's items for prompts chosen elsewhere.

Why observe before filtering: zero-variance groups carry |A| = 0, which is precisely the signal
that makes UCB/SEC move away from mastered and hopeless distributions (docs/curriculum.md,
"UCB sampling (DUMP)").

The sampler signal per answer is |A_i| from `group.advantages` (the trainer's estimator, as in
DUMP); when a group has no advantages yet the controller uses GRPO advantages of its rewards.
SEC ignores the trainer's advantages and recomputes GRPO's from the rewards (samplers.py).

Prompt level (prompts.py): observe() also updates a per-prompt memory (pass-rate EMA,
zero-variance streak); with curriculum.greso set, plan() picks the distribution with the sampler
as before and then skips candidate prompts with a zero-variance streak (GRESO, docs/curriculum.md
"GRESO"), also in dynamic-sampling refill plans; the row adds "prompts" (per-distribution
summary), "greso" (p_easy, p_hard, prompts skipped this step) and "alerts" (starving /
forgetting distributions).

With curriculum.learnability set (learnability.py), plan() still takes a distribution per slot
from the sampler, then the learnability sampler (MoPPS or LILO on Beta posteriors of each prompt's
pass rate) chooses which prompts of each distribution fill its slots, instead of `_pick`: in every
plan of a step, DAPO refills and SPEED screening rounds included, without repeating a prompt of
the step while its distribution has others; GRESO, when also set, screens its candidates.
The row adds "learnability" (per distribution: prompts picked and their mean posterior pass rate,
prompts with a posterior, histogram of posterior means). `seed_prior` enters a profile of the
starting policy into the posteriors and the per-prompt memory before training.

Asynchronous trainer (trainer.max_staleness = k, docs/scaling.md): plan/observe/row(s) run
during trainer step s - k, as soon as step s's groups are scored; the trainer logs the line when
step s trains, with the alerts recomputed (`current_alerts`) and the lag (s minus the policy
version that generated the groups). Checkpoints hold the state from before plan(t + 1), see Trainer.save.

Step indices are the trainer's (0 at the first step, budgets and D3S progress use
t / (total_steps - 1)). plan(t) for a new t starts that step's statistics; row(t) reports
the probabilities after observe(t), i.e. those that will shape step t + 1, and `planned`, the
prompts actually drawn for step t.

Over 400 lines on purpose: the controller is where every curriculum method's hooks meet
(plan, observe, row, state); each method's math lives in its own module.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rlcurr.algos.advantages import group_advantages
from rlcurr.curriculum.budget import budget_at
from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.curriculum.ead import ead_temperatures
from rlcurr.curriculum.filters import d3s_schedule
from rlcurr.curriculum.guidance import GuidancePolicy
from rlcurr.curriculum.learnability import Learnability
from rlcurr.curriculum.prompts import Alerts, Greso, PromptMemory
from rlcurr.curriculum.row import CurriculumRow, D3SRow
from rlcurr.curriculum.samplers import DistStats, make_sampler, rng_state, set_rng_state
from rlcurr.errors import UserError
from rlcurr.types import BatchPlan, PlannedPrompt, Prompt, ScoredGroup

STATE_VERSION = 1

log = logging.getLogger(__name__)


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
        self.memory = PromptMemory(cfg.prompts.ema_alpha)  # per-prompt statistics (prompts.py)
        self.greso = Greso(cfg.greso) if cfg.greso is not None else None
        self.learn = Learnability(cfg.learnability) if cfg.learnability is not None else None
        self._used: dict[str, set[int]] = {d: set() for d in self.names}  # pool indices planned this step
        self.prior_counts: dict[str, int] | None = None  # seed_prior: prompts seeded / ignored
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

    def planned_items(self, step: int, prompts: list[Prompt], max_tokens: int | None = None,
                      pools: list[str] | None = None) -> list[PlannedPrompt]:
        """`prompts` as plan items of step `step`: each with its max_tokens (`max_tokens_for` its
        pool, by default its distribution; or `max_tokens` for all when given), its distribution's
        budget and the EAD temperatures of its max_tokens positions (one tuple shared by the items
        of equal max_tokens)."""
        temps: dict[int, tuple[float, ...] | None] = {}
        items = []
        for i, p in enumerate(prompts):
            m = max_tokens if max_tokens is not None else self.max_tokens_for(
                step, p.distribution if pools is None else pools[i])
            if m not in temps:
                t = self.temperatures(step, m)
                temps[m] = None if t is None else tuple(t)
            items.append(PlannedPrompt(p, m, budget=self.budget(step, p.distribution), temperatures=temps[m]))
        return items

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
        if self.learn is not None:
            self.learn.begin_step()
        self._used = {d: set() for d in self.names}

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

    def _candidates(self, dist: str, m: int) -> list[int]:
        """Up to `m` distinct pool indices of `dist` not planned this step: the next ones of its
        shuffled pass (the `_pick` cursor; a used-up pass is reshuffled)."""
        pool, used = self.prompts[dist], self._used[dist]
        m = min(m, len(pool) - len(used))
        out: list[int] = []
        seen: set[int] = set()
        while len(out) < m:
            if self._cursor[dist] >= len(self._order[dist]):
                self._order[dist] = self.rng.permutation(len(pool)).tolist()
                self._cursor[dist] = 0
            i = self._order[dist][self._cursor[dist]]
            self._cursor[dist] += 1
            if i not in used and i not in seen:
                out.append(i)
                seen.add(i)
        return out

    def _learn_fill(self, dist: str, count: int) -> list[Prompt]:
        """`count` prompts of `dist` chosen by the learnability sampler, best first (module docstring)."""
        pool, out = self.prompts[dist], []
        while count > 0:
            if len(self._used[dist]) >= len(pool):  # every prompt planned this step: a new round
                self._used[dist] = set()
            take = min(count, len(pool) - len(self._used[dist]))
            idx = self._candidates(dist, self.cfg.learnability.candidates * take)
            cands = [pool[i] for i in idx]
            if self.greso is not None:  # GRESO screens the candidates (prompts.py, Greso.screen)
                kept = self.greso.screen(dist, cands, self.memory, self.rng, take)
                idx, cands = [idx[j] for j in kept], [cands[j] for j in kept]
            for j in self.learn.select(dist, cands, take, self.rng):
                self._used[dist].add(idx[j])
                out.append(cands[j])
            count -= take
        return out

    def plan(self, step: int, num_prompts: int | None = None) -> BatchPlan:
        """The prompts of step `step`: a distribution per slot from the sampler, then a prompt,
        each with what its rollout and scoring need (`planned_items`). `num_prompts` (default
        prompts_per_step) lets dynamic sampling ask for more in the same step."""
        self._begin(step)
        k = self.prompts_per_step if num_prompts is None else num_prompts
        dists = self.sampler.draw(k, self.rng)
        for dist in dists:
            self._planned[dist] += 1
        if self.learn is not None:  # learnability: every slot of a distribution at once, best first
            chosen = {d: iter(self._learn_fill(d, dists.count(d))) for d in dict.fromkeys(dists)}
            prompts = [next(chosen[d]) for d in dists]
        elif self.greso is None:
            prompts = [self._pick(d) for d in dists]
        else:  # GRESO: skip candidates with a zero-variance streak (refill plans too)
            prompts = [self.greso.choose(d, lambda: self._pick(d), self.memory, self.rng) for d in dists]
        return BatchPlan(step=step, items=self.planned_items(step, prompts, pools=dists), n=self.n,
                         temperature=self.temperature, top_p=self.top_p)

    def seed_prior(self, prior: dict[str, tuple[str, int, int]]) -> None:
        """Enter a profile of the starting policy, uid -> (distribution, passes, answers), before
        training: learnability posteriors Beta(alpha0 + passes, beta0 + answers - passes) and the
        per-prompt memory (one group seen before step 0: 0/G or G/G a zero-variance group of kind
        hard / easy, streak 1; else a mixed group; ema = passes / answers). Ignored: uids whose
        distribution is not the controller's or (for list / tuple pools; lazy pools are not read
        through) not in that distribution's pool, entries without answers or with passes outside
        [0, answers], and prompts that already have a posterior and a memory record (observed, or
        loaded from a checkpoint: call this before resuming). The counts are kept in
        `prior_counts` ({"seeded", "ignored"}), logged, and written to curriculum.jsonl
        (`learnability.prior`)."""
        uids: dict[str, set[str] | None] = {}
        seeded = ignored = 0
        for uid, (dist, passes, answers) in prior.items():
            if dist not in self.prompts:
                ignored += 1
                continue
            if dist not in uids:
                pool = self.prompts[dist]
                uids[dist] = {p.uid for p in pool} if isinstance(pool, (list, tuple)) else None
            passes, answers = int(passes), int(answers)
            if (uids[dist] is not None and uid not in uids[dist]) or answers < 1 or not 0 <= passes <= answers:
                ignored += 1
                continue
            new = self.memory.seed(uid, dist, passes, answers)
            if self.learn is not None:
                new = self.learn.seed(uid, dist, passes, answers) or new
            seeded, ignored = seeded + bool(new), ignored + (not new)
        self.prior_counts = {"seeded": seeded, "ignored": ignored}
        log.info("curriculum prior: %d prompts seeded, %d ignored (not in the training pools or no answers)",
                 seeded, ignored)

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
            if self.learn is not None:
                self.learn.update(g)
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
        """`row(step)` as its JSON object (a line of curriculum.jsonl before the trainer's fields)."""
        return self.row(step).to_json()

    def row(self, step: int) -> CurriculumRow:
        """The curriculum's snapshot of `step` (curriculum.jsonl's line; the trainer adds its fields)."""
        dists = self.sampler.report()
        for d in self.names:
            dists[d]["planned"] = self._planned[d] if self._step == step else 0
        budget = None
        if self.cfg.budget is not None:
            budget = {"default": self.budget(step), "slack": self.cfg.budget.slack,
                      "per_distribution": {d: self.budget(step, d) for d in self.names}}
        d3s = self.d3s_fractions(step)
        return CurriculumRow(
            step=step,
            sampler=self.sampler.kind,
            distributions=dists,
            budget=budget,
            hints=None if self.guidance is None else self.guidance.report(),
            filter=None if self.cfg.dynamic_sampling is None else {
                "rounds": self._filter["rounds"], "kept": dict(self._filter["kept"]),
                "dropped": dict(self._filter["dropped"])},
            d3s=None if d3s is None else D3SRow(n=d3s[0], k=d3s[1]),
            prompts=self.memory.summary(self.names, self.cfg.prompts.bins, self.cfg.prompts.top),
            greso=None if self.greso is None else self.greso.report(),
            learnability=None if self.learn is None else {
                "rule": self.cfg.learnability.rule, "prior": self.prior_counts,
                "distributions": self.learn.summary(self.names)},
            alerts=self.alerts.active({d: v["prob"] for d, v in dists.items()}),
        )

    def current_alerts(self, row: CurriculumRow) -> list:
        """`row`'s alerts (possibly taken a few steps ago in an asynchronous run) recomputed with
        every evaluation observed since: its probabilities, today's evals."""
        return self.alerts.active(row.probabilities())

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
            "learnability": None if self.learn is None else {
                **self.learn.state_dict(), "used": {d: sorted(u) for d, u in self._used.items()},
                "prior_counts": self.prior_counts},
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
        # per-prompt keys: absent in older checkpoints (same STATE_VERSION), which then start empty
        if sd.get("prompt_memory") is not None:
            self.memory.load_state_dict(sd["prompt_memory"])
        if self.greso is not None and sd.get("greso") is not None:
            self.greso.load_state_dict(sd["greso"])
        if self.learn is not None and sd.get("learnability") is not None:
            ls = sd["learnability"]
            self.learn.load_state_dict(ls)
            self._used = {d: set(ls["used"].get(d, [])) for d in self.names}
            self.prior_counts = ls.get("prior_counts")
        if sd.get("alerts") is not None:
            self.alerts.load_state_dict(sd["alerts"])
