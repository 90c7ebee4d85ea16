"""What an environment is: a data source split into named distributions, with rewards and hints.

An environment module defines a pydantic config class (with a `name` literal that recipes use
as `env.name`) whose `build(seed)` returns an `Environment`. `rlcurr.config` lists the config
classes in the `EnvConfig` union (discriminated by `name`); adding an environment means adding
one module and its config class to that union.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict, Field

from rlcurr.types import Prompt


class EnvConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    eval_size: int = Field(50, ge=1, description="held-out prompts per distribution")
    system_prompt: str | None = None
    instruction: str = Field("", description="appended after the question, e.g. answer-format rules")

    def build(self, seed: int) -> "Environment":  # pragma: no cover - abstract
        raise NotImplementedError


class Environment(ABC):
    """Fixed train pools and held-out eval sets, both keyed by distribution."""

    #: reward names used when the recipe lists none
    default_rewards: tuple[str, ...] = ("exact_match",)
    #: distributions no policy can learn (controls for curriculum tests); left out of eval means
    unlearnable: tuple[str, ...] = ()

    @abstractmethod
    def distributions(self) -> list[str]: ...

    @abstractmethod
    def train_prompts(self, distribution: str) -> list[Prompt]: ...

    @abstractmethod
    def eval_prompts(self, distribution: str) -> list[Prompt]: ...

    def sft_examples(self, distribution: str) -> list[tuple[Prompt, str]]:
        """(prompt, target completion) pairs for the SFT warm-up; default: the answer itself."""
        return [(p, p.answer) for p in self.train_prompts(distribution)]
