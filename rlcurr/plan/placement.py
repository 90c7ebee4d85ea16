"""`rlcurr plan`'s placement: the trainer's Ray placement group, really created and read back
(docs/scaling.md).

The trainer's own `rlcurr.rollout.pool.placement(...)` is called with the arguments
`Trainer.start` gives it, so the Ray placement group is really created; each actor's options are
then tried by a no-op Ray task (`num_cpus=0`, the actor's GPUs and bundle), which reports the node
and the GPU ids Ray hands it (`ray.get_gpu_ids()`: the CUDA_VISIBLE_DEVICES the real actor would
see). Then the group is removed, and a Ray started here is shut down. Without RAY_ADDRESS a local
Ray is started with `--gpus N` GPUs (default: what Ray detects; on a machine without GPUs, a
recipe that sets a `resources` field gets a pretend node with the GPUs it needs), so a node you
don't have can be planned; with RAY_ADDRESS the plan is made on that cluster (its free GPUs). A
recipe that needs more GPUs than the cluster has is one error naming the fields and numbers,
before Ray is asked. With no GPUs placement is a no-op (the actors run on CPU wherever Ray
starts them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rlcurr.cluster import check_node_resources, connect, node_address
from rlcurr.errors import UserError


@dataclass
class ActorRow:
    actor: str
    role: str  # rollout | learner
    engine: str  # vllm / hf for rollout workers, ddp / fsdp for learner ranks
    tensor_parallel_size: int | None
    gpus: float
    bundle: int | None
    cpus: float
    node: str | None = None
    gpu_ids: list | None = None


@dataclass
class PlacementPlan:
    rows: list[ActorRow]
    cluster_gpus: float
    gpus_used: float
    learner_strategy: str
    learner_ranks: int
    colocate: bool
    on_cpu: bool
    bundles: list[dict] = field(default_factory=list)


def placement_arguments(cfg) -> dict:
    """The arguments `Trainer.start` gives `placement` / `placement_bundles`."""
    r, res = cfg.rollout, cfg.resources
    return dict(num_rollout=r.num_workers, num_learner=cfg.learner.num_workers, colocate=res.colocate,
                gpus_per_rollout_worker=res.gpus_per_rollout_worker or r.tensor_parallel_size,
                gpus_per_learner_worker=res.gpus_per_learner_worker or 1, tensor_parallel_size=r.tensor_parallel_size,
                rollout_resource=res.rollout_node_resource, learner_resource=res.learner_node_resource)


def gpus_needed(cfg) -> int:
    """GPUs the recipe's placement group holds (rollout bundles + learner bundles, or shared)."""
    from rlcurr.rollout.pool import placement_bundles

    return int(sum(b["GPU"] for b in placement_bundles(**placement_arguments(cfg))["bundles"]))


def asks_for_gpus(cfg) -> bool:
    """A recipe written for GPUs: it sets a GPU field of `resources` (GPUs per worker, colocation)."""
    from rlcurr.cluster import gpu_fields_set

    return bool(gpu_fields_set(cfg))


def default_gpus(cfg) -> tuple[int | None, str | None]:
    """--gpus when none was given: on a machine without GPUs (and no RAY_ADDRESS), a recipe that
    asks for GPUs is planned on a pretend node with the GPUs it needs; else Ray's detection."""
    if os.environ.get("RAY_ADDRESS") or not asks_for_gpus(cfg):
        return None, None
    import torch

    if torch.cuda.is_available():
        return None, None
    n = gpus_needed(cfg)
    return n, (f"no GPU on this machine: planned on a pretend node with the {n} GPUs the recipe needs "
               f"(--gpus N for another node, --gpus 0 for CPU)")


def check_gpus_fit(cfg, cluster_gpus: float, node_gpus: list[float]) -> None:
    """One UserError naming the fields when the recipe's bundles cannot fit the cluster's GPUs."""
    from rlcurr.rollout.pool import placement_bundles

    plan = placement_bundles(**placement_arguments(cfg))
    needed = sum(b["GPU"] for b in plan["bundles"])
    r, res, learner = cfg.rollout, cfg.resources, cfg.learner
    if res.colocate:
        how = (f"resources.colocate: rollout.num_workers ({r.num_workers}) GPUs, each shared with one of "
               f"learner.num_workers ({learner.num_workers})")
    else:
        rollout_gpus = res.gpus_per_rollout_worker or r.tensor_parallel_size
        field_name = ("resources.gpus_per_rollout_worker" if res.gpus_per_rollout_worker
                      else "rollout.tensor_parallel_size")
        how = (f"rollout.num_workers ({r.num_workers}) x {field_name} ({rollout_gpus}) + learner.num_workers "
               f"({learner.num_workers}) x resources.gpus_per_learner_worker ({res.gpus_per_learner_worker or 1})")
    if needed > cluster_gpus:
        raise UserError(f"the recipe needs {needed:g} GPUs = {how}, the Ray cluster has {cluster_gpus:g}; "
                        f"lower those fields, or plan for a bigger node with --gpus {needed:g}")
    biggest = max(b["GPU"] for b in plan["bundles"])
    if node_gpus and biggest > max(node_gpus):
        raise UserError(f"one worker needs {biggest:g} GPUs on one node ({how}); the largest node has "
                        f"{max(node_gpus):g}")


