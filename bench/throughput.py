"""Throughput of one run: vLLM vs transformers rollouts, and where a training step's time goes.

Same model (a random-init tiny Qwen2 of tens of millions of parameters, built locally, no SFT
warm-up: its answers run to max_tokens, so generation is a real share of the step), same batch
(`--prompts` 2-digit additions x `--n` answers, `--max-tokens`, temperature 1), for each engine
in turn (vLLM first, then HF), each through the trainer's own RolloutPool and Ray actors:

1. rollout tokens/s: `--gen-reps` timed `generate` calls of the batch after one untimed call,
   tokens counted from the answers, seconds = the driver's wall time of the call (Ray included);
   the engine's own seconds (measured inside the worker) are printed too;
2. `--steps` timed trainer steps after `--warmup-steps` untimed ones (`Trainer.step`, as in a
   run; no evaluation): the phases plan, rollout, reward, guide, learn, sync and `other` (step
   minus the phases: advantages, filters, records), weight-sync time (= the sync phase:
   learner weights -> object store -> the engine's reload), and the share of step time outside
   generation (the engine's own seconds) and learner compute (the learn phase);
3. weight sync two ways on the same actors, `--sync-reps` times each, alternating: direct (the
   trainer's path: workers resolve the learner actor's object reference) and through the driver
   (the older path: weights fetched into the driver and `ray.put` again).

Figures and the vLLM/HF ratios are printed last and written to bench/results/throughput.json.
On 2 shared CPU cores the figures move with the machine's load (the 1-min load average is printed:
torch's 2 OpenMP threads per actor slow down ~15x when another process takes a core); compare
ratios from one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

PHASES = ("plan", "rollout", "reward", "guide", "learn", "sync")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engines", default="vllm,hf", help="comma list of vllm, hf")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--prompts", type=int, default=4, help="prompts per batch")
    p.add_argument("--n", type=int, default=8, help="answers per prompt")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--gen-reps", type=int, default=2, help="timed generate calls per engine")
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="timed trainer steps per engine")
    p.add_argument("--sync-reps", type=int, default=5, help="timed weight syncs per path (direct, driver copy)")
    return p.parse_args(argv)


def make_config(args, engine: str):
    overrides = [
        f"model.tiny.hidden_size={args.hidden}", f"model.tiny.num_layers={args.layers}",
        f"model.tiny.num_heads={args.heads}", f"model.tiny.num_kv_heads={args.heads}",
        f"model.tiny.intermediate_size={args.intermediate}", "model.warmup.steps=0",
        "env.distributions=[add2]", f"rollout.engine={engine}", f"rollout.n={args.n}",
        f"rollout.max_tokens={args.max_tokens}", "rollout.temperature=1.0", "rollout.gpu_memory_utilization=0.1",
        f"trainer.prompts_per_step={args.prompts}", "trainer.steps=100000", "eval.every=0"]
    return C.build_config(C.RECIPES / "quickstart.yaml", overrides, run_dir=C.RUNS / "throughput" / engine)


def measure_engine(args, engine: str) -> dict:
    """Start a trainer on `engine`; time its pool's generate, then a few steps."""
    from rlcurr.trainer import Trainer
    from rlcurr.types import GenRequest

    cfg = make_config(args, engine)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, log=lambda s: None)
    first = trainer.start()
    print(f"[{engine}] model {trainer.model_dir.name}, actors up in {time.perf_counter() - t0:.1f} s", flush=True)
    pool = trainer.rollout_pool
    try:
        prompts = trainer.env.train_prompts("add2")[: args.prompts]
        requests = [GenRequest(trainer.encode(p)[0], args.n, args.max_tokens, 1.0, seed=1000 + i)
                    for i, p in enumerate(prompts)]
        pool.generate(requests)  # untimed: first-call costs (allocations, vLLM warm-up)
        gen = []
        for _ in range(args.gen_reps):
            t = time.perf_counter()
            out = pool.generate(requests)
            wall = time.perf_counter() - t
            gen.append((sum(len(c.token_ids) for group in out for c in group), wall, pool.engine_seconds))
        tokens, wall, engine_s = (sum(x[i] for x in gen) for i in range(3))
        print(f"[{engine}] generate: {tokens} tokens in {wall:.2f} s ({tokens / wall:.0f} tokens/s; "
              f"engine alone {tokens / engine_s:.0f} tokens/s)", flush=True)

        engine_per_step = []
        generate = pool.generate

        def counted(reqs):  # the engine's own seconds, summed over the step's generate calls
            result = generate(reqs)
            engine_per_step[-1] += pool.engine_seconds
            return result

        pool.generate = counted
        steps = []
        for t in range(first, first + args.warmup_steps + args.steps):
            engine_per_step.append(0.0)
            m = trainer.step(t)
            if t >= first + args.warmup_steps:
                steps.append({**m, "engine_s": engine_per_step[-1]})
            print(f"[{engine}] step {t}: {m['time/step']:.2f} s (rollout {m['time/rollout']:.2f}, "
                  f"learn {m['time/learn']:.2f}, sync {m['time/sync']:.3f})", flush=True)
        syncs = time_sync_paths(trainer, args.sync_reps)
        print(f"[{engine}] weight sync, median of {args.sync_reps}: direct {syncs['sync_direct_s']:.3f} s, "
              f"through the driver {syncs['sync_driver_s']:.3f} s", flush=True)
    finally:
        C.release(trainer)
    return {"gen_tokens": tokens, "gen_wall_s": wall, "gen_engine_s": engine_s,
            "tokens_per_s": tokens / wall, "engine_tokens_per_s": tokens / engine_s, **summarise(steps), **syncs}


