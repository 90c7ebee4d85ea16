"""Seconds of one weight sync (learner -> rollout engine) against model size, dtype and path.

Paths (rlcurr/rollout/weight_transfer.py), both through rlcurr's own code:
  shm           learner and engine on the SAME Ray node: the learner actor writes the shared-memory
                file (`LearnerWorker.engine_weights(shared=True)`, rlcurr.rollout.shared_weights),
                the engine maps it and loads from its layout (`RolloutWorker.load_weights` ->
                `HFEngine.load_weights`).
  object_store  learner on node A, engine on node B (custom resources of a
                `ray.cluster_utils.Cluster` on this one machine): the learner returns the named
                tensors (`engine_weights(shared=False)`, the object store put), the engine's call
                resolves the reference across nodes (pull + deserialise) and loads them.
The actors are rlcurr's `LearnerWorker` (a real `Learner`: fp32 masters, cast to the engine dtype
per sync) and `RolloutWorker` with the HF engine, subclassed here only to add a timer, a
perturbation (so every sync carries new values) and checks. Driver calls mirror
`LearnerGroup.weights_ref` + `RolloutPool.load_weights`: the reference goes straight from the
learner's call to the engine's, never through the driver.

Each sync is split into learner seconds (the `engine_weights` call until its results exist: the
cast + file write, or the cast + serialisation into the object store) and engine seconds (the
`load_weights` call: for the object store the cross-node pull and deserialisation, `get_s`, plus
the model copy, `load_s`). One untimed warm-up sync per path (first file allocation, first pull),
then `--repeats` timed syncs per path, interleaved (shm, object_store, object_store, shm, ...), so
both paths see the same background load; object_store / shm ratios are per repeat (paired). A cell
whose interleaved peak (both engines, the file, three copies of an object-store sync) would not fit
in the free memory of this shared machine runs in blocks instead: shm's repeats, then its engine
and file freed, then the object store's (494M fp32 here: `order` in the JSON).
After the timed syncs one more sync per path with the same weights checks that both engines hold
exactly the learner's weights (integer checksum over every tensor's bits, and one tensor compared).

Models: random Qwen2-shaped configs (no training): 27M (the speed bench's tiny model, char
vocabulary), 128M (hidden 768, 12 layers, vocab 32000), 494M (Qwen2-0.5B's shape), written once
as HF directories under $RLCURR_CACHE/sync_scaling. A tied model's `state_dict()` lists the
embedding twice (`model.embed_tokens.weight` and `lm_head.weight`); the learner sends it once
since 2026-12-07 (`without_tied_head`). bench/results/sync_scaling.json (d43e872) was measured
before that, with both sent (494M -> 630M values).

On one machine "across nodes" is loopback: no network, two raylets and two plasma stores on the
same memory and the same 2 cores. The figures are the software overheads of each path, not a NIC.

    python bench/sync_scaling.py            # full: 3 sizes x fp32/bf16 x 2 paths, 5 repeats
    python bench/sync_scaling.py --quick    # smoke: 27M, 1 repeat, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # measured: every node on loopback
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

PATHS = ("shm", "object_store")
DTYPES = ("float32", "bfloat16")
# name -> Qwen2Config fields (tied embeddings, like Qwen2-0.5B and rlcurr's tiny models)
SHAPES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=4096),  # ~0.4M, for the test
    "27M": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1536, vocab_size=None),  # None: the char tokenizer's (bench/speed_trl.py's model)
    "128M": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 intermediate_size=3072, vocab_size=32000),
    "494M": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936),  # Qwen2-0.5B
}
PROBE = "model.norm.weight"  # perturbed before every sync, compared after the checks
FINAL = 99  # the probe's version for the check syncs (the timed ones use 1, 2, ...; fewer than 99)


# ---------------------------------------------------------------- models


def model_dir(name: str) -> Path:
    """A random-init HF directory of shape `name` (fp32 safetensors + char tokenizer), built once."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rlcurr.learner.models import build_char_tokenizer

    out = Path(os.environ["RLCURR_CACHE"]) / "sync_scaling" / name
    if (out / "model.safetensors").is_file():
        return out
    tok = build_char_tokenizer()
    shape = dict(SHAPES[name])
    shape["vocab_size"] = shape["vocab_size"] or len(tok)
    config = Qwen2Config(**shape, max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = out.with_name(out.name + ".building")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    del model
    gc.collect()
    os.replace(tmp, out)
    print(f"  built {name} in {time.perf_counter() - t0:.1f} s: {out}", flush=True)
    return out


# ---------------------------------------------------------------- actors


def actor_classes():
    """rlcurr's LearnerWorker and RolloutWorker, subclassed with the bench's instruments only."""
    import ray
    import torch

    from rlcurr.learner.worker import LearnerWorker
    from rlcurr.rollout.worker import RolloutWorker

    def bits_checksum(named) -> int:
        """Exact: the sum of every tensor's raw bits read as integers (order-free, no rounding)."""
        ints = {4: torch.int32, 2: torch.int16, 8: torch.int64}
        return int(sum(int(t.contiguous().view(ints[t.element_size()]).sum(dtype=torch.int64)) for _, t in named))

    @ray.remote(num_cpus=0)
    class BenchLearner(LearnerWorker.__ray_metadata__.modified_class.__ray_actor_class__):
        def perturb(self, version: int, everything: bool = False) -> None:
            """New values, as an update would: the probe gets `version`; `everything`: every
            float parameter moves (so a sync that left a tensor out would show in the checksum)."""
            with torch.no_grad():
                for name, p in self.learner.model.named_parameters():
                    if everything and p.is_floating_point():
                        p.add_(1e-3)
                    if name == PROBE:
                        p.fill_(1.0 + 1e-2 * version)

        def check(self) -> tuple[int, list[float], int]:
            named = self.learner.named_weights(clone=False)
            probe = dict(named)[PROBE]
            return bits_checksum(named), probe[:4].float().tolist(), len(named)

    @ray.remote(num_cpus=0)
    class BenchEngine(RolloutWorker.__ray_metadata__.modified_class.__ray_actor_class__):
        def timed_load(self, weights) -> float:
            """rlcurr's load (`RolloutWorker.load_weights`); the seconds it took inside the actor."""
            t0 = time.perf_counter()
            self.load_weights(weights)
            return time.perf_counter() - t0

        def check(self) -> tuple[int, list[float]]:
            from rlcurr.learner.learner import without_tied_head  # what the learner sends

            named = list(without_tied_head(self.engine.model, self.engine.model.state_dict()).items())
            return bits_checksum(named), dict(named)[PROBE][:4].float().tolist()

    return BenchLearner, BenchEngine


def start_cluster(object_store_bytes: int):
    """Two Ray nodes on this machine: A (head: driver, learner, the shm engine), B (the other engine)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"node_a": 1}, "object_store_memory": object_store_bytes,
        "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"node_b": 1}, object_store_memory=object_store_bytes)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    return cluster


# ---------------------------------------------------------------- one cell


def sync_once(learner, engine, path: str) -> dict:
    """One sync as the trainer does it (LearnerGroup.weights_ref + RolloutPool.load_weights)."""
    import ray

    t0 = time.perf_counter()
    weights, info = learner.engine_weights.remote(path == "shm")
    ray.wait([weights, info], num_returns=2, fetch_local=False)  # written to the file / put in the store
    t1 = time.perf_counter()
    load_s = ray.get(engine.timed_load.remote(weights))  # (object store: pulled to node B first)
    t2 = time.perf_counter()
    info = ray.get(info)
    if info["path"] != path:
        raise RuntimeError(f"asked for {path}, the learner used {info['path']} ({info['warning']})")
    del weights  # the object store copy goes (nothing else holds the ref)
    return {"learner_s": t1 - t0, "engine_s": t2 - t1, "load_s": load_s, "get_s": t2 - t1 - load_s,
            "total_s": t2 - t0, "bytes": info["bytes"]}


def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": xs}


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def ratio_ci(num: list[float], den: list[float]) -> dict:
    """Paired ratios num_i / den_i: their geometric mean and a 95 % t-interval on the log scale
    (n - 1 degrees of freedom; none for one repeat)."""
    logs = [math.log(a / b) for a, b in zip(num, den)]
    mean = statistics.fmean(logs)
    out = {"geomean": math.exp(mean), "per_repeat": [a / b for a, b in zip(num, den)], "ci95": None}
    if len(logs) > 1:
        half = T95.get(len(logs) - 1, 1.96) * statistics.stdev(logs) / math.sqrt(len(logs))
        out["ci95"] = [math.exp(mean - half), math.exp(mean + half)]
    return out


NODE = {"shm": "node_a", "object_store": "node_b"}  # the learner is on node_a


def peak_bytes(size: str, dtype: str, interleave: bool) -> int:
    """Memory a cell needs at its peak (estimate): the learner's fp32 masters, each engine's model,
    the shared file, and during an object-store sync the object on node A, its copy pulled to
    node B and the engine's deserialised tensors (3 x what is sent)."""
    params = param_count(size)
    elem = 4 if dtype == "float32" else 2
    sent = (params + (SHAPES[size]["vocab_size"] or 0) * SHAPES[size]["hidden_size"]) * elem
    engines = (2 if interleave else 1) * params * elem
    return params * 4 + engines + (sent if interleave else 0) + 3 * sent


def choose_order(size: str, dtype: str, available: int) -> str | None:
    """"interleaved" (both engines alive, paths alternating) when it fits with room to spare on this
    shared machine; else "blocks" (the shm path's repeats, its engine and file gone, then the
    object store's); None: not even that fits now."""
    if peak_bytes(size, dtype, True) < 0.6 * available:
        return "interleaved"
    if peak_bytes(size, dtype, False) < 0.75 * available:
        return "blocks"
    return None


def run_cell(size: str, dtype: str, repeats: int, order: str = "interleaved") -> dict:
    import ray

    from rlcurr.config import AlgoConfig, LearnerConfig

    BenchLearner, BenchEngine = actor_classes()
    path_dir = str(model_dir(size))
    load_before = os.getloadavg()
    t_cell = time.perf_counter()
    learner = BenchLearner.options(resources={"node_a": 0.01}).remote(
        path_dir, LearnerConfig(), AlgoConfig(), 10, dtype=dtype)
    engines: dict = {}
    blocks = [PATHS] if order == "interleaved" else [(p,) for p in PATHS]
    warmup, checks, block_load = {}, {}, []
    syncs: dict[str, list[dict]] = {p: [] for p in PATHS}
    try:
        learner_node = ray.get(learner.node_id.remote())
        ray.get(learner.perturb.remote(0, everything=True))  # the engines start from other weights
        version = 1
        for block in blocks:
            block_load.append({"paths": list(block), "loadavg_before": os.getloadavg()})
            for path in block:
                engines[path] = BenchEngine.options(resources={NODE[path]: 0.01}).remote(
                    "hf", path_dir, dtype=dtype, seed=0)
                node = ray.get(engines[path].node_id.remote())
                assert (node == learner_node) == (path == "shm"), (path, node, learner_node)
            for path in block:  # untimed: the file's first allocation, the first pull
                ray.get(learner.perturb.remote(version))
                version += 1
                warmup[path] = sync_once(learner, engines[path], path)
            for r in range(repeats):
                for path in (block if r % 2 == 0 else block[::-1]):
                    ray.get(learner.perturb.remote(version))
                    version += 1
                    syncs[path].append(sync_once(learner, engines[path], path))
            # the check: one more sync per path, every path with the same (final) weights
            ray.get(learner.perturb.remote(FINAL))  # idempotent: the probe is set, nothing else moves
            for path in block:
                sync_once(learner, engines[path], path)
                checks[path] = ray.get(engines[path].check.remote())
            block_load[-1]["loadavg_after"] = os.getloadavg()
            if order == "blocks":  # free this block's memory before the next
                if "shm" in block:
                    ray.get(learner.close_shared_weights.remote())
                for path in block:
                    ray.kill(engines.pop(path))
        learner_sum, learner_probe, tensors = ray.get(learner.check.remote())
        ray.get(learner.close_shared_weights.remote())  # ray.kill skips atexit: remove the file now
    finally:
        for actor in [learner, *engines.values()]:
            ray.kill(actor)
        gc.collect()
    load_after = os.getloadavg()
    cell = {"size": size, "dtype": dtype, "params": None, "tensors": tensors, "bytes": syncs["shm"][0]["bytes"],
            "repeats": repeats, "order": order, "loadavg_before": load_before, "loadavg_after": load_after,
            "blocks": block_load, "cell_wall_s": time.perf_counter() - t_cell, "paths": {},
            "check": {"learner_checksum": learner_sum, "learner_probe": learner_probe,
                      "engine_checksum": {p: c[0] for p, c in checks.items()},
                      "engine_probe": {p: c[1] for p, c in checks.items()},
                      "equal": all(c[0] == learner_sum and c[1] == learner_probe for c in checks.values())}}
    for path in PATHS:
        rows = syncs[path]
        cell["paths"][path] = {
            "bytes": rows[0]["bytes"], "warmup": warmup[path],
            **{k: summary([row[k] for row in rows]) for k in ("learner_s", "engine_s", "get_s", "load_s", "total_s")},
            "gbytes_per_s": rows[0]["bytes"] / 1e9 / statistics.median(row["total_s"] for row in rows)}
    cell["ratio_object_store_over_shm"] = {
        k: ratio_ci([r[k] for r in syncs["object_store"]], [r[k] for r in syncs["shm"]])
        for k in ("total_s", "learner_s", "engine_s")}
    return cell


def param_count(size: str) -> int:
    import json as _json

    cfg = _json.loads((model_dir(size) / "config.json").read_text())
    h, L, i, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return v * h + L * per_layer + h  # tied: the embedding once


# ---------------------------------------------------------------- the estimate


NETWORKS_GBIT = (10, 25, 100)
# Typical published figures, NOT measured here (bytes/s of payload, one direction).
NCCL_LINKS = {
    "NVLink 4 (H100 SXM: 900 GB/s total per GPU, 450 GB/s each way; 300 GB/s effective assumed)": 300e9,
    "InfiniBand NDR 400 Gb/s, one NIC per GPU (50 GB/s line rate)": 50e9,
    "InfiniBand HDR 200 Gb/s (25 GB/s line rate)": 25e9,
}


def estimate_7b(cells: list[dict], gbytes: float = 14.0) -> dict:
    """ESTIMATE for a 7B bf16 model (14 GB): each path's measured seconds per GB on the largest
    size here (bf16), scaled linearly (fixed overheads included, so slightly pessimistic); the
    object store with its network leg at 10/25/100 Gb/s line rate; NCCL at typical published link
    bandwidths (not measured here: no GPU)."""
    bf16 = [c for c in cells if c["dtype"] == "bfloat16"]
    if not bf16:
        return {}
    big = max(bf16, key=lambda c: c["bytes"])
    gb = big["bytes"] / 1e9
    out = {"label": "ESTIMATE (extrapolated, not measured)", "model_gbytes": gbytes,
           "from_cell": f"{big['size']} bfloat16 ({gb:.2f} GB)", "paths": {}}
    for path in PATHS:
        p = big["paths"][path]
        per_gb = {k: p[k]["median"] / gb for k in ("learner_s", "engine_s", "get_s", "load_s", "total_s")}
        out["paths"][path] = {"measured_gbytes_per_s": gb / p["total_s"]["median"],
                              "seconds_at_7b": per_gb["total_s"] * gbytes,
                              "learner_s_at_7b": per_gb["learner_s"] * gbytes,
                              "engine_s_at_7b": per_gb["engine_s"] * gbytes}
    # The object store across a real network: the put and the model copy as measured here, plus the
    # payload at line rate; the loopback pull + deserialisation (get_s) either replaced by the wire
    # (low: deserialising costs nothing extra) or kept on top of it (high).
    os_ = big["paths"]["object_store"]
    put_load = (os_["learner_s"]["median"] + os_["load_s"]["median"]) / gb * gbytes
    get = os_["get_s"]["median"] / gb * gbytes
    out["object_store_over_network"] = {
        f"{g} Gb/s": {"wire_s": gbytes * 8 / g, "put_plus_load_s": put_load, "loopback_get_s": get,
                      "total_low_s": put_load + gbytes * 8 / g, "total_high_s": put_load + get + gbytes * 8 / g}
        for g in NETWORKS_GBIT}
    out["nccl_typical_published"] = {name: gbytes * 1e9 / bw for name, bw in NCCL_LINKS.items()}
    return out


# ---------------------------------------------------------------- output


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for sync in PATHS:
        for dtype, style in zip(DTYPES, ("-", "--")):
            pts = sorted((c["bytes"] / 1e9, c["paths"][sync]["total_s"]) for c in cells if c["dtype"] == dtype)
            if not pts:
                continue
            x = [g for g, _ in pts]
            y = [t["median"] for _, t in pts]
            err = [[t["median"] - t["min"] for _, t in pts], [t["max"] - t["median"] for _, t in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", linestyle=style, capsize=3,
                        color="tab:blue" if sync == "shm" else "tab:red", label=f"{sync} {dtype}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GB sent per sync (1e9 bytes)")
    ax.set_ylabel("seconds per sync (median, bars: min-max)")
    ax.set_title("Weight sync, learner -> engine (2 CPU cores, Ray nodes on loopback)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    C.save_figure(fig, path, dpi=120)


def print_cells(cells: list[dict]) -> None:
    rows = []
    for c in cells:
        for path in PATHS:
            p = c["paths"][path]
            rows.append([c["size"], c["dtype"], path, f"{c['bytes'] / 1e9:.3f}",
                         f"{p['learner_s']['median']:.3f}", f"{p['engine_s']['median']:.3f}",
                         f"{p['total_s']['median']:.3f} [{p['total_s']['min']:.3f}-{p['total_s']['max']:.3f}]",
                         f"{p['gbytes_per_s']:.2f}"])
        r = c["ratio_object_store_over_shm"]["total_s"]
        ci = "" if r["ci95"] is None else f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
        rows.append(["", "", "os/shm", "", "", "", f"{r['geomean']:.2f}{ci}", ""])
    C.print_table(["size", "dtype", "path", "GB", "learner s", "engine s", "total s [min-max]", "GB/s"], rows)


def git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=C.BENCH_DIR, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="27M,128M,494M", help=f"comma list of {list(SHAPES)}")
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--order", choices=("auto", "interleaved", "blocks"), default="auto",
                   help="auto: interleaved when both engines fit in the free memory, else blocks")
    p.add_argument("--quick", action="store_true", help="27M, 1 repeat; writes only to --out")
    p.add_argument("--out", type=Path, default=None, help="the JSON (default bench/results/sync_scaling.json); "
                                                          "the PNG goes next to it")
    args = p.parse_args(argv)
    if args.quick:
        if args.sizes == p.get_default("sizes"):
            args.sizes = "27M"
        args.repeats = 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    sizes, dtypes = args.sizes.split(","), args.dtypes.split(",")
    import ray

    from rlcurr.rollout.shared_weights import shm_dir

    for s in sizes:  # built before Ray starts: the driver's copy is gone before the actors load theirs
        model_dir(s)
    largest = max(4 * (param_count(s) + (SHAPES[s]["vocab_size"] or 0) * SHAPES[s]["hidden_size"]) for s in sizes)
    store = max(256 << 20, int(largest * 1.5))  # one sync's object (+ slack) per node; refs freed after each sync
    print(f"sync scaling: sizes {sizes}, dtypes {dtypes}, {args.repeats} repeats, object store {store / 1e9:.1f} GB "
          f"per node", flush=True)
    t0 = time.perf_counter()
    out = args.out or (None if args.quick else C.RESULTS / "sync_scaling.json")
    result = {
        "bench": "sync_scaling", "command": C.command_line(), "git": git_head(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "hardware": C.hardware(),
        "machine": {"ray": ray.__version__, "nodes": "ray.cluster_utils.Cluster: head (node_a) + node_b, "
                                                      "one machine, loopback", "object_store_bytes_per_node": store,
                    "shm_dir": str(shm_dir()),
                    "note": "shared machine: other engineers' processes (tests, benches) ran at the same time; "
                            "see loadavg_before/after per cell (1, 5, 15 min)"},
        "settings": {"sizes": sizes, "dtypes": dtypes, "repeats": args.repeats, "quick": args.quick,
                     "shapes": {s: SHAPES[s] for s in sizes}, "order": "interleaved: both engines alive, per "
                     "repeat shm, object_store, then reversed; blocks (a cell whose interleaved peak would not "
                     "fit the free memory): shm's repeats, its engine and file freed, then object_store's; "
                     "one untimed warm-up sync per path first (see each cell's order)"},
        "complete": False, "cells": [], "skipped": [],
    }
    cluster = start_cluster(store)
    try:
        for size in sizes:
            for dtype in dtypes:
                order = wait_for_memory(size, dtype) if args.order == "auto" else args.order
                if order is None:
                    result["skipped"].append({"size": size, "dtype": dtype, "why": "not enough free memory"})
                    print(f"  {size} {dtype}: skipped, not enough free memory", flush=True)
                    continue
                cell = run_cell(size, dtype, args.repeats, order)
                cell["params"] = param_count(size)
                result["cells"].append(cell)
                p = cell["paths"]
                print(f"  {size} {dtype}: {cell['bytes'] / 1e9:.3f} GB, shm {p['shm']['total_s']['median']:.3f} s, "
                      f"object_store {p['object_store']['total_s']['median']:.3f} s, "
                      f"ratio {cell['ratio_object_store_over_shm']['total_s']['geomean']:.2f}, "
                      f"load {cell['loadavg_before'][0]:.1f}->{cell['loadavg_after'][0]:.1f}, "
                      f"check {'ok' if cell['check']['equal'] else 'FAILED'}", flush=True)
                save(result, out, t0)  # after every cell: a run cut short keeps what it measured
        result["complete"] = True
    finally:
        ray.shutdown()
        cluster.shutdown()
    print()
    print_cells(result["cells"])
    save(result, out, t0)
    if out is not None:
        print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return result


def wait_for_memory(size: str, dtype: str, patience_s: float = 120) -> str | None:
    """The cell's order for the memory free now; waits up to `patience_s` for other processes on
    this shared machine to give memory back before giving up on the cell."""
    import psutil

    deadline = time.monotonic() + patience_s
    while True:
        order = choose_order(size, dtype, psutil.virtual_memory().available)
        if order is not None or time.monotonic() > deadline:
            return order
        time.sleep(10)


def save(result: dict, out: Path | None, t0: float) -> None:
    cells = result["cells"]
    result["wall_s"] = time.perf_counter() - t0
    result["ratios"] = {f"{c['size']} {c['dtype']}": c["ratio_object_store_over_shm"]["total_s"] for c in cells}
    result["estimate_7b_bf16"] = estimate_7b(cells)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        plot(cells, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
