"""Distribution samplers: which data distribution each prompt slot of the next batch comes from.

Every sampler keeps per-distribution statistics fed once per step by `observe()` and turns
them into sampling probabilities. Implemented (each explained in docs/curriculum.md):

- `Uniform`       every distribution equally likely.
- `FixedWeights`  a fixed mixture from `curriculum.weights` (names left out get weight 0).
- `UCB`           DUMP (docs/curriculum.md, "UCB sampling (DUMP)"), as in the authors'
                  code: FIFO window of the last `window`
                  |a| per distribution; mu_j = mean of the window (0 if empty); n_j = answers
                  ever observed from j; N = sum_j n_j;
                  UCB_j = mu_j + c sqrt(2 ln(N + 1) / (n_j + 1)); p = softmax(UCB / tau).
                  With nothing observed every UCB_j is 0, so the start is uniform.
                  Not copied from the authors: validation rewards are never fed in.
- `SEC`           Self-Evolving Curriculum (docs/curriculum.md, "SEC"): Q_k <- alpha r_k + (1 - alpha) Q_k with
                  r_k = mean |A| over arm k's answers this step, r_k = 0 for arms not drawn;
                  p = softmax(Q / tau); Q starts at 0. A is the std-normalised GRPO advantage
                  recomputed from each group's rewards (`grpo_abs_advantages`), whatever estimator
                  trains (Dr.GRPO, RLOO, PPO): SEC's tau is calibrated on that scale.
- `ALPGMMSampler` ALP-GMM (docs/curriculum.md, "ALP-GMM") on the discrete distributions, each placed
                  at a task-parameter vector; see its docstring for how the teacher's Gaussians become probabilities.
                  Episodes (one per prompt group) reach the teacher in the order the groups were
                  generated (`DistStats.arrival_G`, set by the controller).

|a| is the answer's advantage averaged over its response tokens; under GRPO/Dr.GRPO/RLOO the
advantage is one scalar per answer, so |a| = |A_i|. UCB uses the trainer's advantages (DUMP
does); SEC uses GRPO's (see above); the reported mean_abs_adv is the trainer's.

Probability floor (`min_prob`, the cheap replay remedy; docs/curriculum.md, "Probability floor and alerts"),
applied to every sampler: p' = floor + (1 - K floor) p, which keeps sum(p') = 1 and p' >= floor;
K floor must be <= 1.

Prompt choice inside a distribution is the controller's job; a sampler only says whether it
wants the without-replacement shuffled cursor (`without_replacement`, True for SEC as in its
code) or uniform draws with replacement (DUMP and the others).

All state is JSON-able (`state_dict()` / `load_state_dict()`); RNGs are numpy Generators whose
`bit_generator.state` is stored.

ALP-GMM fits scikit-learn's GaussianMixture (full covariances, AIC model choice, one fixed
random_state per teacher, as the authors' teachDRL code); sklearn is imported when the first fit
happens, and `ALPGMMSampler` checks up front that it is installed.

Over 400 lines on purpose: five distribution samplers behind one interface, each a class
that reads top to bottom.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlcurr.curriculum.config import ALPGMMConfig, SECConfig, UCBConfig
from rlcurr.errors import UserError

GRPO_EPS = 1e-6  # = rlcurr.algos.advantages.EPS (not imported: that module needs torch)


@dataclass
class DistStats:
    """What one distribution produced in one step: per group, per answer rewards and advantages."""

    rewards_G: list[list[float]] = field(default_factory=list)
    advantages_G: list[list[float]] = field(default_factory=list)
    # per group, its position among all groups observed this step (empty = unknown: dict order)
    arrival_G: list[int] = field(default_factory=list)

    @property
    def num_answers(self) -> int:
        return sum(len(r) for r in self.rewards_G)

    @property
    def abs_advantages(self) -> list[float]:
        return [abs(a) for adv in self.advantages_G for a in adv]

    @property
    def mean_reward(self) -> float:
        flat = [r for rs in self.rewards_G for r in rs]
        return float(np.mean(flat)) if flat else 0.0

    @property
    def mean_abs_advantage(self) -> float:
        flat = self.abs_advantages
        return float(np.mean(flat)) if flat else 0.0

    @property
    def mean_grpo_abs_advantage(self) -> float:
        """Mean over all answers of |A_i|, A = GRPO's std-normalised advantage of each group's rewards."""
        flat = [a for rs in self.rewards_G for a in grpo_abs_advantages(rs)]
        return float(np.mean(flat)) if flat else 0.0


def grpo_abs_advantages(rewards: list[float]) -> list[float]:
    """|A_i| with A_i = (r_i - mean r) / (std r + eps), population std, eps as rlcurr.algos.advantages."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return []
    return (np.abs(r - r.mean()) / (r.std() + GRPO_EPS)).tolist()


