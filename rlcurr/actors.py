"""Replacing a Ray actor that died (or was killed for running too long), the same way for every pool.

`RolloutPool` (rlcurr.rollout.pool) and `RewardWorkerPool` (rlcurr.rewards.workers) both start a
fresh actor in place of a dead one, log it in the same two lines and count it; each pool bounds
the replacements per call itself (rollout.max_restarts, reward.max_restarts). Ray's own actor
restart (`max_restarts` in the actor options) is not used: see rlcurr.rollout.pool.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def first_line(err: BaseException) -> str:
    """An error's first line (Ray's actor errors run to many lines), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def replace_actor(what: str, old: Any, reason: str, start: Callable[[], Any], log: Callable[[str], None],
                  then: str = "starting a replacement and retrying its call") -> Any:
    """Kill `old` (if it is only unreachable, it cannot come back; if it hangs, it stops) and
    return `start()`, the new actor, ready. Logs ``warning: {what} {reason}; {then}`` before and
    ``{what} replaced in N s`` after."""
    import ray

    log(f"warning: {what} {reason}; {then}")
    ray.kill(old)
    t0 = time.perf_counter()
    new = start()
    log(f"{what} replaced in {time.perf_counter() - t0:.1f} s")
    return new
