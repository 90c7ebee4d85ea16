"""`rlcurr plan`'s output: the placement table and the memory lines as text, or both as JSON."""

from __future__ import annotations

from dataclasses import asdict

from rlcurr.plan.memory import GIB, MemoryEstimate
from rlcurr.plan.placement import PlacementPlan


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def format_placement(p: PlacementPlan) -> list[str]:
    out = ["placement:"]
    if p.on_cpu:
        out.append("  no GPUs in the Ray cluster: everything runs on CPU, placement is a no-op "
                   "(actors take num_cpus=0 and run wherever Ray starts them)")
    header = f"  {'actor':<18} {'engine':<7} {'tp':>3} {'GPUs':>5} {'bundle':>6} {'CPUs':>4}  GPU ids  node"
    out.append(header)
    for row in p.rows:
        tp = "-" if row.tensor_parallel_size is None else str(row.tensor_parallel_size)
        bundle = "-" if row.bundle is None else str(row.bundle)
        ids = ",".join(row.gpu_ids) if row.gpu_ids else "-"
        node = row.node or ("any node" if p.on_cpu else "-")
        out.append(f"  {row.actor:<18} {row.engine:<7} {tp:>3} {row.gpus:>5g} {bundle:>6} {row.cpus:>4g}  "
                   f"{ids:<7}  {node}")
    out.append(f"  learner: {p.learner_strategy} over {p.learner_ranks} rank(s)")
    if any(row.role == "reward" for row in p.rows):
        out.append("  reward actors (model rewards): outside the placement group, each with its params' num_gpus / "
                   "num_cpus; Ray places them on free resources when the first step is scored")
    if not p.on_cpu:
        shared = " (each GPU shared by a rollout worker and a learner rank, 0.5 each)" if p.colocate else ""
        out.append(f"  GPUs used: {p.gpus_used:g} of {p.cluster_gpus:g} in the cluster, "
                   f"{len(p.bundles)} bundles in one PACK placement group{shared}")
    return out


def format_memory(m: MemoryEstimate, on_cpu: bool = False) -> list[str]:
    out = [f"memory per GPU (estimate, GiB of a {m.gpu_memory_bytes / GIB:g} GiB GPU; assumptions: "
           f"rlcurr/plan/memory.py{'; for a run on GPUs' if on_cpu else ''}):"]
    out += [f"  {note}" for note in m.notes]
    out.append(f"  parameters: {m.params / 1e9:.3f}B, trainable {m.trainable_params / 1e9:.3f}B")
    for g in m.gpus:
        out.append(f"  {g.kind} x {g.count}:")
        for name, n, how in g.lines:
            out.append(f"    {name:<28} {_gib(n):>7}  {how}")
        out.append(f"    {'total':<28} {_gib(g.total_bytes):>7}")
    out += [f"warning: {w}" for w in m.warnings]
    return out


def plan_to_json(p: PlacementPlan, m: MemoryEstimate) -> dict:
    return {"placement": {**asdict(p)},
            "memory": {"params": m.params, "trainable_params": m.trainable_params, "shape": asdict(m.shape),
                       "gpu_memory_bytes": m.gpu_memory_bytes, "notes": m.notes, "warnings": m.warnings,
                       "gpus": [{"kind": g.kind, "count": g.count, "total_bytes": g.total_bytes,
                                 "lines": [{"what": a, "bytes": n, "how": h} for a, n, h in g.lines]}
                                for g in m.gpus]}}
