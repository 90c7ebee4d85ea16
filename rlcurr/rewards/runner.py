"""Score a batch of completions with the recipe's reward functions, with timeouts and a failure policy.

`RewardRunner(specs, cfg)` resolves every function when it is constructed, so a misspelt name or
a broken user module fails before any run directory is written. `score()` calls each function
once per batch, by keyword, as TRL does::

    fn(prompts=prompts, completions=completions, **columns)

Totals. ``total_i = sum_k weight_k * part_k[i]``; a None part (the function says "not
applicable", or it failed under ``on_error: none``) counts as 0. `RewardScores.failed` marks the
samples where some function failed (`errors` / `timeouts`: raised / timed out), so the trainer
drops them rather than train on a 0.

Failures (`RewardConfig`):
- every call runs in a daemon thread and is abandoned after ``timeout_s`` -- a hung function
  cannot block training or interpreter exit (the abandoned thread keeps running in the
  background; Python cannot kill threads);
- ``on_error: raise`` (default): a function that raises or times out stops training with a
  UserError naming the function, the sample index (found by re-running the batch one sample at
  a time; for a timeout, the batch) and the error;
- ``on_error: none``: the batch is re-run one sample at a time (sharing one ``timeout_s``
  deadline) to isolate the bad samples; those score None for that function and are counted in
  `num_errors` / `num_timeouts` (one per sample and function). A batch that times out as a whole
  is not re-run: all its samples count as timeouts.
- Mistakes that are not about one sample -- a missing column, a result of the wrong length or
  type -- always raise, whatever ``on_error`` says.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Sequence

from rlcurr.config import RewardConfig, RewardSpec
from rlcurr.errors import UserError
from rlcurr.rewards.registry import RewardFn, completion_format, required_columns, resolve_reward
from rlcurr.types import Prompt

RESERVED = ("prompts", "completions")


@dataclass
class RewardScores:
    totals: list[float]  # weighted sum per sample, None parts counted as 0
    parts: dict[str, list[float | None]]  # per reward (spec name), per sample
    num_errors: int = 0  # (sample, function) pairs that raised, under on_error: none
    num_timeouts: int = 0  # (sample, function) pairs that timed out, under on_error: none
    failed: list[bool] = field(default_factory=list)  # sample had a failed reward (an error or a timeout)
    errors: list[bool] = field(default_factory=list)  # some function raised on the sample
    timeouts: list[bool] = field(default_factory=list)  # some function timed out on the sample


class _Timeout(Exception):
    pass


@dataclass
class _Reward:
    name: str  # as written in the recipe
    weight: float
    fn: RewardFn
    fmt: str  # "text" | "messages"
    needs: list[str]  # columns it requires


class RewardRunner:
    def __init__(self, specs: Sequence[RewardSpec], cfg: RewardConfig = RewardConfig(), *, conversational: bool = False):
        """`conversational`: pass True when prompts go through a chat template (see
        `rlcurr.prompting.has_chat_template`); unannotated functions then get TRL message lists."""
        if not specs:
            raise UserError("no reward functions configured")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UserError(f"reward(s) listed more than once: {', '.join(dupes)}")
        self.cfg = cfg
        self.rewards = []
        for s in specs:
            fn = resolve_reward(s.name, s.params)
            self.rewards.append(_Reward(s.name, s.weight, fn, completion_format(fn, conversational), required_columns(fn)))

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def score(self, prompts: Sequence[Any], completions: Sequence[str], columns: dict[str, Sequence[Any]]) -> RewardScores:
        n = len(completions)
        self._check_inputs(prompts, n, columns)
        cols = {k: list(v) for k, v in columns.items()}
        scores = RewardScores(totals=[0.0] * n, parts={}, failed=[False] * n, errors=[False] * n, timeouts=[False] * n)
        for r in self.rewards:
            part = self._score_one(r, list(prompts), list(completions), cols, scores)
            scores.parts[r.name] = part
            for i, v in enumerate(part):
                if v is not None:
                    scores.totals[i] += r.weight * v
        return scores

    # ------------------------------------------------------------ one function

    def _score_one(self, r: _Reward, prompts: list, completions: list[str], cols: dict, scores: RewardScores) -> list[float | None]:
        missing = [c for c in r.needs if c not in cols]
        if missing:
            raise UserError(
                f"reward {r.name!r} needs column(s) {missing}, which this environment does not provide; "
                f"available columns: {sorted(cols)}"
            )
        try:
            return self._call_checked(r, prompts, completions, cols, self.cfg.timeout_s)
        except _Timeout:
            if self.cfg.on_error == "raise":
                raise UserError(
                    f"reward {r.name!r} timed out after {self.cfg.timeout_s:g} s on a batch of {len(completions)} "
                    "samples (raise reward.timeout_s, or set reward.on_error=none to score them None)"
                ) from None
            scores.num_timeouts += len(completions)
            scores.failed[:] = [True] * len(completions)
            scores.timeouts[:] = [True] * len(completions)
            return [None] * len(completions)
        except UserError:
            raise
        except Exception as batch_error:
            return self._isolate(r, prompts, completions, cols, scores, batch_error)

    def _isolate(self, r, prompts, completions, cols, scores, batch_error) -> list[float | None]:
        """Re-run one sample at a time to find (raise) or skip (none) the failing samples."""
        deadline = time.monotonic() + self.cfg.timeout_s
        part: list[float | None] = []
        for i in range(len(completions)):
            one = {k: v[i : i + 1] for k, v in cols.items()}
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Timeout()
                part.append(self._call_checked(r, prompts[i : i + 1], completions[i : i + 1], one, left)[0])
                continue
            except UserError:
                raise
            except _Timeout:
                if self.cfg.on_error == "raise":
                    break  # report the batch error below: the batch failed before any timeout
                scores.num_timeouts += 1
                scores.timeouts[i] = True
            except Exception as e:
                if self.cfg.on_error == "raise":
                    raise UserError(f"reward {r.name!r} failed on sample {i}: {_describe(e)}") from None
                scores.num_errors += 1
                scores.errors[i] = True
            part.append(None)
            scores.failed[i] = True
        if self.cfg.on_error == "raise":
            # No single sample fails alone (or the search ran out of time): report the batch.
            raise UserError(f"reward {r.name!r} failed on a batch of {len(completions)} samples: {_describe(batch_error)}")
        return part

    def _call_checked(self, r: _Reward, prompts, completions, cols, timeout: float) -> list[float | None]:
        kwargs = dict(cols)
        kwargs["prompts"] = _as_messages(prompts, "user") if r.fmt == "messages" else prompts
        kwargs["completions"] = _as_messages(completions, "assistant") if r.fmt == "messages" else completions
        result = _call_with_timeout(r.fn, kwargs, timeout)
        return _validate(result, len(completions), r.name)

    # ------------------------------------------------------------ inputs

    @staticmethod
    def _check_inputs(prompts, n: int, columns: dict) -> None:
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} completions")
        for k, v in columns.items():
            if k in RESERVED:
                raise UserError(f"a data column may not be called {k!r} (reserved for reward functions)")
            if len(v) != n:
                raise ValueError(f"column {k!r} has {len(v)} values for {n} completions")


def reward_specs(configured: Sequence[RewardSpec] | None, env_defaults: Sequence[str]) -> list[RewardSpec]:
    """The recipe's `rewards`, or the environment's `default_rewards` (weight 1) when it lists none."""
    return list(configured) if configured else [RewardSpec(name=n) for n in env_defaults]


def build_columns(prompts: Sequence[Prompt], **extra: Sequence[Any]) -> dict[str, list]:
    """Reward kwargs for a batch: each prompt's `columns` (plus `answer` from `Prompt.answer`
    when the environment did not set it), then `extra` per-sample lists such as
    ``num_tokens=[...]`` or ``budget=[...]``. A column some prompts lack is None for them."""
    rows = [{"answer": p.answer, **p.columns} for p in prompts]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    cols = {k: [row.get(k) for row in rows] for k in keys}
    for k, v in extra.items():
        cols[k] = list(v)
    return cols


def _as_messages(items: list, role: str) -> list:
    """Strings -> TRL conversational form (one message each); message lists pass through."""
    return [[{"role": role, "content": x}] if isinstance(x, str) else x for x in items]


def _call_with_timeout(fn: RewardFn, kwargs: dict, timeout: float) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            out = fn(**kwargs)
            if inspect.isawaitable(out):
                out = asyncio.run(_await(out))  # a fresh event loop in this thread
            box["out"] = out
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            box["err"] = e

    # A daemon thread, not a ThreadPoolExecutor: executor threads are joined at interpreter exit,
    # so one hung reward would stop the process from ever exiting.
    t = threading.Thread(target=target, name=f"reward-{getattr(fn, '__name__', 'fn')}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise _Timeout()
    if "err" in box:
        raise box["err"]
    return box["out"]


async def _await(awaitable):
    return await awaitable


def _validate(result: Any, n: int, name: str) -> list[float | None]:
    if hasattr(result, "tolist"):  # numpy arrays / torch tensors
        result = result.tolist()
    if not isinstance(result, (list, tuple)):
        raise UserError(f"reward {name!r} returned {type(result).__name__}; it must return a list of {n} floats (or None)")
    if len(result) != n:
        raise UserError(f"reward {name!r} returned {len(result)} values for {n} completions")
    out: list[float | None] = []
    for i, v in enumerate(result):
        if v is None:
            out.append(None)
        elif isinstance(v, numbers.Real):
            # NaN is TRL's internal spelling of None; keep the two equivalent.
            out.append(None if math.isnan(float(v)) else float(v))
        else:
            raise UserError(f"reward {name!r} returned {type(v).__name__} {v!r} at index {i}; expected a float or None")
    return out


def _describe(e: BaseException) -> str:
    where = traceback.extract_tb(e.__traceback__)
    loc = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return f"{type(e).__name__}: {e}{loc}"