def softmax(x: np.ndarray, tau: float) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / tau
    z = z - z.max()  # subtract the max first: exp never overflows
    e = np.exp(z)
    return e / e.sum()


def apply_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """p' = floor + (1 - K floor) p: every entry >= floor and the sum stays 1."""
    K = len(p)
    if K * floor > 1 + 1e-12:
        raise ValueError(f"min_prob={floor} times {K} distributions exceeds 1")
    out = floor + (1.0 - K * floor) * np.asarray(p, dtype=np.float64)
    return out / out.sum()


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def _opt(x: float | None) -> float | None:
    return None if x is None else float(x)


class Sampler:
    """Base class: bookkeeping, floor, drawing, reporting. Subclasses give raw probabilities."""

    kind = "base"
    without_replacement = False

    def __init__(self, names: list[str], min_prob: float = 0.0):
        if not names:
            raise ValueError("a sampler needs at least one distribution")
        self.names = list(names)
        self.min_prob = float(min_prob)
        apply_floor(np.full(len(self.names), 1.0 / len(self.names)), self.min_prob)  # validate
        self.count = {n: 0 for n in self.names}  # answers ever observed from each distribution
        self.step_count: dict[str, int] = {n: 0 for n in self.names}
        self.last_reward: dict[str, float | None] = {n: None for n in self.names}
        self.last_abs_adv: dict[str, float | None] = {n: None for n in self.names}

    # ---- to override
    def raw_probabilities(self) -> np.ndarray:
        raise NotImplementedError

    def scores(self) -> dict[str, float | None]:
        raise NotImplementedError

    def _update(self, stats: dict[str, DistStats]) -> None:
        pass

    def _state(self) -> dict:
        return {}

    def _load_state(self, sd: dict) -> None:
        pass

    def reported_abs_adv(self, name: str) -> float | None:
        return self.last_abs_adv[name]

    # ---- common
    def probabilities(self) -> dict[str, float]:
        return dict(zip(self.names, self._probs().tolist()))

    def _probs(self) -> np.ndarray:
        return apply_floor(self.raw_probabilities(), self.min_prob)

    def draw(self, k: int, rng: np.random.Generator) -> list[str]:
        """k distribution names, i.i.d. from the (floored) probabilities."""
        idx = rng.choice(len(self.names), size=k, p=self._probs())
        return [self.names[i] for i in idx]

    def observe(self, stats: dict[str, DistStats]) -> None:
        """One step's statistics; distributions not drawn this step are absent from `stats`."""
        unknown = set(stats) - set(self.names)
        if unknown:
            raise KeyError(f"statistics for unknown distribution(s) {sorted(unknown)}")
        for n in self.names:
            s = stats.get(n)
            drawn = s is not None and s.num_answers > 0
            self.step_count[n] = s.num_answers if drawn else 0
            self.count[n] += self.step_count[n]
            self.last_reward[n] = s.mean_reward if drawn else None
            self.last_abs_adv[n] = s.mean_abs_advantage if drawn else None
        self._update(stats)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per distribution: prob, score, count (answers so far), step_count, mean_reward, mean_abs_adv."""
        probs, scores = self.probabilities(), self.scores()
        return {
            n: {
                "prob": probs[n],
                "score": _opt(scores[n]),
                "count": self.count[n],
                "step_count": self.step_count[n],
                "mean_reward": _opt(self.last_reward[n]),
                "mean_abs_adv": _opt(self.reported_abs_adv(n)),
            }
            for n in self.names
        }

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "names": list(self.names),
            "count": dict(self.count),
            "step_count": dict(self.step_count),
            "last_reward": dict(self.last_reward),
            "last_abs_adv": dict(self.last_abs_adv),
            **self._state(),
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd["kind"] != self.kind or sd["names"] != self.names:
            raise ValueError(
                f"sampler state is for {sd['kind']} over {sd['names']}, not {self.kind} over {self.names}"
            )
        self.count = dict(sd["count"])
        self.step_count = dict(sd["step_count"])
        self.last_reward = dict(sd["last_reward"])
        self.last_abs_adv = dict(sd["last_abs_adv"])
        self._load_state(sd)


class Uniform(Sampler):
    kind = "uniform"

    def raw_probabilities(self) -> np.ndarray:
        return np.full(len(self.names), 1.0 / len(self.names))

    def scores(self) -> dict[str, float | None]:
        return {n: 1.0 for n in self.names}  # every weight equal


class FixedWeights(Sampler):
    kind = "weights"

    def __init__(self, names: list[str], weights: dict[str, float], min_prob: float = 0.0):
        super().__init__(names, min_prob)
        unknown = set(weights) - set(names)
        if unknown:
            raise KeyError(f"weights for unknown distribution(s) {sorted(unknown)}")
        w = np.array([float(weights.get(n, 0.0)) for n in self.names])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        self.weights = w / w.sum()

    def raw_probabilities(self) -> np.ndarray:
        return self.weights.copy()

    def scores(self) -> dict[str, float | None]:
        return dict(zip(self.names, self.weights.tolist()))


class UCB(Sampler):
    """DUMP (docs/curriculum.md, "UCB sampling (DUMP)"). Score = UCB_j; reported mean |adv| = window mean mu_j."""

    kind = "ucb"

    def __init__(self, names: list[str], cfg: UCBConfig = UCBConfig(), min_prob: float = 0.0):
        super().__init__(names, min_prob)
        self.cfg = cfg
        self.window: dict[str, deque[float]] = {n: deque(maxlen=cfg.window) for n in self.names}

    def mu(self, name: str) -> float:
        w = self.window[name]
        return float(np.mean(w)) if w else 0.0

    def ucb_scores(self) -> np.ndarray:
        N = sum(self.count.values())
        bonus = [self.cfg.c * math.sqrt(2.0 * math.log(N + 1) / (self.count[n] + 1)) for n in self.names]
        return np.array([self.mu(n) for n in self.names]) + np.array(bonus)

    def raw_probabilities(self) -> np.ndarray:
        return softmax(self.ucb_scores(), self.cfg.tau)

    def scores(self) -> dict[str, float | None]:
        return dict(zip(self.names, self.ucb_scores().tolist()))

    def reported_abs_adv(self, name: str) -> float | None:
        return self.mu(name)

    def _update(self, stats: dict[str, DistStats]) -> None:
        for n, s in stats.items():
            self.window[n].extend(s.abs_advantages)  # deque(maxlen) drops the oldest: FIFO

    def _state(self) -> dict:
        return {"window": {n: list(w) for n, w in self.window.items()}}

    def _load_state(self, sd: dict) -> None:
        self.window = {n: deque(sd["window"][n], maxlen=self.cfg.window) for n in self.names}


class SEC(Sampler):
    """Self-Evolving Curriculum (docs/curriculum.md, "SEC"). Score = Q_k."""

    kind = "sec"
    without_replacement = True

    def __init__(self, names: list[str], cfg: SECConfig = SECConfig(), min_prob: float = 0.0):
        super().__init__(names, min_prob)
        self.cfg = cfg
        self.q = {n: 0.0 for n in self.names}

    def raw_probabilities(self) -> np.ndarray:
        return softmax(np.array([self.q[n] for n in self.names]), self.cfg.tau)

    def scores(self) -> dict[str, float | None]:
        return dict(self.q)

    def _update(self, stats: dict[str, DistStats]) -> None:
        a = self.cfg.alpha
        for n in self.names:
            s = stats.get(n)
            r = s.mean_grpo_abs_advantage if s is not None and s.num_answers else 0.0  # not drawn: r = 0
            self.q[n] = a * r + (1 - a) * self.q[n]

    def _state(self) -> dict:
        return {"q": dict(self.q)}

    def _load_state(self, sd: dict) -> None:
        self.q = {n: float(sd["q"][n]) for n in self.names}


# ----------------------------------------------------------------------------- ALP-GMM


@dataclass
class GMM:
    """A fitted Gaussian mixture with full covariances (sklearn's weights_, means_, covariances_),
    kept as arrays so that the teacher's state is JSON-able. weights (k,), means (k, d), covs (k, d, d)."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def component_log_prob(self, X_nd: np.ndarray) -> np.ndarray:
        """log w_g + log N(x; mu_g, S_g), shape (n, k)."""
        n, d = X_nd.shape
        out_nk = np.empty((n, len(self.weights)))
        for g in range(len(self.weights)):
            L = np.linalg.cholesky(self.covs[g])
            z_dn = np.linalg.solve(L, (X_nd - self.means[g]).T)
            maha_n = (z_dn**2).sum(axis=0)
            logdet = 2.0 * np.log(np.diag(L)).sum()
            out_nk[:, g] = np.log(self.weights[g]) - 0.5 * (d * math.log(2 * math.pi) + logdet + maha_n)
        return out_nk

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "GMM":
        return cls(np.array(d["weights"]), np.array(d["means"]), np.array(d["covs"]))


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


class ALPGMMTeacher:
    """ALP-GMM (Portelas et al. 2019, docs/curriculum.md, "ALP-GMM"), as in the authors'
    `teachDRL/teachers/algos/alp_gmm.py`:

    - update(task, reward): ALP = |reward - reward of the nearest previous task| (0 while at most
      5 episodes were seen); store [task, ALP]; every `fit_every` episodes fit GMMs with
      k = min_components..max_components on the last `fit_every` [task, ALP] rows (sklearn
      GaussianMixture, full covariances, max_iter = em_iters, random_state = the teacher's seed),
      keep the best AIC.
    - a Gaussian is chosen with probability proportional to its mean ALP (uniformly if all are 0).

    Left out: the authors' continuous task sampling (draw a task vector from the chosen Gaussian
    and 20 % uniformly from the box). rlcurr's environments offer named distributions only (the
    reasoning-gym grid is a finite set of points), and no recipe could reach a continuous task
    space, so `ALPGMMSampler` turns the Gaussians into probabilities of its fixed points instead.

    The nearest-neighbour memory keeps one entry per distinct task vector (the latest reward):
    for identical vectors that is exactly "the nearest previous task" with ties going to the
    most recent, and it keeps the memory small when tasks repeat (named distributions).
    """

    def __init__(self, cfg: ALPGMMConfig = ALPGMMConfig(), seed: int = 0):
        self.cfg = cfg
        self.seed = int(seed) % 2**32  # sklearn's random_state for every fit
        self.episodes = 0
        self.memory_tasks: list[list[float]] = []
        self.memory_rewards: list[float] = []
        self._memory_index: dict[tuple[float, ...], int] = {}
        self.recent: deque[list[float]] = deque(maxlen=cfg.fit_every)  # rows [task..., alp]
        self.gmm: GMM | None = None

    def compute_alp(self, task: np.ndarray, reward: float) -> float:
        alp = 0.0
        if self.episodes > 5:  # authors: ALP only once more than 5 episodes are stored
            T_md = np.asarray(self.memory_tasks)
            j = int(((T_md - task) ** 2).sum(1).argmin())
            alp = abs(reward - self.memory_rewards[j])
        key = tuple(float(x) for x in task)
        if key in self._memory_index:
            self.memory_rewards[self._memory_index[key]] = float(reward)
        else:
            self._memory_index[key] = len(self.memory_tasks)
            self.memory_tasks.append(list(key))
            self.memory_rewards.append(float(reward))
        return alp

    def update(self, task: np.ndarray, reward: float) -> float:
        task = np.asarray(task, dtype=np.float64)
        alp = self.compute_alp(task, reward)
        self.recent.append(task.tolist() + [alp])
        self.episodes += 1
        if self.episodes % self.cfg.fit_every == 0:
            self.fit()
        return alp

    def fit(self) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        X_nd = np.asarray(self.recent, dtype=np.float64)
        best, best_aic = None, np.inf
        for k in range(self.cfg.min_components, min(self.cfg.max_components, len(X_nd)) + 1):
            gm = GaussianMixture(n_components=k, covariance_type="full", max_iter=self.cfg.em_iters,
                                 random_state=self.seed)
            with warnings.catch_warnings():  # repeated task points: fewer distinct clusters than k
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm.fit(X_nd)
            aic = gm.aic(X_nd)
            if aic < best_aic:
                best, best_aic = gm, aic
        if best is not None:  # None: fewer rows than min_components; keep bootstrapping
            self.gmm = GMM(best.weights_.copy(), best.means_.copy(), best.covariances_.copy())

    def bootstrapping(self) -> bool:
        return self.episodes < self.cfg.fit_every or self.gmm is None

    def gaussian_choice_probs(self) -> np.ndarray:
        """P(pick Gaussian g) proportional to its mean ALP (the last coordinate of its mean)."""
        alp_g = np.clip(self.gmm.means[:, -1], 0.0, None)
        if alp_g.sum() <= 0:
            return np.full(len(alp_g), 1.0 / len(alp_g))
        return alp_g / alp_g.sum()

    def discrete_probabilities(self, points_Kd: np.ndarray) -> np.ndarray:
        """Sampling probability of each of K fixed task vectors (see ALPGMMSampler)."""
        K = len(points_Kd)
        uniform = np.full(K, 1.0 / K)
        if self.bootstrapping():
            return uniform
        d = points_Kd.shape[1]
        marginal = GMM(np.ones(len(self.gmm.weights)), self.gmm.means[:, :d], self.gmm.covs[:, :d, :d])
        logq_Kg = marginal.component_log_prob(points_Kd)  # log N(x_j; mu_g, S_g) restricted to task dims
        q_Kg = np.exp(logq_Kg - _logsumexp(logq_Kg, axis=0)[None, :])  # normalise over the K points
        gauss = q_Kg @ self.gaussian_choice_probs()
        return self.cfg.explore * uniform + (1 - self.cfg.explore) * gauss

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,  # every later fit's random_state: part of the state, like an RNG
            "episodes": self.episodes,
            "memory_tasks": [list(t) for t in self.memory_tasks],
            "memory_rewards": list(self.memory_rewards),
            "recent": [list(r) for r in self.recent],
            "gmm": None if self.gmm is None else self.gmm.to_dict(),
        }

    def load_state_dict(self, sd: dict) -> None:
        self.seed = int(sd.get("seed", self.seed))
        self.episodes = int(sd["episodes"])
        self.memory_tasks = [list(t) for t in sd["memory_tasks"]]
        self.memory_rewards = [float(r) for r in sd["memory_rewards"]]
        self._memory_index = {tuple(t): i for i, t in enumerate(self.memory_tasks)}
        self.recent = deque([list(r) for r in sd["recent"]], maxlen=self.cfg.fit_every)
        self.gmm = None if sd["gmm"] is None else GMM.from_dict(sd["gmm"])


