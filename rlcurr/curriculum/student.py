"""A simulated student: compare curriculum settings in milliseconds before spending GPU hours.

No model is involved. Each distribution j has a success probability p_j; an answer is correct
(reward 1) with probability p_j, else wrong (reward 0). A *learnable* distribution has a latent
skill s_j with p_j = sigmoid(s_j); training on it raises the skill by

    s_j += lr * (sum over this step's groups from j of mean_i |A_i|) / prompts_per_step

i.e. by its share of the step's gradient signal: a group that is all right or all wrong
(|A| = 0) teaches nothing, a 50 % group teaches most — the premise of DUMP/SEC. A *fixed*
distribution keeps its p_j: p = 0 models an unlearnable one (like arith's `noise`, whose
answers are random numbers), p ~ 1 a mastered one.

`simulate(cfg, student, steps, prompts_per_step, n, seed)` runs the real controller:
plan -> sample 0/1 rewards -> GRPO advantages (rlcurr.algos.advantages) -> observe -> record,
and returns the records (those of curriculum.jsonl) with the student's true p_j added under
"student" (before the step's update) and "mean_success" (uniform average of p_j, the number a
balanced eval would report). Guidance, dynamic sampling and D3S are not simulated (their
statistics stay empty); budgets appear in the records but do not affect the student.

Typical use:

    from rlcurr.curriculum.config import CurriculumConfig
    from rlcurr.curriculum.student import default_student, simulate
    for sampler in ("uniform", "ucb", "sec"):
        recs = simulate(CurriculumConfig(sampler=sampler), default_student(), steps=200)
        print(sampler, recs[-1]["mean_success"])

Caveat for fixed p strictly between 0 and 1 (a "noisy TV": random answers graded as right half
of the time): |A| is large there forever, so |A|-driven samplers keep choosing it. Use a
probability that reflects how the real task grades random answers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlcurr.algos.advantages import ESTIMATORS
from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.types import Completion, Prompt, ScoredGroup


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class SimulatedStudent:
    skills: dict[str, float] = field(default_factory=dict)  # learnable: p = sigmoid(skill)
    fixed: dict[str, float] = field(default_factory=dict)  # fixed success probability
    lr: float = 0.2

    def __post_init__(self) -> None:
        both = set(self.skills) & set(self.fixed)
        if both:
            raise ValueError(f"distribution(s) {sorted(both)} are both learnable and fixed")

    @property
    def names(self) -> list[str]:
        return list(self.skills) + list(self.fixed)

    def success_prob(self, name: str) -> float:
        return self.fixed[name] if name in self.fixed else _sigmoid(self.skills[name])

    def probabilities(self) -> dict[str, float]:
        return {n: self.success_prob(n) for n in self.names}

    def answer(self, name: str, n: int, rng: np.random.Generator) -> list[float]:
        return (rng.random(n) < self.success_prob(name)).astype(float).tolist()

    def learn(self, signal: dict[str, float], prompts_per_step: int) -> None:
        """signal[j] = sum over the step's groups from j of mean |A|."""
        for name, s in signal.items():
            if name in self.skills:
                self.skills[name] += self.lr * s / prompts_per_step


def default_student(lr: float = 0.2) -> SimulatedStudent:
    """Five distributions: mastered (p = 0.998), easy (0.73), medium (0.27), hard (0.05), and
    unlearnable (p = 0 forever)."""
    return SimulatedStudent(
        skills={"mastered": 6.0, "easy": 1.0, "medium": -1.0, "hard": -3.0},
        fixed={"unlearnable": 0.0},
        lr=lr,
    )


def _pools(names: list[str], size: int = 64) -> dict[str, list[Prompt]]:
    return {
        d: [Prompt(uid=f"{d}/{i}", distribution=d, question=f"{d} #{i}", answer="1") for i in range(size)]
        for d in names
    }


def simulate(
    curriculum_cfg: CurriculumConfig,
    student: SimulatedStudent | None = None,
    steps: int = 200,
    prompts_per_step: int = 32,
    n: int = 8,
    seed: int = 0,
    algo: str = "grpo",
) -> list[dict[str, Any]]:
    """Run the controller against a simulated student (a copy; the argument is not changed)."""
    student = copy.deepcopy(student if student is not None else default_student())
    ctrl = CurriculumController(
        curriculum_cfg, _pools(student.names), prompts_per_step=prompts_per_step, n=n, temperature=1.0,
        top_p=1.0, max_tokens=16, total_steps=steps, seed=seed,
    )
    rng = np.random.default_rng([seed, 1])  # answers; the controller has its own stream
    dummy = Completion(token_ids=[], logprobs=[], finish_reason="stop", text="")
    records = []
    for t in range(steps):
        truth = student.probabilities()
        plan = ctrl.plan(t)
        dists = [item.prompt.distribution for item in plan.items]
        rewards_BG = torch.tensor([student.answer(d, n, rng) for d in dists], dtype=torch.float64)
        adv_BG = ESTIMATORS[algo](rewards_BG)
        groups = [
            ScoredGroup(prompt=item.prompt, prompt_ids=[], completions=[dummy] * n, rewards=r, reward_parts={},
                        max_tokens=item.max_tokens, advantages=a)
            for item, r, a in zip(plan.items, rewards_BG.tolist(), adv_BG.tolist())
        ]
        ctrl.observe(t, groups)
        signal: dict[str, float] = {}
        for d, a in zip(dists, adv_BG.abs().mean(dim=1).tolist()):
            signal[d] = signal.get(d, 0.0) + a
        student.learn(signal, prompts_per_step)
        rec = ctrl.record(t)
        rec["student"] = truth
        rec["mean_success"] = float(np.mean(list(truth.values())))
        records.append(rec)
    return records
