"""Reward actors: the Ray shell around `rlcurr.rewards.model_scorers` and the pool that runs them.

`ScorerActor` holds one scorer (a reward model or a judge) and does nothing else. `RewardActorPool`
is an `rlcurr.actors.ActorPool`, as the rollout workers' pool is: `score(items)` cuts one call's
items into contiguous shares, one per actor, runs them at once and returns the results in item
order; an actor that dies (`RayActorError`: killed, out of memory, node lost) is replaced -- a
fresh actor loading the same frozen weights, nothing more, as reward weights never change -- and
its share retried, at most `max_restarts` times per call (then `RewardActorFailure`, a one-line
error: a crash loop is not a per-answer reward failure).

Placement: actors take the reward's own `num_cpus` / `num_gpus`; they are not in the trainer's
placement group (rlcurr.rollout.pool.placement), so on a GPU cluster Ray puts them on GPUs the
group left free. torch threads per actor: its num_cpus (at least 1), capped by RLCURR_CPU_THREADS.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ray

from rlcurr.actors import ActorPool
from rlcurr.cluster import cpu_thread_cap
from rlcurr.errors import UserError
from rlcurr.learner.dataparallel import split_even


class RewardActorFailure(UserError):
    """Reward actors kept dying: more replacements than `max_restarts` within one call."""


@ray.remote(num_cpus=0)
class ScorerActor:
    def __init__(self, kind: str, kwargs: dict, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        from rlcurr.rewards.model_scorers import make_scorer

        self.scorer = make_scorer(kind, **kwargs)

    def score(self, items: list) -> list:
        return self.scorer.score_items(items)

    def ping(self) -> int:
        return os.getpid()


def actor_threads(num_cpus: float) -> int:
    threads = max(1, int(num_cpus)) if num_cpus >= 1 else (os.cpu_count() or 1)
    cap = cpu_thread_cap()
    return threads if cap is None else min(threads, cap)


class RewardActorPool(ActorPool):
    failure = RewardActorFailure

    def __init__(self, kind: str, scorer_kwargs: dict, *, num_actors: int, num_cpus: float, num_gpus: float,
                 max_restarts: int, label: str, log: Callable[[str], None] = print):
        self.label = label
        self.what, self.group = f"reward actor {label}", f"reward {label!r}'s actors"
        self.restarts_field = f"reward {label!r} params.max_restarts"
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        threads = actor_threads(num_cpus)
        kwargs = dict(scorer_kwargs)
        if num_gpus > 0 and kind == "reward_model":
            kwargs["device"] = "cuda"

        def make_actor(i: int):
            return ScorerActor.options(**options).remote(kind, kwargs, threads)

        super().__init__(make_actor, num_actors, max_restarts=max_restarts, log=log)

    def score(self, items: list) -> list:
        """Contiguous shares of `items`, one per actor, scored at once; results in item order.
        A replacement loads the same frozen weights: nothing beyond starting it (ActorPool)."""
        shares = split_even(list(items), len(self.workers))
        busy = [i for i, share in enumerate(shares) if share]
        parts = self._call(busy, lambda i: self.workers[i].score.remote(shares[i]))
        return [x for part in parts for x in part]

    def pids(self) -> list[Any]:
        return ray.get([w.ping.remote() for w in self.workers])