def sklearn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


class ALPGMMSampler(Sampler):
    """ALP-GMM over named distributions, each placed at a task-parameter vector x_j
    (`alp_gmm.params`, default: its index in the environment's order scaled to [0, 1]).

    One episode = one prompt group; its reward = the group's mean reward (the authors use one
    episode return). ALP is therefore |mean reward now - mean reward of the last group from the
    same distribution|. Deviation, to get exact probabilities (needed for the floor and for
    reporting): instead of sampling a point from the chosen Gaussian and snapping it to the
    nearest x_j, the Gaussian g gives distribution j the weight N(x_j; mu_g, S_g) normalised
    over the K points. So p_j = explore / K + (1 - explore) sum_g P(g) q_g(j), uniform while
    bootstrapping. Score = mean ALP of j's episodes in the current fit window.

    Caveat: with 0/1 rewards, ALP is noisy even without learning (a binomial difference, largest
    at 50 % success), so this sampler also drifts towards ~50 % distributions, like UCB.
    """

    kind = "alp_gmm"

    def __init__(self, names: list[str], cfg: ALPGMMConfig = ALPGMMConfig(), min_prob: float = 0.0, seed: int = 0):
        super().__init__(names, min_prob)
        self.cfg = cfg
        if cfg.params is not None:
            self.points_Kd = np.array([cfg.params[n] for n in self.names], dtype=np.float64)
        else:
            K = len(self.names)
            self.points_Kd = np.arange(K, dtype=np.float64)[:, None] / max(K - 1, 1)
        if not sklearn_available():
            raise UserError("curriculum.sampler: alp_gmm fits scikit-learn's GaussianMixture, and scikit-learn "
                            "is not installed; pip install scikit-learn (a dependency in pyproject.toml)")
        self.teacher = ALPGMMTeacher(cfg, seed)
        self.recent_alp: dict[str, deque[float]] = {n: deque(maxlen=cfg.fit_every) for n in self.names}

    def raw_probabilities(self) -> np.ndarray:
        return self.teacher.discrete_probabilities(self.points_Kd)

    def scores(self) -> dict[str, float | None]:
        return {n: (float(np.mean(a)) if a else None) for n, a in self.recent_alp.items()}

    def _update(self, stats: dict[str, DistStats]) -> None:
        """One teacher episode per group, in arrival order (groups without `arrival_G` last, in
        distribution order): a fit every `fit_every` episodes sees the groups generated last."""
        episodes = []  # (arrival, distribution index, mean reward)
        for j, n in enumerate(self.names):
            s = stats.get(n)
            if s is None:
                continue
            known = len(s.arrival_G) == len(s.rewards_G)
            for k, rewards in enumerate(s.rewards_G):
                if rewards:
                    episodes.append((s.arrival_G[k] if known else math.inf, j, float(np.mean(rewards))))
        episodes.sort(key=lambda e: e[0])  # stable: unknown arrivals keep their order
        for _, j, reward in episodes:
            self.recent_alp[self.names[j]].append(self.teacher.update(self.points_Kd[j], reward))

    def _state(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "recent_alp": {n: list(a) for n, a in self.recent_alp.items()}}

    def _load_state(self, sd: dict) -> None:
        self.teacher.load_state_dict(sd["teacher"])
        self.recent_alp = {n: deque(sd["recent_alp"][n], maxlen=self.cfg.fit_every) for n in self.names}


def make_sampler(cfg, names: list[str], seed: int = 0) -> Sampler:
    """The sampler a `CurriculumConfig` asks for (distribution names already validated)."""
    if cfg.sampler == "uniform":
        return Uniform(names, cfg.min_prob)
    if cfg.sampler == "weights":
        return FixedWeights(names, cfg.weights, cfg.min_prob)
    if cfg.sampler == "ucb":
        return UCB(names, cfg.ucb, cfg.min_prob)
    if cfg.sampler == "sec":
        return SEC(names, cfg.sec, cfg.min_prob)
    if cfg.sampler == "alp_gmm":
        return ALPGMMSampler(names, cfg.alp_gmm, cfg.min_prob, seed)
    raise ValueError(f"unknown sampler {cfg.sampler!r}")
