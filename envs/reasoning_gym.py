"""reasoning-gym tasks as curriculum distributions (procedurally generated, offline).

Each entry of `tasks` names a reasoning-gym task, fixed parameters and an optional grid; every
grid point is one distribution. Examples::

    tasks:                          # DUMP: Knights & Knaves, 12 distributions (3..14 people)
      - task: knights_knaves
        grid: {n_people: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]}
    tasks:                          # SEC-style: Countdown at three difficulties
      - {task: countdown, grid: {max_numbers: [4, 5, 6]}, params: {min_numbers: 3}}
    tasks:                          # a mixture: one distribution per task
      - {task: basic_arithmetic}
      - {task: knights_knaves, params: {n_people: 4}, distribution: kk4}

Distribution names: `distribution` if given (it may use grid fields, e.g. "kk{n_people}"), else
the task name, plus "/key=value,..." for a grid point ("knights_knaves/n_people=3").

Data. Each distribution has a train pool of `train_size` items and a held-out eval set of
`eval_size` items, both fixed by the run seed. reasoning-gym derives item i from ``seed + i``, so
the eval set's seed is 2**31 away from the train seed: no item index of one can reproduce the
other. (Identical questions can still occur by chance in tasks with few distinct questions.)
Items are generated lazily, on first access, and cached: building an environment is instant, but
some items are costly to generate (knights_knaves: ~1 ms at 3 people, ~50 ms at 9, ~0.4 s at
12, ~2 s at 14 -- reasoning-gym's solver enumerates all 2^n assignments). `train_prompts()`
therefore returns a lazy sequence (`LazyPrompts`): index it, don't copy it into a list.

Hints (for adaptive guidance) are a prefix of the reference answer, `hint_fraction` of it
(0 disables hints):
- knights_knaves: the roles of the first people ("Noah is a knave, Ava is a knight");
- countdown: the first terms of a valid expression ("94*4 -");
- any other task: the first comma-separated parts of the answer if it has several, else its
  first words, else its first characters. No hint when that would give the whole answer away.

Scoring: the `reasoning_gym` reward (rlcurr.rewards.builtin) calls the task's own
`score_answer` with the entry stored in the prompt's columns (`rg_task`, `rg_entry`,
`rg_params`), so it works in any process.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
import zlib
from collections.abc import Sequence
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.errors import UserError
from rlcurr.types import Prompt

# reasoning-gym's "default" system prompt (reasoning_gym.utils.SYSTEM_PROMPTS), copied so that
# loading a recipe does not import reasoning-gym (~1.5 s) until a config needs it.
DEFAULT_SYSTEM_PROMPT = (
    "Given a problem, your task is to answer the question by thinking step-by-step in a clear and specific manner.\n"
    "Once you have thought about the reasoning process, provide the answer in the following format:\n"
    "<answer>answer here</answer>\n"
    "Do not explain your reasoning inside the answer tags, provide only the final answer. When an example is "
    "provided, you should strictly follow the format of the output/answer in that example.\n"
)
RESERVED_PARAMS = ("seed", "size")  # set by the environment


def task_registry() -> dict[str, tuple[type, type]]:
    """reasoning-gym's registry: task name -> (dataset class, config dataclass)."""
    from reasoning_gym.factory import DATASETS

    return DATASETS


def task_params(task: str) -> list[str]:
    config_cls = task_registry()[task][1]
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in RESERVED_PARAMS]


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | None = None  # one distribution per combination of values
    distribution: str | None = None  # name (template with {param} fields for a grid)
    train_size: int | None = Field(None, ge=1, description="overrides the env's train_size")

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        names = sorted(task_registry())
        if v not in names:
            close = difflib.get_close_matches(v, names, n=3)
            maybe = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown reasoning_gym task {v!r}{maybe}; valid tasks: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _known_params(self) -> "TaskSpec":
        valid = task_params(self.task)
        for key in [*self.params, *(self.grid or {})]:
            if key in RESERVED_PARAMS:
                raise ValueError(f"{self.task}: parameter {key!r} is set by rlcurr (use train_size / eval_size / seed)")
            if key not in valid:
                raise ValueError(f"{self.task}: unknown parameter {key!r}; valid parameters: {', '.join(valid)}")
        for key, values in (self.grid or {}).items():
            if not values:
                raise ValueError(f"{self.task}: grid {key!r} has no values")
        for _, params in self.points():
            _check_params(self.task, params)
        return self

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """(distribution name, full task parameters) for every grid point."""
        if not self.grid:
            return [(self.distribution or self.task, dict(self.params))]
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values))
            if self.distribution:
                try:
                    name = self.distribution.format(**self.params, **point)
                except (KeyError, IndexError) as e:
                    raise ValueError(f"{self.task}: distribution template {self.distribution!r} uses unknown field {e}") from None
            else:
                name = f"{self.task}/" + ",".join(f"{k}={v}" for k, v in point.items())
            out.append((name, {**self.params, **point}))
        return out


