"""Curriculum section of the recipe (see rlcurr.curriculum.controller).

Everything here is validated on its own (types, ranges, "sampler=weights needs weights").
Checks that need the environment (do `weights` / `budget.per_distribution` /
`alp_gmm.params` name real distributions?) happen in `CurriculumController`, which raises a
`UserError` naming the dotted key and the valid names.

Defaults are the papers'; docs/curriculum.md explains each method and what rlcurr changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rlcurr.paths import recipe_relative


class CurriculumSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UCBConfig(CurriculumSection):
    """DUMP (docs/curriculum.md, "UCB sampling (DUMP)"): UCB_j = mean|A| over a FIFO window
    + c sqrt(2 ln(N+1) / (n_j+1))."""

    c: float = Field(1.0, ge=0, description="exploration weight")
    tau: float = Field(0.1, gt=0, description="softmax temperature over UCB scores")
    window: int = Field(300, ge=1, description="answers kept per distribution for mean |A|")


class SECConfig(CurriculumSection):
    """Self-Evolving Curriculum (docs/curriculum.md, "SEC"): TD(0) on mean |A|, softmax(Q / tau)."""

    alpha: float = Field(0.1, gt=0, le=1, description="TD(0) step size")
    tau: float = Field(1.0, gt=0, description="softmax temperature over Q")


class ALPGMMConfig(CurriculumSection):
    """ALP-GMM (docs/curriculum.md, "ALP-GMM"): GMMs on [task params, ALP], sample a Gaussian by its mean ALP."""

    fit_every: int = Field(250, ge=2, description="episodes (prompt groups) between GMM fits")
    explore: float = Field(0.2, ge=0, le=1, description="share of uniform random draws")
    min_components: int = Field(2, ge=1)
    max_components: int = Field(10, ge=1)
    em_iters: int = Field(100, ge=1, description="max_iter of each sklearn GaussianMixture fit (its default)")
    params: dict[str, list[float]] | None = Field(
        None, description="task-parameter vector per distribution; default: its index scaled to [0, 1]"
    )

    @model_validator(mode="after")
    def _components(self) -> "ALPGMMConfig":
        if self.min_components > self.max_components:
            raise ValueError("alp_gmm.min_components must be <= alp_gmm.max_components")
        if self.params:
            dims = {len(v) for v in self.params.values()}
            if len(dims) != 1 or 0 in dims:
                raise ValueError("alp_gmm.params: every vector must have the same, non-zero length")
        return self


class BudgetRange(CurriculumSection):
    start: int = Field(ge=1)
    end: int = Field(ge=1)


class BudgetConfig(CurriculumSection):
    """Token-budget tightening (docs/curriculum.md, "Budget tightening"); budget.py has the shapes."""

    shape: Literal["exponential", "linear", "cosine", "step"] = "exponential"
    start: int = Field(256, ge=1, description="B0: budget at step 0")
    end: int = Field(64, ge=1, description="B_min: final (exponential: floor) budget")
    gamma: float = Field(0.7, gt=0, le=1, description="exponential: factor per stage")
    every: int = Field(1, ge=1, description="exponential/step: steps per stage (T)")
    steps: int | None = Field(None, ge=1, description="linear/cosine/step: steps to reach `end`; default trainer.steps")
    slack: int = Field(0, ge=0, description="extra max_tokens beyond the budget")
    per_distribution: dict[str, BudgetRange] | None = None
    # Bound to the length_budget reward's params by rlcurr.config (which its weight in `rewards`
    # multiplies again). Default 1: the value length_budget used before these were wired, so recipes
    # that set only the reward weight (budget_arith: 0.5) keep their penalty.
    penalty: float = Field(1.0, ge=0, description="length_budget: slope of the over-budget length penalty")
    penalty_cap: float = Field(1.0, gt=0, description="length_budget: cap on (tokens - budget) / budget")

    @model_validator(mode="after")
    def _decreasing(self) -> "BudgetConfig":
        ranges = [(self.start, self.end)] + [(r.start, r.end) for r in (self.per_distribution or {}).values()]
        if self.shape == "exponential" and any(s < e for s, e in ranges):
            raise ValueError("budget.shape=exponential decays from start to end: start must be >= end")
        return self


class GuidanceConfig(CurriculumSection):
    """Guide-GRPO (docs/curriculum.md, "Guide-GRPO"): re-roll all-wrong groups with the prompt's hint in context."""

    success_threshold: float = Field(0.001, ge=0, lt=1, description="re-roll groups with success rate <= this")
    max_rerolls: int | None = Field(None, ge=0, description="per step; None = no limit")
    success_reward: str | None = Field(
        None, description="reward function whose value > 0 means success; default: total reward > 0"
    )


