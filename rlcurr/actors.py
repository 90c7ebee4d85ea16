"""Replacing a Ray actor that died (or was killed for running too long), the same way for every pool.

`replace_actor` starts a fresh actor in place of a dead one, logs it in the same two lines and
returns it; `ActorPool` is the pool around it that the rollout workers (rlcurr.rollout.pool) and
the reward-model actors (rlcurr.rewards.model_actors) share: one call per actor at once, a dead
actor replaced and its call resubmitted, at most `max_restarts` times per pool call.
`RewardWorkerPool` (rlcurr.rewards.workers) also kills actors that run too long, so it drives
`replace_actor` itself. Ray's own actor restart (`max_restarts` in the actor options) is not used:
see rlcurr.rollout.pool.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError


def first_line(err: BaseException) -> str:
    """An error's first line (Ray's actor errors run to many lines), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def replace_actor(what: str, old: Any, reason: str, start: Callable[[], Any], log: Callable[[str], None],
                  then: str = "starting a replacement and retrying its call") -> Any:
    """Kill `old` (if it is only unreachable, it cannot come back; if it hangs, it stops) and
    return `start()`, the new actor, ready. Logs ``warning: {what} {reason}; {then}`` before and
    ``{what} replaced in N s`` after."""
    log(f"warning: {what} {reason}; {then}")
    ray.kill(old)
    t0 = time.perf_counter()
    new = start()
    log(f"{what} replaced in {time.perf_counter() - t0:.1f} s")
    return new


class ActorPool:
    """Actors of one kind, the i-th started by `make_actor(i)` (and again for its replacements).
    Subclasses name their actors and errors (the class attributes) and say what a replacement
    needs beyond starting (`_start_replacement`)."""

    what = "actor"  # "<what> <i>" in the replacement log lines
    group = "the actors"  # all of them, in errors
    failure: type[Exception] = RuntimeError  # raised when actors keep dying, or do not start in time
    restarts_field = "max_restarts"  # the setting that bounds the replacements per call
    start_hint = ""  # appended to the error when actors do not start within start_timeout_s

    def __init__(self, make_actor: Callable[[int], Any], num_actors: int, *, max_restarts: int = 3,
                 log: Callable[[str], None] = print, start_timeout_s: float | None = None):
        """`start_timeout_s`: how long an actor (or a replacement) may take to be placed and to
        answer, e.g. while no live node has the resources it asks for (None: no limit)."""
        self.make_worker, self.max_restarts, self.log = make_actor, max_restarts, log
        self.start_timeout_s = start_timeout_s
        self.workers = [make_actor(i) for i in range(num_actors)]
        self._started(self.workers, self.group)
        self.restarts = 0  # over the pool's life

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)

    def _call(self, indices, submit: Callable[[int], ray.ObjectRef], after_submit: Callable[[], None] | None = None) -> list:
        """Run `submit(i)` on the given actors at once (then `after_submit()`); results in index
        order. An actor that died is replaced and its call resubmitted, up to `max_restarts`
        times per call; an error raised inside an actor (RayTaskError) is raised as it is."""
        futures = {i: submit(i) for i in indices}
        if after_submit is not None:
            after_submit()
        results, restarts = {}, 0
        for i in futures:
            while i not in results:
                try:
                    results[i] = ray.get(futures[i])
                except RayActorError as err:
                    while True:  # a replacement that dies while starting (placed on a node being lost) counts too
                        restarts += 1
                        if restarts > self.max_restarts:
                            raise self.failure(f"{self.group} died {restarts} times in one call ({self.restarts_field}="
                                               f"{self.max_restarts}); last error: {first_line(err)}") from err
                        try:
                            self._replace(i, err)
                            break
                        except RayActorError as again:
                            err = again
                    futures[i] = submit(i)
        return [results[i] for i in futures]

    def _started(self, workers: list, what: str) -> None:
        """Wait for `workers` to answer; `failure` after start_timeout_s."""
        try:
            ray.get([w.ping.remote() for w in workers], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            for w in workers:
                ray.kill(w)
            raise self.failure(f"{what} did not start within {self.start_timeout_s:g} s{self.start_hint}") from None

    def _start_replacement(self, i: int) -> Any:
        """A new i-th actor, ready to take the dead one's call."""
        actor = self.make_worker(i)
        self._started([actor], f"a replacement for {self.what} {i}")
        return actor

    def _replace(self, i: int, err: Exception) -> None:
        self.workers[i] = replace_actor(f"{self.what} {i}", self.workers[i], f"died ({first_line(err)})",
                                        lambda: self._start_replacement(i), self.log)
        self.restarts += 1
