"""Rule rewards in the driver vs in Ray reward workers (`reward.workers`), on this machine's cores.

A reward that spends CPU in pure Python (`spin`: a loop per answer, calibrated here so that half
of a step's batch costs about 0.2 s) scores a step-sized batch (the quickstart's: 16 prompts x 16
answers = 256) through `RewardRunner`, three arms:

  driver     reward.workers=0: the batch in one thread of the driver (today's default)
  workers1   reward.workers=1: the batch in one Ray actor (the cost of the round trip)
  workers2   reward.workers=2: two actors, a contiguous half each, at once

Each repeat runs the arms in turn (a fresh pool per arm, started and warmed by one call that is
not timed), timing `steps` score calls each; a repeat's speedup is driver seconds / workers
seconds. Reported: seconds per step per arm and the speedups, mean and 95 % bootstrap interval
over repeats. The machine may be shared: the load average before and after, and the processes
that were busy (other than this one and its Ray workers) at the start, are in the JSON.

    nice -n 5 python bench/reward_workers.py           # 7 repeats x 5 steps, writes bench/results/reward_workers.json
    nice -n 5 python bench/reward_workers.py --quick   # 2 repeats x 2 steps, writes nothing
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, print_table, with_ci, write_result  # noqa: E402

BATCH = 256  # quickstart: prompts_per_step 16 x rollout.n 16
SHARE_SECONDS = 0.2  # target cost of half a batch (one of two workers' share)
ARMS = {"driver": 0, "workers1": 1, "workers2": 2}


def spin(prompts, completions, loops: int = 1000, **kwargs):
    """A CPU-bound rule reward: `loops` iterations of pure Python per answer, then its length."""
    out = []
    for c in completions:
        acc = 0
        for i in range(loops):
            acc = (acc * 31 + i) % 1_000_003
        out.append(float(len(c)) + acc * 0.0)
    return out


def calibrate() -> int:
    """Loops per answer so that BATCH / 2 answers take about SHARE_SECONDS here."""
    loops = 20_000
    t0 = time.perf_counter()
    spin([], ["x"] * 4, loops=loops)
    per_loop = (time.perf_counter() - t0) / (4 * loops)
    return max(1000, int(SHARE_SECONDS / (BATCH / 2) / per_loop))


def busy_processes(sample_s: float = 1.0) -> list[dict]:
    """Processes using >= 10 % of a core over `sample_s`, other than this one and its children."""
    import psutil

    mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["name"]) if p.pid not in mine]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(sample_s)
    out = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 10:
            out.append({"pid": p.pid, "name": p.info["name"], "cpu_percent": round(pct)})
    return sorted(out, key=lambda d: -d["cpu_percent"])


def time_arm(workers: int, loops: int, steps: int, prompts, completions, cols) -> tuple[float, float]:
    """(seconds per score call, pool start seconds) for one arm; its pool is closed after."""
    from rlcurr.config import RewardConfig, RewardSpec
    from rlcurr.rewards.runner import RewardRunner

    spec = RewardSpec(name=f"{Path(__file__).resolve()}:spin", params={"loops": loops})
    runner = RewardRunner([spec], RewardConfig(workers=workers, worker_cpus=1, timeout_s=600), log=lambda *_: None)
    try:
        t0 = time.perf_counter()
        runner.start()
        started = time.perf_counter() - t0
        runner.score(prompts, completions, cols)  # warm: imports, first call
        t0 = time.perf_counter()
        for _ in range(steps):
            scores = runner.score(prompts, completions, cols)
        seconds = (time.perf_counter() - t0) / steps
        assert scores.totals == [float(len(c)) for c in completions]
        return seconds, started
    finally:
        runner.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 repeats x 2 steps, nothing written")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed score calls per arm and repeat")
    args = ap.parse_args()
    repeats, steps = (2, 2) if args.quick else (args.repeats, args.steps)
    import ray

    load_before, busy = os.getloadavg(), busy_processes()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    loops = calibrate()
    completions = [str(i % 97) for i in range(BATCH)]
    prompts, cols = ["q"] * BATCH, {"answer": ["1"] * BATCH}
    seconds: dict[str, list[float]] = {a: [] for a in ARMS}
    starts: dict[str, list[float]] = {a: [] for a in ARMS if ARMS[a]}
    for r in range(repeats):
        for arm, workers in ARMS.items():
            s, started = time_arm(workers, loops, steps, prompts, completions, cols)
            seconds[arm].append(s)
            if workers:
                starts[arm].append(started)
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{a} {seconds[a][-1]:.3f} s" for a in ARMS), flush=True)
    load_after = os.getloadavg()
    ray.shutdown()

    speedup = {a: [d / w for d, w in zip(seconds["driver"], seconds[a])] for a in ARMS if a != "driver"}
    rows = [[a, f"{statistics.fmean(seconds[a]):.3f}", "1.00" if a == "driver" else
             f"{statistics.fmean(speedup[a]):.2f} [{with_ci(speedup[a])['ci95'][0]:.2f}, "
             f"{with_ci(speedup[a])['ci95'][1]:.2f}]",
             f"{statistics.fmean(starts[a]):.2f}" if a in starts else "-"] for a in ARMS]
    print_table(["arm", "s / step", "speedup vs driver [95 % CI]", "pool start s"], rows)
    print(f"load average before {load_before}, after {load_after}; busy processes at start: {len(busy)}")
    if args.quick:
        return
    write_result("reward_workers", {
        "setting": {"batch": BATCH, "loops_per_answer": loops, "target_share_seconds": SHARE_SECONDS,
                    "repeats": repeats, "steps_per_repeat": steps, "worker_cpus": 1,
                    "reward": "spin: pure-Python loop per answer (bench/reward_workers.py)"},
        "seconds_per_step": {a: with_ci(seconds[a]) for a in ARMS},
        "speedup_vs_driver": {a: with_ci(v) for a, v in speedup.items()},
        "pool_start_seconds": {a: with_ci(v) for a, v in starts.items()},
        "machine_load": {"loadavg_before": load_before, "loadavg_after": load_after,
                         "busy_processes_at_start": busy, "num_busy_processes_at_start": len(busy),
                         "nice": os.nice(0)},
    }, command_line())


if __name__ == "__main__":
    main()