class DynamicSamplingConfig(CurriculumSection):
    """DAPO dynamic sampling (docs/curriculum.md, "DAPO dynamic sampling"): drop zero-variance groups,
    regenerate to fill the batch."""

    max_rounds: int = Field(4, ge=1, description="generation rounds per step before giving up")


class D3SConfig(CurriculumSection):
    """D3S (docs/curriculum.md, "D3S"): keep fractions, linear in training progress from *_init to *_final."""

    n_init: float = Field(0.5, gt=0, le=1, description="share of answers kept per group at the start")
    n_final: float = Field(1.0, gt=0, le=1)
    k_init: float = Field(0.5, gt=0, le=1, description="share of tokens trained on at the start")
    k_final: float = Field(1.0, gt=0, le=1)


class EADConfig(CurriculumSection):
    """Exploratory Annealed Decoding (docs/curriculum.md, "EAD")."""

    tau_max: float = Field(1.2, gt=0)
    tau_min: float = Field(0.1, gt=0, description="0.1 small models, 0.8 at 7B")
    d0: float = Field(25.0, gt=0)
    alpha: float = Field(5.0, ge=0)
    d_max: float = Field(40000.0, gt=0)
    warm_tokens: int = Field(10, ge=0, description="positions t < warm_tokens use temperature 1.0")


class SpeedConfig(CurriculumSection):
    """SPEED-RL (docs/curriculum.md, "SPEED-RL", rlcurr/curriculum/speed.py; screen_n and the band are the authors'
    defaults, Zanette-Labs/speed-rl; max_rounds is ours): screen_n answers per candidate prompt;
    prompts whose screened pass rate is strictly inside (low, high) get rollout.n - screen_n
    more, merged into one group."""

    screen_n: int = Field(4, ge=2, description="screening answers per prompt (< rollout.n)")
    low: float = Field(0.0, ge=0, lt=1, description="accept a screened pass rate > low")
    high: float = Field(1.0, gt=0, le=1, description="accept a screened pass rate < high")
    max_rounds: int = Field(8, ge=1, description="screening rounds per step before giving up")

    @model_validator(mode="after")
    def _band(self) -> "SpeedConfig":
        if self.low >= self.high:
            raise ValueError("speed.low must be < speed.high (accepted: low < pass rate < high)")
        return self


class PromptMemoryConfig(CurriculumSection):
    """`curriculum.prompts`: the per-prompt memory (rlcurr/curriculum/prompts.py: pass-rate EMA and
    the summary written to curriculum.jsonl), and an optional prior from `rlcurr profile`
    (rlcurr/profile.py): `prior` seeds the memory and the samplers with the profiled pass counts;
    `keep_pass: [lo, hi]` also drops, before training, the train prompts whose profiled pass rate
    lies outside [lo, hi] (prompts the profile does not list are kept)."""

    ema_alpha: float = Field(0.5, gt=0, le=1, description="weight of the newest group in the pass-rate EMA")
    bins: int = Field(5, ge=1, le=20, description="pass-rate histogram bins in curriculum.jsonl")
    top: int = Field(3, ge=0, le=20, description="hardest / easiest prompts listed per distribution")
    prior: str | None = Field(None, description="a profile.jsonl written by `rlcurr profile`, or its directory")
    keep_pass: tuple[float, float] | None = Field(
        None, description="[lo, hi]: keep only train prompts whose profiled pass rate is in [lo, hi]; needs prior")

    @field_validator("prior")
    @classmethod
    def _prior_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return recipe_relative(value, (info.context or {}).get("recipe_dir"))  # loading it says if missing

    @model_validator(mode="after")
    def _band(self) -> "PromptMemoryConfig":
        if self.keep_pass is not None:
            lo, hi = self.keep_pass
            if not (0 <= lo <= hi <= 1):
                raise ValueError(f"keep_pass must be [lo, hi] with 0 <= lo <= hi <= 1 (got [{lo:g}, {hi:g}])")
            if self.prior is None:
                raise ValueError("keep_pass needs curriculum.prompts.prior (the profile whose pass rates it reads); "
                                 "make one with `rlcurr profile RECIPE`")
        return self


