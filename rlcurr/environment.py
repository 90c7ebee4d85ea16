"""What an environment is: a data source split into named distributions, with rewards and hints.

An environment is a pydantic config class (a subclass of `EnvConfigBase`) whose `build(seed)`
returns an `Environment`. A recipe names the config class in `env.name`: by import path
(``my_envs.py:MyConfig`` or ``my_pkg.envs:MyConfig``), or by a short name registered for that
path (`rlcurr.env_registry`; the built-in environments of the `envs` package register theirs
there). See docs/extending.md. An environment may be multi-turn: it then sets `tool_stop` and
`max_turns` and implements `turn` (the tool), see rlcurr/rollout/multiturn.py and envs/calc.py.

Both classes are also importable as ``from rlcurr import EnvConfigBase, Environment``.
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

    #: Multi-turn tool use (rlcurr/rollout/multiturn.py). Non-empty: a model turn that ends with one
    #: of these strings is a tool call, answered by `turn`; empty: single-turn (the default).
    tool_stop: tuple[str, ...] = ()
    #: the most model turns per answer (tool calls + the final turn)
    max_turns: int = 1

    def turn(self, prompt: Prompt, trajectory: str) -> str | None:
        """The tool: `trajectory` is the answer so far (model turns and earlier tool outputs), ending
        with a `tool_stop` string. Return the text to append (the tool's output, which the model
        then reads; it is never trained on), or None to end the answer here."""
        return None

    def sft_examples(self, distribution: str) -> list[tuple[Prompt, str | list[tuple[str, bool]]]]:
        """(prompt, target completion) pairs for the SFT warm-up; default: the answer itself. A tool
        environment gives the target as (text, is_tool_output) pieces: tool outputs are context
        for the warm-up's loss, not targets, as in RL."""
        return [(p, p.answer) for p in self.train_prompts(distribution)]
