"""RolloutPool: the driver's handle on several RolloutWorker actors, with restarts, and GPU placement.

- `generate(requests)` cuts the requests into contiguous shares, one per worker, runs them at
  once and returns the results in request order.
- Faults: when a worker dies (any `RayActorError`: process killed, node lost, out of memory),
  the pool starts a replacement actor, loads the latest synced weights into it and retries the
  dead worker's share. Ray's own actor restart (`max_restarts`) is not used on purpose: Ray
  would re-run `__init__`, which loads the *initial* checkpoint, and the restarted worker would
  then generate with stale weights without anyone noticing. After `max_restarts` restarts within
  one pool call the pool raises `RolloutWorkerFailure` (a crash loop is a bug, not a fault).
  An exception raised *inside* a worker (`RayTaskError`, e.g. a bad request) is not a fault
  and is raised at once.
- Weights: `load_weights` puts the tensors in the object store once and every worker loads the
  same ObjectRef; the pool keeps that ref for replacements. Weights that went to the engines
  directly (vLLM weight transfer, rlcurr.rollout.weight_transfer) leave no ref: then
  `weights_sent_directly(fetch)` gives the pool a way to get the learner's current weights, and a
  replacement loads those. A warning an engine returns from a load (e.g. its weight copy went to
  a regular temp dir, /dev/shm being too small) is logged once.
- RNG: `get_rng_state()` is one engine sampling-RNG state per worker (checkpointed by the
  trainer), `set_rng_state(states)` restores them on resume. A replacement worker starts from its
  seed, not from the dead worker's RNG state (its share is still retried, just drawn anew).
- Colocated mode (`resources.colocate`): `sleep()` before the learner step frees the GPU
  memory vLLM holds (level 1: weights offloaded to CPU, KV cache dropped), `wake_up()` after.

Placement (`placement(...)`): with no GPUs in the Ray cluster nothing is placed (actors take
`num_cpus=0` and run wherever Ray starts them). With GPUs, one placement group holds a bundle
per rollout worker (`gpus_per_rollout_worker` GPUs, >= tensor_parallel_size: vLLM's own
multiprocessing executor then spreads its tp ranks over the GPUs Ray gave the actor) and, unless
colocated, a bundle per learner worker, so rollout and learner never share a GPU. Colocated,
each rollout bundle is shared half/half by a rollout worker and a learner worker (Ray's
fractional GPUs); this needs tensor_parallel_size 1, and rollout.gpu_memory_utilization low enough
to leave the learner room while vLLM is awake (e.g. 0.4). Left out: multi-node tensor parallelism
(a bundle lives on one node) and Ray's placement of vLLM's tp workers as separate actors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError

from rlcurr.actors import ActorPool
from rlcurr.cluster import describe_missing, role_options
from rlcurr.errors import UserError
from rlcurr.learner.dataparallel import split_even
from rlcurr.types import Completion, GenRequest


class PlacementTimeout(UserError):
    """The cluster did not hold the recipe's placement group in time."""


class RolloutWorkerFailure(RuntimeError):
    """Rollout workers kept dying: more restarts than allowed within one call."""


