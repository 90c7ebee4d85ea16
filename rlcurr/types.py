"""Stage-boundary dataclasses: what one stage of a training step hands to the next.

plan -> BatchPlan -> rollout -> list[Rollout] -> score (+ advantages) -> list[ScoredGroup] ->
guide/filter -> list[TrainSample] -> learner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """One task instance from an environment."""

    uid: str  # stable id, unique within its environment
    distribution: str  # curriculum arm: data source or difficulty level
    question: str  # the task as the user sees it (before chat formatting)
    answer: str  # reference answer / verification payload
    hint: str | None = None  # guidance for adaptive hints (Guide-GRPO)
    columns: dict[str, Any] = field(default_factory=dict)  # extra reward-function kwargs


@dataclass(frozen=True)
class GenRequest:
    """Generate `n` answers for one tokenised prompt.

    `temperatures` (EAD, docs/curriculum.md "EAD"): the temperature of each answer position, used
    instead of `temperature` (positions past its end use its last value); HF engine only.
    `stop`: generation also ends with the token that completes one of these strings (the string
    stays in the answer, and the text may run past it by the rest of that token: the text is
    always the decoding of the token ids; rlcurr.rollout.stop_strings); multi-turn tool calls.
    """

    prompt_ids: list[int]
    n: int
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    temperatures: tuple[float, ...] | None = None
    stop: tuple[str, ...] = ()  # strings that end the answer (kept in it), e.g. a tool call's closing tag


@dataclass(frozen=True)
class Completion:
    """One generated answer: its tokens, the engine's sampling logprobs, why it stopped.

    Multi-turn (tool environments, rlcurr.rollout.multiturn): the answer is the whole trajectory,
    model turns and tool outputs interleaved; `tool_mask[i]` is True for a token the tool wrote
    (its logprob is a 0.0 placeholder; the learner leaves it out of every loss and metric).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    text: str
    stop_reason: str | None = None  # the GenRequest.stop string that ended it, if one did
    tool_mask: list[bool] | None = None  # None: every token is the model's

    @property
    def num_generated(self) -> int:
        """Tokens the policy generated (tool outputs not counted)."""
        return len(self.token_ids) - sum(self.tool_mask or ())


@dataclass(frozen=True)
class PlannedPrompt:
    """A prompt chosen by the curriculum, with what its rollout and scoring need: the answer
    length it may generate (`max_tokens`: the token budget plus its slack, or rollout.max_tokens),
    the budget the length reward scores it against (None without curriculum.budget) and its
    per-position sampling temperatures (EAD, docs/curriculum.md "EAD"; None: the plan's scalar
    temperature). Items of one distribution in one plan share the same values."""

    prompt: Prompt
    max_tokens: int
    budget: int | None = None
    temperatures: tuple[float, ...] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BatchPlan:
    """One generation round of a trainer step, as the curriculum planned it: everything the
    rollout and the scoring of the round read (CurriculumController.plan)."""

    step: int
    items: list[PlannedPrompt]
    n: int  # answers per prompt
    temperature: float
    top_p: float = 1.0


@dataclass(frozen=True)
class Rollout:
    """The answers generated for one planned prompt: what `score` turns into a ScoredGroup.

    `prompt_text` is the formatted prompt the ids encode (chat template applied, hint included
    for a guided re-roll); reward functions receive it as their `prompts`.
    """

    planned: PlannedPrompt
    prompt_ids: list[int]
    prompt_text: str
    completions: list[Completion]


@dataclass
class ScoredGroup:
    """n answers to one prompt with their rewards.

    Only answers that every reward function scored are in the group: under
    `reward.on_error: none` an answer whose reward failed or timed out is left out (`num_failed`
    counts them), so advantages, the curriculum, filters and the learner see scored answers only.

    `prompt_ids` is what the learner conditions on (always the hint-free prompt);
    `behaviour_prompt_ids` is what generated the answers (the hinted prompt for a guided
    re-roll, else equal to `prompt_ids`). Old logprobs are computed on the behaviour prompt.
    """

    prompt: Prompt
    prompt_ids: list[int]
    completions: list[Completion]
    rewards: list[float]  # weighted total per answer
    reward_parts: dict[str, list[float | None]]  # per reward function, per answer
    max_tokens: int
    behaviour_prompt_ids: list[int] | None = None
    off_policy: bool = False  # answers generated with a hint (Guide-GRPO)
    advantages: list[float] | None = None
    # Per answer: did the environment's verifier (its first default reward) score it > 0. Set by
    # Trainer.score; what "solved" means for guidance, independent of format/length reward terms.
    correct: list[bool] | None = None
    num_failed: int = 0  # answers generated for this prompt but left out: a reward function failed on them

    @property
    def n(self) -> int:
        return len(self.completions)


@dataclass(frozen=True)
class TrainSample:
    """One answer ready for the learner."""

    prompt_ids: list[int]
    response_ids: list[int]
    advantage: float
    rollout_logprobs: list[float]
    behaviour_prompt_ids: list[int] | None = None  # hinted prompt for off-policy samples
    off_policy: bool = False
    returns: list[float] | None = None  # PPO only: per-token GAE returns (set by the learner)
    reward: float = 0.0  # the answer's total reward (PPO's GAE places it on the last token)
    token_advantages: list[float] | None = None  # PPO only: per-token whitened GAE advantages (set by the learner)
    tool_mask: list[bool] | None = None  # True at tool-output tokens: not trained on (see Completion)
    # The weights version that generated it (= trainer steps the learner had taken when its engine
    # last loaded weights); trained at step t it is t - policy_version versions old (async runs).
    policy_version: int | None = None
