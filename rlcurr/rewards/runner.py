"""Score a batch of completions with the recipe's reward functions, with timeouts and a failure policy.

`RewardRunner(specs, cfg)` resolves every function when it is constructed, so a misspelt name or
a broken user module fails before any run directory is written. `score()` calls each function
once per batch, by keyword, as TRL does::

    fn(prompts=prompts, completions=completions, **columns)

Totals. ``total_i = sum_k weight_k * part_k[i]``; a None part (the function says "not
applicable", or it failed under ``on_error: none``) counts as 0. `RewardScores.failed` marks the
samples where some function failed (`errors` / `timeouts`: raised / timed out), so the trainer
drops them rather than train on a 0.

Where a call runs (`_batches` / `_run`, the one place that decides): with ``reward.workers: 0`` (default) in a
daemon thread of the driver, abandoned after ``timeout_s`` -- a hung function cannot block
training or interpreter exit, but the abandoned thread keeps running in the background (Python
cannot kill threads). With ``reward.workers: N`` in N Ray actors (`rlcurr.rewards.workers`), each
scoring a contiguous share of the batch at once; a call past ``timeout_s`` kills its actor, which
is replaced, and a worker that dies is replaced and its call retried. Each share is then "a batch"
below: it times out, or is re-run one sample at a time, on its own. Model rewards
(rlcurr.rewards.model_rewards) run their own actors and are called from a driver thread either way.

Failures (`RewardConfig`):
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

import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rlcurr.config import RewardConfig, RewardSpec
from rlcurr.errors import UserError
from rlcurr.rewards.registry import RewardFn, completion_format, required_columns, resolve_reward
from rlcurr.rewards.workers import CallTimeout, RewardRef, RewardWorkerPool, describe, invoke, shares
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


@dataclass
class _Reward:
    name: str  # as written in the recipe
    weight: float
    fn: RewardFn
    fmt: str  # "text" | "messages"
    needs: list[str]  # columns it requires
    key: str = ""  # how the worker pool's workers name it; "" = it runs in a driver thread


class RewardRunner:
    def __init__(self, specs: Sequence[RewardSpec], cfg: RewardConfig = RewardConfig(), *, conversational: bool = False,
                 pool: RewardWorkerPool | None = None, log: Callable[[str], None] = print):
        """`conversational`: pass True when prompts go through a chat template (see
        `rlcurr.prompting.has_chat_template`); unannotated functions then get TRL message lists.
        `pool`: another runner's worker pool to share (its `pool`); by default a runner with
        ``cfg.workers > 0`` makes its own, started at the first `score` (or `start`)."""
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
        if pool is None and cfg.workers > 0:
            pool = RewardWorkerPool(cfg.workers, cpus=cfg.worker_cpus, max_restarts=cfg.max_restarts, log=log)
        self.pool = pool
        for r, s in zip(self.rewards, specs):
            if pool is not None and not _runs_own_actors(r.fn):
                r.key = pool.add(RewardRef.of(s.name, s.params))

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def start(self) -> None:
        """Start the reward workers now (after ray.init) rather than at the first `score`."""
        if self.pool is not None:
            self.pool.start()

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the rewards: each driver-side reward's own state (a reward
        model's running normalisation); plain functions have none."""
        return {r.name: r.fn.state_dict() for r in self.rewards if _runs_own_actors(r.fn)}

    def load_state_dict(self, state: dict) -> None:
        for r in self.rewards:
            if r.name in state and _runs_own_actors(r.fn):
                r.fn.load_state_dict(state[r.name])

    def close(self) -> None:
        """Stop the reward workers (a runner sharing the pool loses them too); a later `score`
        starts new ones."""
        if self.pool is not None:
            self.pool.shutdown()

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
        n = len(completions)
        batches = self._batches(r, n)
        outcomes = self._run(r, batches, prompts, completions, cols, self.cfg.timeout_s)
        part: list[float | None] = [None] * n
        deadline = None  # one timeout_s for re-running every batch that raised, as for one batch
        for (w, rows), out in zip(batches, outcomes):
            if isinstance(out, CallTimeout):
                if self.cfg.on_error == "raise":
                    raise UserError(
                        f"reward {r.name!r} timed out after {self.cfg.timeout_s:g} s on {_batch(rows, n)} "
                        "(raise reward.timeout_s, or set reward.on_error=none to score them None)")
                scores.num_timeouts += len(rows)
                for i in rows:
                    scores.failed[i] = scores.timeouts[i] = True
            elif isinstance(out, UserError):
                raise out
            elif isinstance(out, BaseException):
                deadline = deadline or time.monotonic() + self.cfg.timeout_s
                part[rows.start : rows.stop] = self._isolate(r, w, rows, n, prompts, completions, cols, scores, out, deadline)
            else:
                part[rows.start : rows.stop] = out
        return part

    def _isolate(self, r, w, rows, n, prompts, completions, cols, scores, batch_error, deadline) -> list[float | None]:
        """Re-run the samples `rows` one at a time (on worker `w`) to find (raise) or skip (none)
        the failing samples, until `deadline`."""
        part: list[float | None] = []
        for i in rows:
            left = deadline - time.monotonic()
            out = self._run(r, [(w, range(i, i + 1))], prompts, completions, cols, left)[0] if left > 0 else CallTimeout()
            if isinstance(out, UserError):
                raise out
            if isinstance(out, CallTimeout):
                if self.cfg.on_error == "raise":
                    break  # report the batch error below: the batch failed before any timeout
                scores.num_timeouts += 1
                scores.timeouts[i] = True
            elif isinstance(out, BaseException):
                if self.cfg.on_error == "raise":
                    raise UserError(f"reward {r.name!r} failed on sample {i}: {describe(out)}")
                scores.num_errors += 1
                scores.errors[i] = True
            else:
                part.append(out[0])
                continue
            part.append(None)
            scores.failed[i] = True
        if self.cfg.on_error == "raise":
            # No single sample fails alone (or the search ran out of time): report the batch.
            raise UserError(f"reward {r.name!r} failed on {_batch(rows, n)}: {describe(batch_error)}")
        return part

    # ------------------------------------------------------------ where calls run: thread or worker

    def _batches(self, r: _Reward, n: int) -> list[tuple[int, range]]:
        """How `r` splits n samples: ``(worker, rows)`` per call. In a thread (no pool, or a model
        reward) the whole batch; in the pool one contiguous share per worker."""
        return [(w, s) for w, s in enumerate(shares(n, self.pool.size)) if s] if r.key else [(0, range(n))]

    def _run(self, r: _Reward, batches: list[tuple[int, range]], prompts, completions, cols, timeout: float) -> list:
        """Call `r` on each batch ``(worker, rows)``, in a driver thread or on the pool's worker
        (`_batches` says which). Per batch: its values (checked: a wrong result raises a
        UserError), `CallTimeout`, or the exception it raised."""
        calls = []
        for _, rows in batches:
            kwargs = {k: v[rows.start : rows.stop] for k, v in cols.items()}
            kwargs["prompts"], kwargs["completions"] = prompts[rows.start : rows.stop], completions[rows.start : rows.stop]
            if r.fmt == "messages":
                kwargs["prompts"] = _as_messages(kwargs["prompts"], "user")
                kwargs["completions"] = _as_messages(kwargs["completions"], "assistant")
            calls.append(kwargs)
        if not r.key:
            outcomes = [_call_in_thread(r.fn, kwargs, timeout) for kwargs in calls]
        else:
            outcomes = self.pool.run([(w, r.key, kwargs) for (w, _), kwargs in zip(batches, calls)], timeout)
        return [out if isinstance(out, BaseException) else _validate(out, len(rows), r.name)
                for out, (_, rows) in zip(outcomes, batches)]

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


def _runs_own_actors(fn: RewardFn) -> bool:
    """A reward its class builds from the params (`reward_from_params`: the model rewards of
    rlcurr.rewards.model_rewards) runs its own actors; it is called from the driver, not a worker."""
    return callable(getattr(type(fn), "reward_from_params", None))


def _batch(rows: range, n: int) -> str:
    return f"a batch of {n} samples" if len(rows) == n else f"samples {rows.start}-{rows.stop - 1} of a batch of {n}"


def _call_in_thread(fn: RewardFn, kwargs: dict, timeout: float) -> Any:
    """`fn(**kwargs)` in a daemon thread: its result, `CallTimeout`, or the exception it raised."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = invoke(fn, kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            box["err"] = e

    # A daemon thread, not a ThreadPoolExecutor: executor threads are joined at interpreter exit,
    # so one hung reward would stop the process from ever exiting.
    t = threading.Thread(target=target, name=f"reward-{getattr(fn, '__name__', 'fn')}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return CallTimeout()
    if "err" in box and not isinstance(box["err"], Exception):
        raise box["err"]  # KeyboardInterrupt, SystemExit: the run's, as before
    return box.get("err", box.get("out"))


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