def _check_params(task: str, params: dict[str, Any]) -> None:
    """Build the task's config dataclass: reasoning-gym validates values with asserts."""
    config_cls = task_registry()[task][1]
    try:
        config = config_cls(**params)
        if hasattr(config, "validate"):
            config.validate()
    except (AssertionError, TypeError, ValueError) as e:
        raise ValueError(f"{task}: invalid parameters {params}: {e or type(e).__name__}") from None


class ReasoningGymConfig(EnvConfigBase):
    name: Literal["reasoning_gym"] = "reasoning_gym"
    tasks: list[TaskSpec] = Field(min_length=1)
    train_size: int = Field(500, ge=1, description="train pool size per distribution (generated lazily)")
    hint_fraction: float = Field(0.5, ge=0, lt=1, description="share of the reference answer a hint reveals; 0 = no hints")
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT

    @model_validator(mode="after")
    def _unique_distributions(self) -> "ReasoningGymConfig":
        names = [name for t in self.tasks for name, _ in t.points()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"distribution names must be unique; repeated: {dupes} (set `distribution` per task; for a grid use its fields, e.g. 'kk{{n_people}}')")
        return self

    def build(self, seed: int) -> "ReasoningGymEnv":
        return ReasoningGymEnv(self, seed)


class LazyPrompts(Sequence):
    """A fixed-length sequence of prompts made on first access and cached."""

    def __init__(self, size: int, make: Callable[[int], Prompt]):
        self._size = size
        self._make = make
        self._cache: dict[int, Prompt] = {}

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._size))]
        if i < 0:
            i += self._size
        if not 0 <= i < self._size:
            raise IndexError(i)
        if i not in self._cache:
            self._cache[i] = self._make(i)
        return self._cache[i]

    @property
    def num_generated(self) -> int:
        return len(self._cache)


class ReasoningGymEnv(PoolEnvironment):
    default_rewards = ("reasoning_gym",)

    def __init__(self, cfg: ReasoningGymConfig, seed: int):
        self.cfg = cfg
        self._train: dict[str, LazyPrompts] = {}
        self._eval: dict[str, LazyPrompts] = {}
        for spec in cfg.tasks:
            size = spec.train_size or cfg.train_size
            for dist, params in spec.points():
                base = zlib.crc32(f"rlcurr/{seed}/{dist}".encode())  # stable across processes
                self._train[dist] = self._pool(spec.task, params, dist, "train", base, size)
                self._eval[dist] = self._pool(spec.task, params, dist, "eval", (base + 2**31) % 2**32, cfg.eval_size)

    def _pool(self, task: str, params: dict, dist: str, split: str, ds_seed: int, size: int) -> LazyPrompts:
        import reasoning_gym

        try:
            ds = reasoning_gym.create_dataset(task, seed=ds_seed, size=size, **params)
        except (AssertionError, TypeError, ValueError) as e:
            raise UserError(f"reasoning_gym task {task} with {params}: {e or type(e).__name__}") from None

        def make(idx: int) -> Prompt:
            entry = ds[idx]
            answer = "" if entry.get("answer") is None else str(entry["answer"])
            return Prompt(
                uid=f"{dist}/{split}/{idx}",
                distribution=dist,
                question=entry["question"],
                answer=answer,
                hint=make_hint(task, answer, self.cfg.hint_fraction),
                columns={"answer": answer, "rg_task": task, "rg_entry": entry, "rg_params": dict(params)},
            )

        return LazyPrompts(size, make)

    def sft_examples(self, distribution: str) -> list[tuple[Prompt, str]]:
        # The default system prompt asks for <answer> tags; the reward also accepts a bare answer.
        return [(p, f"<answer>{p.answer}</answer>") for p in self.train_prompts(distribution)]


# ---------------------------------------------------------------- hints


def make_hint(task: str, answer: str, fraction: float) -> str | None:
    """A prefix of the reference answer (see the module docstring); None when there is none."""
    if fraction <= 0 or not answer.strip():
        return None
    prefix = _answer_prefix(answer.strip(), fraction)
    return f"the answer begins with: {prefix}" if prefix else None


def _answer_prefix(answer: str, fraction: float) -> str | None:
    # knights_knaves answers read "A is a knight, B is a knave, and C is a knight."
    clauses = [c for c in re.split(r",\s*(?:and\s+)?", answer.rstrip(".")) if c]
    if len(clauses) > 1:
        return _head(clauses, fraction, ", ")
    words = answer.split()
    if len(words) > 1:
        return _head(words, fraction, " ")
    k = int(len(answer) * fraction)
    return answer[:k] if 0 < k < len(answer) else None


def _head(parts: list[str], fraction: float, sep: str) -> str | None:
    k = max(1, int(len(parts) * fraction))
    return sep.join(parts[:k]) if k < len(parts) else None
