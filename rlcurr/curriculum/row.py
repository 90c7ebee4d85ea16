"""One line of curriculum.jsonl as a type: `CurriculumRow`.

The controller builds it after observing a step (`CurriculumController.row`); the trainer adds
what only it knows (the policy version and lag of the batch, the alerts recomputed after the
step's evaluation, D3S's kept shares) by attribute, and writes `row.to_json()`, the same JSON
object, keys in the same order, as the untyped dict of earlier versions. What each field holds:
docs/run-directory.md ("curriculum.jsonl").

Readers of curriculum.jsonl go through `CurriculumRow.from_json(line_dict)`: it tolerates rows
of older runs (missing optional keys take their defaults) and keys it does not know (kept in
`extra`, written back last), so `from_json(d).to_json() == d` for every row rlcurr writes.
The nested parts (per-distribution statistics, budget, hints, filter, prompts, GRESO,
learnability, alerts) stay plain JSON objects: they are the reports of the curriculum modules
that own them (samplers.py, guidance.py, prompts.py, learnability.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class D3SRow:
    """D3S at the row's step: the keep fractions of answers (`n`) and tokens (`k`) the schedule
    gives, and, once the trainer has down-sampled the batch, the shares actually kept
    (`tokens_kept_frac` is None when the learner reported none, e.g. no samples)."""

    n: float
    k: float
    answers_kept_frac: float | None = None
    tokens_kept_frac: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "k": self.k}
        if self.answers_kept_frac is not None:  # set by the trainer, always with tokens_kept_frac
            out.update(answers_kept_frac=self.answers_kept_frac, tokens_kept_frac=self.tokens_kept_frac)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "D3SRow":
        return cls(n=data.get("n"), k=data.get("k"), answers_kept_frac=data.get("answers_kept_frac"),
                   tokens_kept_frac=data.get("tokens_kept_frac"))


@dataclass
class CurriculumRow:
    """The curriculum's record of one trainer step (fields in curriculum.jsonl's key order)."""

    step: int
    sampler: str | None = None  # curriculum.sampler's kind
    # per distribution: prob (for the next step), score, count, mean_reward, mean_abs_adv, planned, ...
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: dict[str, Any] | None = None  # {"default", "slack", "per_distribution"}; None without a budget
    hints: dict[str, Any] | None = None  # Guide-GRPO's report; None without guidance
    filter: dict[str, Any] | None = None  # DAPO: {"rounds", "kept", "dropped"}; None without dynamic sampling
    d3s: D3SRow | None = None  # None without D3S
    prompts: dict[str, Any] | None = None  # per-distribution summary of the per-prompt memory
    greso: dict[str, Any] | None = None  # None without GRESO
    learnability: dict[str, Any] | None = None  # None without curriculum.learnability
    alerts: list[dict[str, Any]] = field(default_factory=list)  # starving / forgetting distributions
    policy_version: int | None = None  # trainer: the weights that generated the batch
    lag: int | None = None  # trainer: step - policy_version
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know (from_json)

    def probabilities(self) -> dict[str, float]:
        """Each distribution's sampling probability after the step's observation."""
        return {d: v["prob"] for d, v in self.distributions.items()}

    def to_json(self) -> dict[str, Any]:
        """The curriculum.jsonl object (json.dumps of it is the line). `policy_version` and `lag`
        are written once the trainer has set them."""
        out: dict[str, Any] = {
            "step": self.step, "sampler": self.sampler, "distributions": self.distributions,
            "budget": self.budget, "hints": self.hints, "filter": self.filter,
            "d3s": None if self.d3s is None else self.d3s.to_json(),
            "prompts": self.prompts, "greso": self.greso, "learnability": self.learnability,
            "alerts": self.alerts,
        }
        if self.policy_version is not None or self.lag is not None:
            out.update(policy_version=self.policy_version, lag=self.lag)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CurriculumRow":
        """A row read back from curriculum.jsonl (a parsed line). Missing keys take their defaults
        (runs of older versions), unknown keys go to `extra`; a row without an integer `step`, or
        whose `distributions` / `alerts` are not a mapping / list, raises ValueError."""
        if not isinstance(data, dict) or isinstance(data.get("step"), bool) or not isinstance(data.get("step"), int):
            raise ValueError(f"a curriculum row needs an integer 'step'; got {str(data)[:80]}")
        for key, kind in (("distributions", dict), ("alerts", list)):
            if data.get(key) is not None and not isinstance(data[key], kind):
                raise ValueError(f"a curriculum row's {key!r} must be a {kind.__name__}; got {str(data[key])[:80]}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in data.items() if k in known}
        if isinstance(kw.get("d3s"), dict):
            kw["d3s"] = D3SRow.from_json(kw["d3s"])
        if kw.get("distributions") is None:
            kw.pop("distributions", None)
        if kw.get("alerts") is None:
            kw.pop("alerts", None)
        return cls(**kw, extra={k: v for k, v in data.items() if k not in known})
