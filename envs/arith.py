"""Procedural arithmetic: addition by digit count, plus an unlearnable distribution.

Distributions:
  add1 .. add5   a+b with both operands of exactly k digits (add1 includes 0..9)
  noise          an addition question whose "answer" is a random number drawn independently of
                 the question: no policy can beat chance, so a curriculum should learn to avoid it.

Train pools and eval sets are fixed by the seed and disjoint (a question in the eval set never
appears in the train pool). Prompts look like "12+34=" and answers like "46", which a
character-level tiny model can learn.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, field_validator

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.types import Prompt

KNOWN = ("add1", "add2", "add3", "add4", "add5", "noise")


class ArithConfig(EnvConfigBase):
    name: Literal["arith"] = "arith"
    distributions: list[str] = Field(default_factory=lambda: ["add1", "add2", "add3", "noise"])
    train_size: int = Field(2000, ge=1, description="train pool size per distribution")

    @field_validator("distributions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [d for d in v if d not in KNOWN]
        if unknown:
            raise ValueError(f"unknown arith distribution(s) {unknown}; choose from {list(KNOWN)}")
        if not v:
            raise ValueError("at least one distribution is needed")
        return v

    def build(self, seed: int) -> "ArithEnv":
        return ArithEnv(self, seed)


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _question(rng: random.Random, dist: str) -> tuple[str, str]:
    if dist == "noise":
        a, b = _operand(rng, 2), _operand(rng, 2)
        return f"{a}+{b}=", str(rng.randint(0, 198))
    k = int(dist[3:])
    a, b = _operand(rng, k), _operand(rng, k)
    return f"{a}+{b}=", str(a + b)


class ArithEnv(PoolEnvironment):
    default_rewards = ("exact_match",)
    unlearnable = ("noise",)

    def __init__(self, cfg: ArithConfig, seed: int):
        self.cfg = cfg
        self._train: dict[str, list[Prompt]] = {}
        self._eval: dict[str, list[Prompt]] = {}
        for i, dist in enumerate(cfg.distributions):
            rng = random.Random(f"arith-{seed}-{dist}")
            self._eval[dist] = self._draw(rng, dist, cfg.eval_size, "eval", exclude=set())
            # add1 has only 100 distinct questions: its eval set necessarily overlaps the train pool.
            held_out = {p.question for p in self._eval[dist]} if dist not in ("noise", "add1") else set()
            self._train[dist] = self._draw(rng, dist, cfg.train_size, "train", held_out)

    def _draw(self, rng: random.Random, dist: str, size: int, split: str, exclude: set[str]) -> list[Prompt]:
        prompts = []
        for attempt in range(size * 50):
            if len(prompts) == size:
                break
            q, a = _question(rng, dist)
            if q in exclude:
                continue
            prompts.append(Prompt(uid=f"{dist}/{split}/{len(prompts)}", distribution=dist, question=q,
                                  answer=a, hint=a[: max(1, len(a) - 1)], columns={"answer": a}))
        return prompts