class RolloutPool(ActorPool):
    what, group, failure = "rollout worker", "the rollout workers", RolloutWorkerFailure
    restarts_field = "rollout.max_restarts"
    start_hint = (": no live node has room for them, or the node resource they ask for "
                  "(resources.rollout_node_resource); resources.placement_timeout_s sets the wait")

    def __init__(self, make_worker: Callable[[int], Any], num_workers: int, *, max_restarts: int = 3,
                 colocate: bool = False, log: Callable[[str], None] = print, start_timeout_s: float | None = None):
        """`make_worker(i)` starts the i-th RolloutWorker actor (and again for its replacements);
        `start_timeout_s`: see ActorPool."""
        super().__init__(make_worker, num_workers, max_restarts=max_restarts, log=log, start_timeout_s=start_timeout_s)
        self.colocate = colocate
        self.weights: ray.ObjectRef | None = None  # the last synced weights, for replacements
        self.latest_weights: Callable[[], ray.ObjectRef] | None = None  # else how to get them (direct sync)
        self.load_warned = False
        self.engine_seconds = 0.0  # wall time of the last generate, as the slowest worker's engine saw it
        self.asleep = False
        self.loading: dict[int, ray.ObjectRef] = {}  # weight loads submitted without waiting (worker -> call)

    def generate(self, requests: list[GenRequest]) -> list[list[Completion]]:
        shares = split_even(requests, len(self.workers))
        busy = [i for i, share in enumerate(shares) if share]
        parts = self._call(busy, lambda i: self.workers[i].generate.remote(shares[i]))
        self.engine_seconds = max((seconds for _, seconds in parts), default=0.0)
        return [out for outs, _ in parts for out in outs]

    def load_weights(self, named_tensors, wait: bool = True) -> None:
        """One object-store copy of the weights, loaded by every worker. `wait=False` returns at
        once: each worker loads them before its next call (a Ray actor runs one caller's calls in
        order), so the next `generate` is the first to wait for them, and a load that failed is
        raised there."""
        self.weights = named_tensors if isinstance(named_tensors, ray.ObjectRef) else ray.put(named_tensors)
        self._take_loading()  # a load still pending is superseded (it runs first anyway)
        submit = lambda i: self.workers[i].load_weights.remote(self.weights)  # noqa: E731
        if not wait:
            self.loading = {i: submit(i) for i in range(len(self.workers))}
            return
        # a replacement started during this call already loaded self.weights; loading twice is harmless
        for note in self._call(range(len(self.workers)), submit):
            self._load_note(note)

    def weights_sent_directly(self, fetch: Callable[[], ray.ObjectRef]) -> None:
        """The engines got the latest weights without the object store (vLLM weight transfer);
        `fetch()` returns a ref to the learner's current weights for a replacement worker."""
        self.weights, self.latest_weights = None, fetch

    def stop_weight_transfer(self) -> None:
        """Every engine releases its side of vLLM's weight transfer (the learner left it)."""
        self._call(range(len(self.workers)),
                   lambda i: self.workers[i].weight_transfer.remote("shutdown_weight_transfer_engine"))

    def engine_dtype(self) -> str:
        """The rollout engines' dtype (worker 0's; they are all built alike)."""
        return self._call([0], lambda i: self.workers[i].engine_dtype.remote())[0]

    def weight_file_writers(self) -> int:
        """How many engines write their own copy of the weights to load them."""
        return sum(self._call(range(len(self.workers)), lambda i: self.workers[i].writes_weight_file.remote()))

    def _load_note(self, note: str | None) -> None:
        if note and not self.load_warned:
            self.load_warned = True
            self.log(note)

    def settle(self) -> None:
        """Wait for weight loads submitted without waiting (a failed one is raised here)."""
        self._wait(self._take_loading())

    def _wait(self, loads: dict[int, ray.ObjectRef]) -> None:
        for ref in loads.values():
            try:
                self._load_note(ray.get(ref))
            except RayActorError:  # a dead worker: found and replaced by the next call to it
                pass

    def _take_loading(self) -> dict[int, ray.ObjectRef]:
        loading, self.loading = self.loading, {}
        return loading

    def node_ids(self) -> set[str]:
        """The Ray nodes the workers run on."""
        return set(self._call(range(len(self.workers)), lambda i: self.workers[i].node_id.remote()))

    def sleep(self) -> None:
        if self.colocate and not self.asleep:
            self._call(range(len(self.workers)), lambda i: self.workers[i].sleep.remote())
            self.asleep = True

    def wake_up(self) -> None:
        if self.colocate and self.asleep:
            self._call(range(len(self.workers)), lambda i: self.workers[i].wake_up.remote())
            self.asleep = False

    def get_rng_state(self) -> list:
        """One sampling-RNG state per worker, in worker order (None for an engine without one)."""
        return self._call(range(len(self.workers)), lambda i: self.workers[i].get_rng_state.remote())

    def set_rng_state(self, states: list) -> None:
        """Restore `get_rng_state`'s list. A list for another number of workers is not applied
        (with a warning): the workers keep their seeded start, the run is no longer reproducible."""
        if len(states) != len(self.workers):
            self.log(f"warning: the checkpoint has rollout RNG states for {len(states)} worker(s), this run has "
                     f"{len(self.workers)}; rollout RNGs not restored")
            return
        self._call(range(len(self.workers)), lambda i: self.workers[i].set_rng_state.remote(states[i]))

    def _call(self, indices, submit: Callable[[int], ray.ObjectRef]) -> list:
        """ActorPool._call. Weight loads submitted without waiting ran before this call on each
        worker; an error in one is raised here (a dead worker is found by the call itself; its
        replacement loads the weights)."""
        pending = self._take_loading()
        return super()._call(indices, submit, after_submit=lambda: self._wait(pending))

    def _start_replacement(self, i: int) -> Any:
        """A new worker with the latest weights, asleep if the pool is."""
        worker = super()._start_replacement(i)
        weights = self.weights if self.weights is not None else (
            self.latest_weights() if self.latest_weights is not None else None)
        if weights is not None:
            self._load_note(ray.get(worker.load_weights.remote(weights)))
        if self.asleep:
            ray.get(worker.sleep.remote())
        return worker


