"""Reward workers (``reward.workers: N``): rule rewards run in Ray actors instead of driver threads.

Why. In a driver thread a hung reward can only be abandoned, still running (Python cannot kill a
thread); in an actor it is killed (`ray.kill`) and the actor replaced. And N actors score N
contiguous shares of a step's batch at once, on N cores, where the driver's threads share one GIL.

- `RewardRef`: what a worker needs to resolve one recipe reward itself (functions are never
  pickled): the registered name or import path (a file made absolute, so the worker finds what
  the driver found whatever its working directory), the recipe's params, and for a name that
  user code registered, the module that registers it (imported first).
- `RewardExecutor`: a plain class (testable without Ray) that resolves refs with the driver's
  `sys.path` added to its own, and runs calls, returning the outcome as data: the values, or the
  error already described (user exceptions need not pickle). `RewardWorker` is it as a Ray actor.
- `RewardWorkerPool`: the driver's N actors, started at the first call (or by `start`), on any
  node, `reward.worker_cpus` CPUs each. `run(calls, timeout_s)` submits every call at once and
  returns the outcomes in call order: values, `CallTimeout` (the call ran past its timeout: its
  actor was killed and replaced), or an exception the call raised (`RemoteError`, `UserError`).
  A worker that died (killed, segfault, node lost, out of memory) is replaced and its call
  resubmitted with a fresh timeout, at most `max_restarts` times per `run`; past that the call's
  outcome is a RemoteError, i.e. the function failed on that batch (a reward that crashes its
  process on some sample is isolated like one that raises). Replacements are logged like the
  rollout workers' (rlcurr.actors.replace_actor). When to use them: docs/extending.md "Reward workers".
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rlcurr.actors import first_line, replace_actor
from rlcurr.errors import UserError
from rlcurr.rewards.registry import RewardFn, import_object, resolve_reward


class CallTimeout(Exception):
    """A reward call ran past its timeout."""


class RemoteError(Exception):
    """A reward call failed in a worker; `described` is `describe` of the original exception."""

    def __init__(self, described: str):
        super().__init__(described)
        self.described = described


def describe(e: BaseException) -> str:
    """``Type: message (at file:line)`` of the innermost frame: how a reward failure is reported."""
    if isinstance(e, RemoteError):
        return e.described
    where = traceback.extract_tb(e.__traceback__)
    loc = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return f"{type(e).__name__}: {e}{loc}"


def invoke(fn: RewardFn, kwargs: dict) -> Any:
    """Call a reward by keyword; an `async def` one runs on a fresh event loop in this thread."""
    out = fn(**kwargs)
    if inspect.isawaitable(out):
        out = asyncio.run(_await(out))
    return out


async def _await(awaitable):
    return await awaitable


def shares(n: int, parts: int) -> list[range]:
    """`parts` contiguous, near-equal ranges of range(n) (earlier ones get the remainder; some are
    empty when parts > n), as rlcurr.learner.dataparallel.shard cuts a batch."""
    size, extra = divmod(n, parts)
    starts = [p * size + min(p, extra) for p in range(parts + 1)]
    return [range(starts[p], starts[p + 1]) for p in range(parts)]


# ---------------------------------------------------------------- resolving a reward in a worker


@dataclass(frozen=True)
class RewardRef:
    target: str  # a registered name, or an import path with its file made absolute
    params: dict = field(default_factory=dict)
    preload: str | None = None  # module name or absolute .py file that registers `target`

    @classmethod
    def of(cls, name: str, params: dict | None = None) -> "RewardRef":
        """The ref of a recipe reward the driver has resolved (`resolve_reward` succeeded)."""
        from rlcurr.rewards.table import lookup

        fn = lookup(name)
        if fn is None:  # an import path: the worker imports what the driver imported
            return cls(import_object(name, what="reward")[1], dict(params or {}))
        module = sys.modules.get(getattr(fn, "__module__", None) or "")
        preload = None
        if module is not None and not module.__name__.startswith("rlcurr.") and module.__name__ != "__main__":
            # rlcurr_user_*: a file imported by path (rlcurr.rewards.registry._import_file)
            preload = module.__file__ if module.__name__.startswith("rlcurr_user_") else module.__name__
        return cls(name, dict(params or {}), preload)

    @property
    def key(self) -> str:
        return f"{self.target} {self.params!r}"

    def resolve(self) -> RewardFn:
        if self.preload:
            from rlcurr.rewards import registry

            if self.preload.endswith(".py"):
                registry._import_file(Path(self.preload), self.target)
            else:
                registry._import_module(self.preload, self.target)
        return resolve_reward(self.target, self.params)


class RewardExecutor:
    """A worker's side: resolve refs, run calls. Plain Python: `RewardWorker` is its Ray actor."""

    def __init__(self):
        self.fns: dict[str, RewardFn] = {}

    def prepare(self, refs: dict[str, RewardRef], sys_path: Sequence[str] = ()) -> int:
        """Resolve the refs not resolved yet (a UserError says which cannot be); return the pid.
        `sys_path`: the driver's, added after this process's own entries (user modules it imported)."""
        sys.path.extend(p for p in sys_path if p not in sys.path)
        for key, ref in refs.items():
            if key not in self.fns:
                self.fns[key] = ref.resolve()
        return os.getpid()

    def call(self, key: str, kwargs: dict) -> tuple[str, Any]:
        """("ok", values) with array-likes as lists, ("user", message) for a UserError, or
        ("error", described) for anything else the function raised."""
        try:
            out = invoke(self.fns[key], kwargs)
            return "ok", out.tolist() if hasattr(out, "tolist") else out
        except UserError as e:
            return "user", str(e)
        except BaseException as e:  # noqa: BLE001 - SystemExit too: reported, not a dead worker
            return "error", describe(e)