def _probe_resources():
    """Runs where an actor with the same options would: its node and Ray's GPU ids for it."""
    import ray

    return ray.get_runtime_context().get_node_id(), [str(i) for i in ray.get_gpu_ids()]


def plan_placement(cfg, ready_timeout_s: float = 60, probe_timeout_s: float = 120) -> PlacementPlan:
    """Create the trainer's placement group on the connected Ray cluster, read it back, remove it."""
    import ray
    from ray.util.placement_group import placement_group_table, remove_placement_group

    from rlcurr.rollout.pool import placement

    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    node_gpus = [n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")]
    r, learner = cfg.rollout, cfg.learner
    tp = r.tensor_parallel_size if r.engine == "vllm" else None
    if cluster_gpus:
        check_gpus_fit(cfg, cluster_gpus, node_gpus)
    check_node_resources(cfg)  # (GPUs: check_gpus_fit above, or a pretend node from default_gpus)
    placed = placement(**placement_arguments(cfg), ready_timeout_s=ready_timeout_s)
    rows = [ActorRow(f"rollout worker {i}", "rollout", r.engine, tp, 0, None, 0) for i in range(r.num_workers)]
    rows += [ActorRow(f"learner rank {j}", "learner", learner.strategy, None, 0, None, 0)
             for j in range(learner.num_workers)]
    options = placed.rollout + placed.learner
    bundles: list[dict] = []
    probe = ray.remote(num_cpus=0)(_probe_resources)
    try:
        if placed.group is not None:
            bundles = [dict(b) for b in placed.group.bundle_specs]
            table = placement_group_table(placed.group)
            to_node = table.get("bundles_to_node_id", {})
            futures = [probe.options(**opts).remote() for opts in options]
            found = ray.get(futures, timeout=probe_timeout_s)
            for row, opts, (node, gpu_ids) in zip(rows, options, found):
                strategy = opts["scheduling_strategy"]
                row.bundle = strategy.placement_group_bundle_index
                row.gpus = opts["num_gpus"]
                row.cpus = bundles[row.bundle].get("CPU", 0)
                row.node = node_address(to_node.get(row.bundle, node))
                row.gpu_ids = gpu_ids
        else:  # CPU: a role pinned to nodes runs where a probe with its resources runs; else anywhere
            pinned = [(row, opts) for row, opts in zip(rows, options) if opts]
            found = ray.get([probe.options(**opts).remote() for _, opts in pinned], timeout=probe_timeout_s)
            for (row, opts), (node, _) in zip(pinned, found):
                row.node = f"{node_address(node)} [{next(iter(opts['resources']))}]"
    finally:
        if placed.group is not None:
            remove_placement_group(placed.group)
    return PlacementPlan(rows, cluster_gpus, sum(b.get("GPU", 0) for b in bundles), learner.strategy,
                         learner.num_workers, cfg.resources.colocate, placed.group is None, bundles)


def start_ray(gpus: int | None) -> bool:
    """Connect to RAY_ADDRESS, or start a private local Ray with `gpus` GPUs. True if started here."""
    import ray

    if ray.is_initialized():
        if gpus is not None:
            raise UserError("--gpus pretends a local Ray node; Ray is already running in this process")
        return False
    address = os.environ.get("RAY_ADDRESS")
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address:
        if gpus is not None:
            raise UserError(f"--gpus pretends a local Ray node; RAY_ADDRESS={address} plans on that cluster instead "
                            f"(unset RAY_ADDRESS to pretend)")
        connect()  # bounded in time, as `rlcurr train` joins
    else:
        # address="local": a new Ray of our own, never another session's cluster found on this machine
        ray.init(address="local", num_gpus=gpus, num_cpus=os.cpu_count() or 1,
                 object_store_memory=80 * 2**20, **quiet)
    return True


MODEL_REWARDS = {"reward_model": "rm", "judge": "judge"}  # rlcurr.rewards.model_rewards' names -> engine column


def reward_actor_rows(cfg) -> list[ActorRow]:
    """One row per reward actor of the recipe's model rewards (`reward_model`, `judge`), from their
    params, nothing built: role "reward", the actor's own num_gpus / num_cpus. They are not in the
    placement group (rlcurr.rewards.model_actors), so no bundle, node or GPU ids are known ahead."""
    rows = []
    for spec in cfg.rewards or []:
        if spec.name not in MODEL_REWARDS:
            continue
        p = spec.params
        for i in range(int(p.get("num_actors", 1))):
            rows.append(ActorRow(f"{spec.name} {i}", "reward", MODEL_REWARDS[spec.name], None,
                                 float(p.get("num_gpus", 0)), None, float(p.get("num_cpus", 1))))
    return rows