class GresoConfig(CurriculumSection):
    """GRESO (docs/curriculum.md, "GRESO", arXiv 2506.02177; defaults from the authors' code Infini-AI-Lab/GRESO):
    skip a prompt with z consecutive zero-variance groups of one kind with probability
    1 - max(p^z, keep_floor)."""

    p_easy: float = Field(0.5, ge=0, le=1, description="initial exploration probability, all-correct prompts")
    p_hard: float = Field(0.5, ge=0, le=1, description="initial exploration probability, all-wrong prompts")
    target_zero_variance: float = Field(0.25, ge=0, le=1,
                                        description="target zero-variance share; easy gets 1/3, hard 2/3 of it")
    step: float = Field(0.01, ge=0, le=1, description="p change per step")
    p_min: float = Field(0.05, ge=0, le=1)
    p_max: float = Field(0.95, ge=0, le=1)
    max_tries: int = Field(10, ge=0, description="skips per slot before a candidate is taken anyway")
    keep_floor: float = Field(0.01, ge=0, le=1, description="lowest keep probability, whatever the streak "
                                                            "(the authors' code: max(p^z, 0.01))")

    @model_validator(mode="after")
    def _range(self) -> "GresoConfig":
        if self.p_min > self.p_max:
            raise ValueError("greso.p_min must be <= greso.p_max")
        return self


class LearnabilityConfig(CurriculumSection):
    """Prompt choice inside a distribution by a Beta posterior of each prompt's pass rate
    (rlcurr/curriculum/learnability.py, where the rules, the papers' settings and what differs are).
    rule=mopps: Thompson sample p ~ Beta per candidate, keep those closest to `target` (MoPPS,
    thu-rllab/MoPPS: prior Beta(1, 1), target 0.5, decay 0.5, 8x candidates in its countdown / geo3k
    scripts). rule=lilo: keep the candidates of highest m (1 - m), m the posterior mean (LILO, Foster
    & Foerster 2025); `target` is not used."""

    rule: Literal["mopps", "lilo"] = "mopps"
    target: float = Field(0.5, gt=0, lt=1, description="mopps: wanted pass rate")
    decay: float = Field(0.5, ge=0, le=1, description="forgetting factor lambda per observed group (1: none)")
    prior: tuple[float, float] = Field((1.0, 1.0), description="[alpha0, beta0] of the Beta prior")
    candidates: int = Field(8, ge=1, description="candidate pool per distribution, a multiple of its slots to fill")

    @model_validator(mode="after")
    def _prior(self) -> "LearnabilityConfig":
        if min(self.prior) <= 0:
            raise ValueError(f"learnability.prior must be two positive numbers [alpha0, beta0] "
                             f"(got {list(self.prior)})")
        return self


class AlertsConfig(CurriculumSection):
    """Starvation and forgetting alerts (curriculum.jsonl `alerts`, progress line, rlcurr inspect)."""

    starve_steps: int = Field(50, ge=1, description="alert when a distribution sits at its floor probability "
                                                    "for more than this many steps")
    starve_prob: float = Field(0.0, ge=0, lt=1, description="floor used when it is above min_prob")
    forget_drop: float = Field(0.1, gt=0, description="alert when held-out accuracy is this far below its best")


class CurriculumConfig(CurriculumSection):
    sampler: Literal["uniform", "weights", "ucb", "sec", "alp_gmm"] = "uniform"
    weights: dict[str, float] | None = None  # sampler=weights: fixed mixture
    min_prob: float = Field(0.0, ge=0, lt=1, description="probability floor per distribution")
    ucb: UCBConfig = UCBConfig()
    sec: SECConfig = SECConfig()
    alp_gmm: ALPGMMConfig = ALPGMMConfig()
    budget: BudgetConfig | None = None
    guidance: GuidanceConfig | None = None
    dynamic_sampling: DynamicSamplingConfig | None = None
    d3s: D3SConfig | None = None
    ead: EADConfig | None = None
    speed: SpeedConfig | None = None
    prompts: PromptMemoryConfig = PromptMemoryConfig()
    greso: GresoConfig | None = None
    learnability: LearnabilityConfig | None = None
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _weights(self) -> "CurriculumConfig":
        if self.sampler == "weights" and not self.weights:
            raise ValueError("curriculum.sampler=weights needs curriculum.weights (distribution -> weight)")
        if self.weights is not None:
            if any(w < 0 for w in self.weights.values()):
                raise ValueError("curriculum.weights must be >= 0")
            if sum(self.weights.values()) <= 0:
                raise ValueError("curriculum.weights must have a positive sum")
        return self
