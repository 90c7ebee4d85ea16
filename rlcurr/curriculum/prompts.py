"""Prompt-level curriculum: per-prompt memory, GRESO selective rollouts, alerts.

`PromptMemory` — what the controller remembers about each prompt it has seen, keyed by
`Prompt.uid` (unique within the environment). Updated by `CurriculumController.observe` from
every on-policy group, in the order given; a prompt drawn twice in one step (two rounds of
dynamic sampling, SPEED screening + finishing) is updated twice. Per prompt:

- `drawn`      groups observed
- `ema`        pass-rate EMA: ema <- (1 - a) ema + a * pass_rate(group), initialised with the first
               group's pass rate; an answer passes when `ScoredGroup.correct[i]` (the env verifier
               scored it > 0) if the trainer set it, else when its reward > 0
- `last_mixed` step of the last group with non-zero reward variance (None: never)
- `streak`     number of consecutive zero-variance groups of the same kind up to the latest one
               (0 after a mixed one; a change of kind, e.g. hard, hard, easy, restarts it at 1)
- `kind`       "easy" (all answers pass) / "hard" (none pass) of the latest zero-variance group,
               None when the latest group was mixed

Groups of any size >= 1 are accepted. A one-answer group (e.g. a tiny screening group) has no
reward variance to speak of: it updates `drawn` and the EMA but leaves `streak`, `kind` and
`last_mixed` alone. A group whose rewards are all equal while its `correct` flags are mixed
(reward terms other than the verifier) is zero-variance; its kind is easy when most answers pass.

`PromptMemory.seed` enters a profile of the starting policy (passes out of answers per prompt, see
`CurriculumController.seed_prior`) as one observed group before step 0: 0/G or G/G is a
zero-variance group of kind hard / easy (streak 1), anything else a mixed group (last_mixed = -1);
ema = passes / answers; `drawn` stays 0 (it counts groups drawn in training). A prompt that already
has a record is left alone.

GRESO (docs/curriculum.md, "GRESO"; Zheng et al., "Act Only When It Pays", arXiv 2506.02177; authors' code
Infini-AI-Lab/GRESO, verl/trainer/ppo/ray_trainer.py and train-scripts/*_greso.sh):

- Skip rule (paper Sec. 4, code `DataProfiler.easy/hard_probabilistic_skip` in
  verl/trainer/ttis/presampling_selector.py): a candidate prompt whose last z >= 1 appearances were
  all zero-variance groups of the same kind is skipped with probability 1 - max(p^z, keep_floor),
  p = p_easy if they were all-correct, p_hard if all-wrong. The code's floor 0.01 (`keep_floor`)
  keeps re-exploring a prompt however long its streak (at most a 0.99 skip); its count stops at the
  first appearance of another kind, so hard, hard, easy is z = 1 easy (skip 1 - p_easy), not 3.
  Here an "appearance" is one observed group (the paper counts epochs; our prompts are drawn per
  step, with replacement for most samplers). A skipped candidate
  is replaced by the next candidate from the same distribution (the controller's `_pick`), for at
  most `max_tries` skips per slot; then the last candidate is taken anyway (bounded work when a
  distribution is all zero-variance).
- p adaptation (code: `fit()`, "adjust exploration factor"): after each step, over all groups
  generated in the step (every round), easy share = all-correct groups / groups and hard share =
  all-wrong groups / groups. If hard share >= target_hard: p_hard <- max(p_hard - step, p_min)
  (skip more), else p_hard <- min(p_hard + step, p_max); likewise easy. The code's targets:
  target_easy = target_zero_variance / 3, target_hard = 2 * target_zero_variance / 3 ("more
  exploration on hard examples"); defaults from its scripts and code: p_easy = p_hard = 0.5,
  target_zero_variance = 0.25, step 0.01, p in [0.05, 0.95].
- Deviations: the code counts shares weighted by answers (equal to ours when every group has n
  answers) and adapts only from its second epoch on; we count groups with >= 2 answers and adapt
  from the first observed step. The code judges a group easy / hard by its mean reward (>= 0.98 /
  <= 0.11); we by zero reward variance (kind by majority of passes). The code filters a whole
  over-sampled batch at once; we filter per slot, which composes with any distribution sampler and
  with DAPO refill plans. With curriculum.learnability the skip is applied to the learnability
  sampler's candidate pool instead (`Greso.screen`, see learnability.py); max_tries is then unused.

Alerts — `Alerts` keeps (a) per distribution the number of consecutive steps whose next-step
sampling probability sat at the floor (max(min_prob, alerts.starve_prob); exact-probability
samplers `uniform`/`weights` never starve: their mixture is the user's choice) and raises
"starve" once that count exceeds `starve_steps`; (b) per distribution the best held-out accuracy
so far and raises "forget" while the latest accuracy is more than `forget_drop` below it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlcurr.types import ScoredGroup

# one record per uid: [distribution, drawn, ema, last_mixed, streak, kind, last_zero_var]
_DIST, _DRAWN, _EMA, _LAST_MIXED, _STREAK, _KIND, _LAST_ZV = range(7)


def pass_count(g: ScoredGroup) -> tuple[int, int]:
    """(answers that passed, answers): `correct` when the trainer set it for every answer, else reward > 0."""
    k = len(g.rewards)
    passed = list(g.correct) if g.correct is not None and len(g.correct) == k else [r > 0 for r in g.rewards]
    return sum(bool(x) for x in passed), k


def group_outcome(g: ScoredGroup) -> tuple[float, bool | None, str | None]:
    """(pass rate, zero variance (None for a one-answer group), kind: "easy"/"hard"/None)."""
    s, k = pass_count(g)
    rate = s / k
    if k < 2:
        return rate, None, None
    zero_var = max(g.rewards) == min(g.rewards)
    if not zero_var:
        return rate, False, None
    return rate, True, "easy" if rate >= 0.5 else "hard"


class PromptMemory:
    """Per-prompt statistics (see the module docstring). JSON-able state."""

    def __init__(self, ema_alpha: float = 0.5):
        self.alpha = float(ema_alpha)
        self.rec: dict[str, list] = {}

    def update(self, step: int, g: ScoredGroup) -> tuple[float, bool | None, str | None]:
        rate, zv, kind = group_outcome(g)
        r = self.rec.get(g.prompt.uid)
        if r is None:
            r = self.rec[g.prompt.uid] = [g.prompt.distribution, 0, rate, None, 0, None, None]
        else:
            r[_EMA] = (1 - self.alpha) * r[_EMA] + self.alpha * rate
        r[_DRAWN] += 1
        if zv is True:  # a streak counts groups of one kind (GRESO's code); another kind restarts it
            r[_STREAK] = r[_STREAK] + 1 if r[_KIND] == kind else 1
            r[_KIND] = kind
            r[_LAST_ZV] = True
        elif zv is False:
            r[_STREAK], r[_KIND], r[_LAST_ZV] = 0, None, False
            r[_LAST_MIXED] = step
        return rate, zv, kind

    def seed(self, uid: str, distribution: str, passes: int, answers: int) -> bool:
        """Enter a profiled prompt (`passes` of `answers` passed) as one group seen before step 0
        (module docstring). False, and nothing changes, when `uid` has a record or answers < 1."""
        if uid in self.rec or answers < 1:
            return False
        rate = passes / answers
        r = self.rec[uid] = [distribution, 0, rate, None, 0, None, None]
        if answers >= 2:
            if 0 < passes < answers:
                r[_LAST_MIXED], r[_LAST_ZV] = -1, False
            else:
                r[_STREAK], r[_KIND], r[_LAST_ZV] = 1, "easy" if passes == answers else "hard", True
        return True

    def get(self, uid: str) -> dict[str, Any] | None:
        r = self.rec.get(uid)
        if r is None:
            return None
        return {"distribution": r[_DIST], "drawn": r[_DRAWN], "ema": r[_EMA], "last_mixed": r[_LAST_MIXED],
                "streak": r[_STREAK], "kind": r[_KIND], "last_zero_var": r[_LAST_ZV]}

    def streak(self, uid: str) -> tuple[int, str | None]:
        r = self.rec.get(uid)
        return (0, None) if r is None else (r[_STREAK], r[_KIND])

    def steps_since_mixed(self, uid: str, step: int) -> int | None:
        r = self.rec.get(uid)
        return None if r is None or r[_LAST_MIXED] is None else step - r[_LAST_MIXED]

    def summary(self, names: list[str], bins: int = 5, top: int = 3) -> dict[str, dict[str, Any]]:
        """Per distribution: prompts seen, histogram of pass-rate EMAs over `bins` equal bins of [0, 1]
        (the last bin includes 1), share of prompts whose latest >= 2-answer group was zero-variance,
        and the `top` hardest / easiest prompts as [uid, ema] (ties by uid)."""
        by: dict[str, list[tuple[str, list]]] = {d: [] for d in names}
        for uid, r in self.rec.items():
            by.setdefault(r[_DIST], []).append((uid, r))
        out = {}
        for d in names:
            items = by[d]
            hist = [0] * bins
            for _, r in items:
                hist[min(int(r[_EMA] * bins), bins - 1)] += 1
            judged = [r for _, r in items if r[_LAST_ZV] is not None]
            asc = sorted(items, key=lambda x: (x[1][_EMA], x[0]))
            desc = sorted(items, key=lambda x: (-x[1][_EMA], x[0]))
            out[d] = {
                "seen": len(items),
                "pass_hist": hist,
                "zero_var_share": (sum(1 for r in judged if r[_LAST_ZV]) / len(judged)) if judged else None,
                "hardest": [[u, round(r[_EMA], 4)] for u, r in asc[:top]],
                "easiest": [[u, round(r[_EMA], 4)] for u, r in desc[:top]],
            }
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "rec": {u: list(r) for u, r in self.rec.items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.rec = {u: list(r) for u, r in sd["rec"].items()}


class Greso:
    """GRESO's skip filter and its adaptive exploration probabilities (module docstring)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.p = {"easy": float(cfg.p_easy), "hard": float(cfg.p_hard)}
        self.target = {"easy": cfg.target_zero_variance / 3, "hard": cfg.target_zero_variance * 2 / 3}
        self.skipped: dict[str, int] = {}  # this step, per distribution
        self.last_share: dict[str, float | None] = {"easy": None, "hard": None}

    def skip_probability(self, streak: int, kind: str | None) -> float:
        """1 - max(p^z, keep_floor) for a prompt with z = `streak` consecutive zero-variance groups of
        kind `kind`; 0 without a streak."""
        if streak <= 0 or kind is None:
            return 0.0
        return 1.0 - max(self.p[kind] ** streak, self.cfg.keep_floor)

    def begin_step(self) -> None:
        self.skipped = {}

    def choose(self, dist: str, pick, memory: PromptMemory, rng: np.random.Generator):
        """A prompt of `dist`: candidates from `pick()` until one is not skipped (or max_tries skips).
        Draws one uniform from `rng` per candidate that has a zero-variance streak, none otherwise."""
        cand = pick()
        for _ in range(self.cfg.max_tries):
            q = self.skip_probability(*memory.streak(cand.uid))
            if q <= 0.0 or rng.random() >= q:
                return cand
            self.skipped[dist] = self.skipped.get(dist, 0) + 1
            cand = pick()
        return cand

    def screen(self, dist: str, cands: list, memory: PromptMemory, rng: np.random.Generator, need: int) -> list[int]:
        """GRESO on a candidate pool (the learnability sampler's): positions in `cands` of those kept.
        Each candidate with a streak is dropped with its skip probability (one uniform from `rng`
        each, in order); when fewer than `need` remain, dropped ones are taken back in candidate
        order. Counts the dropped ones left out as skipped."""
        drop = []
        for c in cands:
            q = self.skip_probability(*memory.streak(c.uid))
            drop.append(q > 0.0 and rng.random() < q)
        dropped = [i for i, d in enumerate(drop) if d]
        for i in dropped[:max(need - (len(cands) - len(dropped)), 0)]:
            drop[i] = False  # too few left: taken anyway
        if any(drop):
            self.skipped[dist] = self.skipped.get(dist, 0) + sum(drop)
        return [i for i, d in enumerate(drop) if not d]

    def adapt(self, outcomes: list[tuple[bool | None, str | None]]) -> None:
        """One step's p update from (zero_var, kind) of every generated group (one-answer groups ignored)."""
        judged = [(zv, k) for zv, k in outcomes if zv is not None]
        if not judged:
            return
        c = self.cfg
        for kind in ("easy", "hard"):
            share = sum(1 for zv, k in judged if zv and k == kind) / len(judged)
            self.last_share[kind] = share
            if share >= self.target[kind]:
                self.p[kind] = max(self.p[kind] - c.step, c.p_min)
            else:
                self.p[kind] = min(self.p[kind] + c.step, c.p_max)

    def report(self) -> dict[str, Any]:
        return {"p_easy": self.p["easy"], "p_hard": self.p["hard"], "skipped": sum(self.skipped.values()),
                "skipped_by_distribution": dict(self.skipped),
                "easy_share": self.last_share["easy"], "hard_share": self.last_share["hard"]}

    def state_dict(self) -> dict[str, Any]:
        return {"p": dict(self.p), "skipped": dict(self.skipped), "last_share": dict(self.last_share)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.p = {k: float(v) for k, v in sd["p"].items()}
        self.skipped = {k: int(v) for k, v in sd["skipped"].items()}
        self.last_share = dict(sd["last_share"])


class Alerts:
    """Starvation and forgetting alerts (module docstring)."""

    def __init__(self, cfg, names: list[str], floor: float, static_sampler: bool):
        self.cfg, self.names = cfg, list(names)
        self.floor = max(floor, cfg.starve_prob)
        self.static = static_sampler
        self.at_floor = {d: 0 for d in self.names}
        self.best: dict[str, list] = {}    # dist -> [best accuracy, its step]
        self.latest: dict[str, list] = {}  # dist -> [latest accuracy, its step]

    def observe_probs(self, probs: dict[str, float]) -> None:
        for d in self.names:
            starving = not self.static and probs[d] <= self.floor * (1 + 1e-9) + 1e-12
            self.at_floor[d] = self.at_floor[d] + 1 if starving else 0

    def observe_eval(self, step: int, acc: dict[str, float]) -> None:
        for d, a in acc.items():
            if d not in self.at_floor or a is None:
                continue
            a = float(a)
            self.latest[d] = [a, step]
            if d not in self.best or a > self.best[d][0]:
                self.best[d] = [a, step]

    def active(self, probs: dict[str, float]) -> list[dict[str, Any]]:
        out = []
        for d in self.names:
            if self.at_floor[d] > self.cfg.starve_steps:
                out.append({"kind": "starve", "distribution": d, "steps": self.at_floor[d], "prob": probs[d]})
        for d in self.names:
            if d in self.latest and d in self.best:
                (a, s), (b, bs) = self.latest[d], self.best[d]
                if b - a > self.cfg.forget_drop:
                    out.append({"kind": "forget", "distribution": d, "accuracy": a, "step": s,
                                "best": b, "best_step": bs, "drop": b - a})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"at_floor": dict(self.at_floor), "best": {d: list(v) for d, v in self.best.items()},
                "latest": {d: list(v) for d, v in self.latest.items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.at_floor = {d: int(sd["at_floor"].get(d, 0)) for d in self.names}
        self.best = {d: list(v) for d, v in sd["best"].items()}
        self.latest = {d: list(v) for d, v in sd["latest"].items()}


def alert_text(a: dict[str, Any]) -> str:
    """One short line for an alert (progress line, inspect)."""
    if a.get("kind") == "starve":
        return f"starving {a.get('distribution')}: p={a.get('prob', 0):.3g} at floor {a.get('steps')} steps"
    if a.get("kind") == "forget":
        return (f"forgetting {a.get('distribution')}: eval {a.get('accuracy', 0):.3f} at step {a.get('step')}, "
                f"best {a.get('best', 0):.3f} at step {a.get('best_step')}")
    return str(a)