def unpack(outcome: tuple[str, Any]) -> Any:
    """`RewardExecutor.call`'s outcome as the runner takes it: values, or an exception instance."""
    kind, value = outcome
    return value if kind == "ok" else UserError(value) if kind == "user" else RemoteError(value)


_ACTOR_CLASS = None


def _worker_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(RewardExecutor)  # one call at a time (a killed call kills only its actor)
    return _ACTOR_CLASS


# ---------------------------------------------------------------- the driver's pool


class RewardWorkerPool:
    def __init__(self, num_workers: int, *, cpus: float = 1.0, max_restarts: int = 3,
                 start_timeout_s: float = 120.0, log: Callable[[str], None] = print):
        self.size, self.cpus, self.max_restarts = num_workers, cpus, max_restarts
        self.start_timeout_s, self.log = start_timeout_s, log
        self.workers: list = []  # actor handles; empty until started (and after shutdown)
        self.pids: list[int] = []
        self.refs: dict[str, RewardRef] = {}
        self.prepared: set[str] = set()  # keys every live worker has resolved
        self.restarts = 0  # over the pool's life (dead workers and killed timeouts)

    def add(self, ref: RewardRef) -> str:
        """Register a reward the pool's workers resolve; returns the key calls name it by."""
        self.refs[ref.key] = ref
        return ref.key

    def start(self) -> None:
        """Start the workers (once; again after `shutdown`) and have each resolve every reward."""
        if self.workers:
            if set(self.refs) - self.prepared:  # a runner added rewards since
                self.pids = self._ready(self.workers)
            return
        if not self.refs:  # every reward runs in the driver (model rewards): nothing to start
            return
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        cpus = ray.cluster_resources().get("CPU", 0)
        if self.size * self.cpus > cpus:  # would wait for ever (Ray queues actors it cannot place)
            raise UserError(f"reward.workers={self.size} x reward.worker_cpus={self.cpus:g} CPUs: the Ray cluster "
                            f"has {cpus:g} CPUs (lower one of them; worker_cpus may be a fraction, or 0)")
        workers = [self._new() for _ in range(self.size)]
        self.pids = self._ready(workers)
        self.workers = workers

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers, self.pids, self.prepared = [], [], set()

    def run(self, calls: Sequence[tuple[int, str, dict]], timeout_s: float) -> list:
        """Run each call ``(worker index, reward key, kwargs)`` at once; outcomes in call order
        (see the module docstring). Calls on one worker run one after another, each with its own
        `timeout_s` from submission."""
        import ray
        from ray.exceptions import RayActorError

        assert len({w for w, _, _ in calls}) == len(calls), "one call per worker per run"
        self.start()
        submit = lambda k: (self.workers[calls[k][0]].call.remote(calls[k][1], calls[k][2]),  # noqa: E731
                            time.monotonic() + timeout_s)
        pending = {k: submit(k) for k in range(len(calls))}  # call -> (ref, deadline)
        out: dict[int, Any] = {}
        deaths = 0
        while pending:
            by_ref = {ref: k for k, (ref, _) in pending.items()}
            left = min(deadline for _, deadline in pending.values()) - time.monotonic()
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=max(left, 0.0))
            for ref in ready:
                k, w = by_ref[ref], calls[by_ref[ref]][0]
                del pending[k]
                try:
                    out[k] = unpack(ray.get(ref))
                except RayActorError as err:
                    deaths += 1
                    retry = deaths <= self.max_restarts
                    self._replace(w, f"died ({first_line(err)})", "starting a replacement and retrying its call"
                                  if retry else "starting a replacement; its call fails")
                    if retry:
                        pending[k] = submit(k)
                    else:
                        out[k] = RemoteError(f"RewardWorkerDied: reward workers died {deaths} times in one call "
                                             f"(reward.max_restarts={self.max_restarts}); last: {first_line(err)}")
            now = time.monotonic()
            for k in [k for k, (ref, deadline) in pending.items() if deadline <= now and ref not in ready]:
                del pending[k]
                out[k] = CallTimeout()
                self._replace(calls[k][0], f"timed out after {timeout_s:g} s", "killed it, starting a replacement")
        return [out[k] for k in range(len(calls))]

    # ------------------------------------------------------------ actors

    def _new(self):
        return _worker_class().options(num_cpus=self.cpus).remote()

    def _ready(self, workers: list) -> list[int]:
        """Wait for `workers` to resolve every reward; their pids. A UserError if they cannot."""
        import ray
        from ray.exceptions import GetTimeoutError

        refs, path = dict(self.refs), [os.getcwd(), *sys.path]
        try:
            pids = ray.get([w.prepare.remote(refs, path) for w in workers], timeout=self.start_timeout_s)
        except BaseException as e:  # a reward that does not resolve there (UserError), a timeout, ...
            for w in workers:
                ray.kill(w)
            cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError: what prepare raised
            if isinstance(cause, UserError):
                raise UserError(f"in a reward worker: {cause}") from None
            if not isinstance(e, GetTimeoutError):
                raise
            cpus = ray.cluster_resources().get("CPU", 0)
            raise UserError(f"reward workers did not start within {self.start_timeout_s:g} s: {len(workers)} asked "
                            f"for reward.worker_cpus={self.cpus:g} CPUs each, the Ray cluster has {cpus:g} CPUs, "
                            "some of them taken (lower reward.workers or reward.worker_cpus)") from None
        self.prepared = set(refs)
        return pids

    def _replace(self, i: int, reason: str, then: str) -> None:
        def start():
            worker = self._new()
            self.pids[i] = self._ready([worker])[0]
            return worker

        self.workers[i] = replace_actor(f"reward worker {i}", self.workers[i], reason, start, self.log, then)
        self.restarts += 1