# ---------------------------------------------------------------- placement


@dataclass
class Placement:
    """Ray actor options for each rollout and learner worker (empty dicts on CPU)."""

    rollout: list[dict] = field(default_factory=list)
    learner: list[dict] = field(default_factory=list)
    group: Any = None  # the PlacementGroup, when one was made


def placement_bundles(num_rollout: int, num_learner: int, *, gpus_per_rollout_worker: int,
                      gpus_per_learner_worker: int, colocate: bool, tensor_parallel_size: int,
                      rollout_resource: str | None = None, learner_resource: str | None = None) -> dict:
    """The placement group `placement` asks for on a GPU cluster, without creating it: `bundles`
    (one {"GPU": n} per bundle, plus a share of the role's node resource when the recipe pins the
    role to nodes: rlcurr.cluster), the bundle index of each rollout and learner worker, and the
    GPUs each takes (fractional when colocated). `rlcurr plan` counts GPUs from it before asking Ray."""
    if colocate:
        if tensor_parallel_size != 1 or num_learner > num_rollout:
            raise UserError("resources.colocate supports rollout.tensor_parallel_size=1 and at most one "
                            "learner worker per rollout worker")
        if rollout_resource != learner_resource:
            raise UserError("resources.colocate shares each GPU between a rollout worker and a learner rank: "
                            "resources.rollout_node_resource and learner_node_resource must be the same")
        shared = role_options(rollout_resource).get("resources", {})
        return {"bundles": [{"GPU": 1, **shared} for _ in range(num_rollout)],
                "rollout_bundle": list(range(num_rollout)), "learner_bundle": list(range(num_learner)),
                "rollout_gpus": 0.5, "learner_gpus": 0.5}
    rollout_label = role_options(rollout_resource).get("resources", {})
    learner_label = role_options(learner_resource).get("resources", {})
    return {"bundles": ([{"GPU": gpus_per_rollout_worker, **rollout_label} for _ in range(num_rollout)]
                        + [{"GPU": gpus_per_learner_worker, **learner_label} for _ in range(num_learner)]),
            "rollout_bundle": list(range(num_rollout)),
            "learner_bundle": list(range(num_rollout, num_rollout + num_learner)),
            "rollout_gpus": gpus_per_rollout_worker, "learner_gpus": gpus_per_learner_worker}


def placement(num_rollout: int, num_learner: int, *, gpus_per_rollout_worker: int, gpus_per_learner_worker: int,
              colocate: bool, tensor_parallel_size: int, rollout_resource: str | None = None,
              learner_resource: str | None = None, ready_timeout_s: float = 600) -> Placement:
    """Decide where actors go; call after `ray.init`. No GPUs in the cluster: no placement group,
    only the roles' node resources (rlcurr.cluster.role_options). A group not ready within
    `ready_timeout_s` is removed (so it cannot grab GPUs later) and `PlacementTimeout` raised,
    naming what the group asked for and what the cluster has free."""
    if ray.cluster_resources().get("GPU", 0) == 0:
        if colocate:
            raise UserError("resources.colocate needs GPUs: vLLM's sleep mode (which frees the rollout "
                            "engine's memory during the learner step) is CUDA-only")
        return Placement([role_options(rollout_resource) for _ in range(num_rollout)],
                         [role_options(learner_resource) for _ in range(num_learner)])
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    plan = placement_bundles(num_rollout, num_learner, gpus_per_rollout_worker=gpus_per_rollout_worker,
                             gpus_per_learner_worker=gpus_per_learner_worker, colocate=colocate,
                             tensor_parallel_size=tensor_parallel_size, rollout_resource=rollout_resource,
                             learner_resource=learner_resource)
    group = placement_group(plan["bundles"], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=ready_timeout_s)  # fails loudly when the cluster cannot hold the bundles
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise PlacementTimeout(f"Ray could not place the rollout and learner workers within {ready_timeout_s:g} s "
                               f"(resources.placement_timeout_s): asked for {describe_missing(plan['bundles'])}, "
                               f"in {len(plan['bundles'])} bundles; placement group removed") from None

    def options(bundle: int, gpus: float) -> dict:
        return {"num_gpus": gpus, "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=bundle)}

    return Placement([options(b, plan["rollout_gpus"]) for b in plan["rollout_bundle"]],
                     [options(b, plan["learner_gpus"]) for b in plan["learner_bundle"]], group)