def time_sync_paths(trainer, reps: int) -> dict:
    """Seconds of one weight sync, median over `reps`, alternating the two paths on the same actors:
    direct (`Trainer.sync`: the workers resolve the learner actor's object reference) and through
    the driver (the older path: `ray.get` of the weights into the driver, `ray.put` again)."""
    import ray

    def through_driver() -> None:
        trainer.rollout_pool.load_weights(ray.put(trainer.learner.named_weights()))

    seconds: dict[str, list[float]] = {"direct": [], "driver": []}
    for _ in range(reps):
        for name, sync in (("driver", through_driver), ("direct", trainer.sync)):
            t = time.perf_counter()
            sync()
            seconds[name].append(time.perf_counter() - t)
    return {f"sync_{k}_s": statistics.median(v) for k, v in seconds.items()}


def summarise(steps: list[dict]) -> dict:
    mean = lambda key: statistics.fmean(s.get(key, 0.0) for s in steps)  # noqa: E731
    out = {f"time/{p}": mean(f"time/{p}") for p in PHASES}
    out["time/step"] = mean("time/step")
    out["time/other"] = out["time/step"] - sum(out[f"time/{p}"] for p in PHASES)
    out["time/generate_engine"] = mean("engine_s")
    out["step_tokens"] = mean("tokens")
    # outside generation (the engine's own seconds) and learner compute (the learn phase)
    out["outside_share"] = 1 - (out["time/generate_engine"] + out["time/learn"]) / out["time/step"]
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    engines = [e for e in args.engines.split(",") if e]
    load_before = os.getloadavg()[0]
    results = {e: measure_engine(args, e) for e in engines}
    load = {"before": load_before, "after": os.getloadavg()[0]}  # other processes on the cores skew every figure
    ray.shutdown()

    ratios = {f"sync direct/driver {e}": results[e]["sync_direct_s"] / results[e]["sync_driver_s"] for e in engines}
    if {"vllm", "hf"} <= set(results):
        v, h = results["vllm"], results["hf"]
        ratios |= {"tokens_per_s vllm/hf": v["tokens_per_s"] / h["tokens_per_s"],
                  "engine_tokens_per_s vllm/hf": v["engine_tokens_per_s"] / h["engine_tokens_per_s"],
                  "step_time vllm/hf": v["time/step"] / h["time/step"]}
    C.write_result("throughput", {"args": vars(args), "load_average_1min": load, "results": results,
                                 "ratios": ratios},
                   " ".join(["python bench/throughput.py", *(argv if argv is not None else sys.argv[1:])]))

    params = args.layers * (4 * args.hidden ** 2 + 3 * args.hidden * args.intermediate)
    print(f"\n== throughput: ~{params / 1e6:.1f}M-parameter model (without embeddings), "
          f"{args.prompts} prompts x {args.n} answers, max_tokens {args.max_tokens}, "
          f"{args.steps} timed steps per engine; 1-min load average {load['before']:.1f} before, "
          f"{load['after']:.1f} after, on {os.cpu_count()} cores ==")
    rows = [["rollout tokens/s (driver wall)"] + [f"{results[e]['tokens_per_s']:.0f}" for e in engines],
            ["rollout tokens/s (engine alone)"] + [f"{results[e]['engine_tokens_per_s']:.0f}" for e in engines]]
    for key in [f"time/{p}" for p in PHASES] + ["time/other", "time/step", "time/generate_engine"]:
        rows.append([f"{key} s"] + [f"{results[e][key]:.3f}" for e in engines])
    rows.append(["weight sync s (time/sync)"] + [f"{results[e]['time/sync']:.3f}" for e in engines])
    rows.append(["sync direct s (median, same actors)"] + [f"{results[e]['sync_direct_s']:.3f}" for e in engines])
    rows.append(["sync through driver s (older path)"] + [f"{results[e]['sync_driver_s']:.3f}" for e in engines])
    rows.append(["share outside generation + learn"] + [f"{results[e]['outside_share']:.3f}" for e in engines])
    C.print_table(["figure"] + engines, rows)
    for k, r in ratios.items():
        print(f"ratio {k}: {r:.2f}")


if __name__ == "__main__":
    main()
