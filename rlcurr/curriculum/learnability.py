"""Learnability prompt sampler: which prompt of a distribution fills a slot, chosen by a Bayesian
estimate of each prompt's pass rate. Pure Python + numpy; the controller drives it.

Posterior (both rules). Per prompt (by `Prompt.uid`) a Beta(alpha, beta) over its pass rate,
Beta(alpha0, beta0) = `prior` until the prompt is observed. Every on-policy group the controller
observes (all rounds of a step, SPEED screening groups with their screen_n answers) updates it with
s passes out of k answers (pass: `ScoredGroup.correct` when set, else reward > 0), forgetting first:

    alpha <- lambda alpha + (1 - lambda) alpha0 + s
    beta  <- lambda beta  + (1 - lambda) beta0  + (k - s)

which is the authors' update (thu-rllab/MoPPS, recipe/ours/mopps.py `PosteriorSampler.train`):
old evidence decays towards the prior with lambda = `decay`; 1 keeps everything.

Selection. The distribution sampler (uniform, UCB, SEC, ...) picks a distribution per slot as
without this sampler; for each distribution drawn c times in a plan, the controller takes
m = `candidates` * c candidate prompts of it, the next ones of a shuffled pass over its prompts
(each prompt is a candidate once per pass, as in the authors' epoch dataloader), leaving out
prompts already planned this step, and this sampler keeps c of them:

- rule `mopps` (Model Predictive Prompt Selection, Qu et al. 2025, "Can Prompt Difficulty be Online
  Predicted for Accelerating RL Finetuning of Reasoning Models?", arXiv 2507.04632; code thu-rllab/MoPPS,
  `PosteriorSampler.sample_batch` with bandit_sample_strategy=topk): draw p ~ Beta(alpha, beta) per
  candidate (Thompson sampling) and keep the c with the smallest |p - target|. Settings of the
  authors' topk scripts for countdown and geo3k: prior Beta(1, 1), target 0.5, decay 0.5,
  candidates 8 (their math scripts: 16, decay 1.0, posteriors initialised from a profile). The paper
  claims up to 1.8x faster training than uniform sampling, with no extra rollouts.
- rule `lilo` (Foster & Foerster 2025, "Learning to Reason at the Frontier of Learnability", LILO):
  learnability p (1 - p), the variance of a pass; we score the posterior mean m = alpha / (alpha +
  beta) by m (1 - m) and keep the top c (deterministic; ties in candidate order, which is random).
  The paper estimates p with extra rollouts of every candidate before training (rejection sampling
  for learnability) and claims ~3x fewer steps on GSM8K; we spend no extra rollouts, so a prompt
  never observed (prior mean 0.5 with Beta(1, 1)) scores highest: unseen candidates go first.

Kept candidates fill the distribution's slots in their rank order. A prompt fills at most one slot
per step (DAPO refill plans and SPEED screening rounds included) while the distribution still has
prompts not planned this step; once all were planned, a new round over the whole distribution
starts (a distribution with fewer prompts than slots repeats prompts).

With curriculum.greso the GRESO skip is applied to the candidates before ranking (`Greso.screen`:
a candidate with a zero-variance streak is dropped with its skip probability; too few left: dropped
ones are taken back in order); GRESO's p adaptation is unchanged.

`seed` starts a prompt's posterior from a profile of the starting policy (passes of answers):
Beta(alpha0 + passes, beta0 + answers - passes); the authors' math runs weight the profile 3x
(`initialize_from_json`: successes * 3 + alpha0), we weight it 1x. A prompt that already has a
posterior (observed, or loaded from a checkpoint) is left alone.

Also different from the authors': their candidates are a whole over-sampled batch over one dataset;
ours are per distribution, after the distribution sampler's choice. A prompt drawn twice in one
step is updated (and decayed) twice. Their `threshold` strategy is not implemented.

`summary()` (curriculum.jsonl `learnability`): per distribution, the prompts picked this step and
the mean of their posterior means at pick time, the prompts with a posterior, and a histogram of
those posterior means over HIST_BINS equal bins of [0, 1] (the last bin includes 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlcurr.curriculum.prompts import pass_count
from rlcurr.types import Prompt, ScoredGroup

HIST_BINS = 5


class Learnability:
    """Beta posteriors per prompt and the mopps / lilo choice among candidates (module docstring)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.alpha0, self.beta0 = (float(x) for x in cfg.prior)
        self.post: dict[str, list] = {}  # uid -> [distribution, alpha, beta]
        self.picked: dict[str, list[float]] = {}  # this step: posterior means of the prompts picked

    # ------------------------------------------------------------------ posteriors
    def params(self, uid: str) -> tuple[float, float]:
        r = self.post.get(uid)
        return (self.alpha0, self.beta0) if r is None else (r[1], r[2])

    def mean(self, uid: str) -> float:
        a, b = self.params(uid)
        return a / (a + b)

    def update(self, g: ScoredGroup) -> None:
        """One observed group: decay towards the prior, then add its passes and failures."""
        s, k = pass_count(g)
        if k == 0:
            return
        lam = self.cfg.decay
        a, b = self.params(g.prompt.uid)
        self.post[g.prompt.uid] = [g.prompt.distribution,
                                   lam * a + (1 - lam) * self.alpha0 + s,
                                   lam * b + (1 - lam) * self.beta0 + (k - s)]

    def seed(self, uid: str, distribution: str, passes: int, answers: int) -> bool:
        """Posterior Beta(alpha0 + passes, beta0 + answers - passes) for a profiled prompt; False (no
        change) when it already has one or answers < 1."""
        if uid in self.post or answers < 1:
            return False
        self.post[uid] = [distribution, self.alpha0 + passes, self.beta0 + (answers - passes)]
        return True

    # ------------------------------------------------------------------ selection
    def begin_step(self) -> None:
        self.picked = {}

    def select(self, dist: str, cands: list[Prompt], take: int, rng: np.random.Generator) -> list[int]:
        """Positions in `cands` of the `take` candidates kept, best first. mopps draws one Beta
        sample per candidate from `rng`; lilo draws nothing."""
        ab = np.array([self.params(c.uid) for c in cands], dtype=np.float64).reshape(-1, 2)
        if self.cfg.rule == "mopps":
            key = np.abs(rng.beta(ab[:, 0], ab[:, 1]) - self.cfg.target)
        else:
            m = ab[:, 0] / ab.sum(axis=1)
            key = -(m * (1 - m))
        chosen = np.argsort(key, kind="stable")[:take].tolist()
        self.picked.setdefault(dist, []).extend(self.mean(cands[i].uid) for i in chosen)
        return chosen

    # ------------------------------------------------------------------ report, state
    def summary(self, names: list[str]) -> dict[str, dict[str, Any]]:
        by: dict[str, list[float]] = {d: [] for d in names}
        for _, (d, a, b) in self.post.items():
            by.setdefault(d, []).append(a / (a + b))
        out = {}
        for d in names:
            hist = [0] * HIST_BINS
            for m in by[d]:
                hist[min(int(m * HIST_BINS), HIST_BINS - 1)] += 1
            picked = self.picked.get(d, [])
            out[d] = {"picked": len(picked), "picked_mean": sum(picked) / len(picked) if picked else None,
                      "tracked": len(by[d]), "mean_hist": hist}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"post": {u: list(r) for u, r in self.post.items()},
                "picked": {d: list(v) for d, v in self.picked.items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.post = {u: [r[0], float(r[1]), float(r[2])] for u, r in sd["post"].items()}
        self.picked = {d: [float(x) for x in v] for d, v in sd["picked"].items()}
