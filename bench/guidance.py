"""Adaptive guidance (docs/curriculum.md, "Guide-GRPO") on the chain testbed, at equal answers generated.

Training runs on one rung, `--dist` (default len10: the shortest rung that starts out of reach,
held-out accuracy < 0.1 before RL -- the bench prints it), with recipes/chain_uniform.yaml's
SFT-warmed model (a fifth of its warm-up examples showed their hint, the first half of the terse
trace, so the model knows what a hint is).

Arms (same model, same seeds, same steps):
  no_hints  guidance on with max_rerolls=0: all-wrong groups are counted, never re-rolled
  hints     every all-wrong group is re-rolled with its hint; a re-roll with mixed outcomes
            replaces the group (off-policy, shaped ratio)

Hinted re-rolls generate n answers each, so the hints arm spends more per step. The comparison is
at equal answers: per seed, A = the smaller of the two arms' total training answers, and each
arm's held-out accuracy (on `--dist` and the learnable mean over all rungs) is read off its
evaluation curve at A (linear between evaluations). Differences hints - no_hints per seed, then
the mean and a 95 % bootstrap interval. Also reported: the final values and the re-roll counters.

    python bench/guidance.py            # 2 arms x seeds 0-4
    python bench/guidance.py --quick    # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench.curriculum import spend_curve  # noqa: E402

RECIPE = C.RECIPES / "chain_uniform.yaml"
ARMS = {"no_hints": ["curriculum.guidance={max_rerolls: 0}"], "hints": ["curriculum.guidance={}"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="another recipe with the same sections")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--dist", default="len10", help="the out-of-reach rung trained on")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = "0", 4
        args.set += ["eval.every=2", "env.eval_size=8", "model.warmup.steps=100"]
    return args


def overrides(args) -> list[str]:
    return [f"trainer.steps={args.steps}", "eval.every=10", "curriculum.sampler=weights",
            f"curriculum.weights={{{args.dist}: 1.0}}", *args.set]


def at_answers(curve: list[dict], answers: float, key) -> float:
    """The evaluated value at `answers` training answers, linear between evaluations."""
    return float(np.interp(answers, [p["answers"] for p in curve], [key(p) for p in curve]))


def summarise_run(run: C.Run, dist: str) -> dict:
    total = run.curriculum[-1]["hints"]["total"][dist]  # cumulative counters since step 0
    curve = spend_curve(run)
    return {"seed": run.info["seed"], "curve": curve, "answers_total": curve[-1]["answers"],
            "start_accuracy": curve[0]["accuracy"][dist], "final_accuracy": curve[-1]["accuracy"][dist],
            "final_accuracy_mean": curve[-1]["accuracy_mean"],
            "groups": total["groups"], "all_wrong": total["failed"], "rerolled": total["rerolled"], "kept": total["kept"],
            "wall_s": run.wall_s}


def equal_answers(h: dict, n: dict, dist: str) -> dict:
    budget = min(h["answers_total"], n["answers_total"])
    out = {"answers": budget}
    for name, run in (("hints", h), ("no_hints", n)):
        out[f"{name} {dist}"] = at_answers(run["curve"], budget, lambda p: p["accuracy"][dist])
        out[f"{name} learnable mean"] = at_answers(run["curve"], budget, lambda p: p["accuracy_mean"])
    return out


def ci_text(v: dict, digits: int = 3) -> str:
    lo, hi = v["ci95"]
    return f"{v['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, baseline = C.run_bench("guidance", args.recipe, ARMS, seeds, overrides(args))
    per_arm = {name: [summarise_run(r, args.dist) for r in rs] for name, rs in runs.items()}
    start = per_arm["no_hints"][0]["start_accuracy"]
    print(f"\n{args.dist} before RL: {start:.3f} ({'out of reach' if start < 0.1 else 'NOT out of reach (>= 0.1)'})")
    rows, summary = [], {}
    for name, rs in per_arm.items():
        summary[name] = {k: C.mean_std([r[k] for r in rs]) for k in ("final_accuracy", "final_accuracy_mean", "answers_total")}
        summary[name].update({k: sum(r[k] for r in rs) for k in ("groups", "all_wrong", "rerolled", "kept")})
        s = summary[name]
        rows.append([name, C.fmt(*s["final_accuracy"], 3), C.fmt(*s["final_accuracy_mean"], 3), C.fmt(*s["answers_total"], 0),
                     f"{s['groups']}/{s['all_wrong']}/{s['rerolled']}/{s['kept']}"])
    C.print_table(["arm", f"final {args.dist}", "final learnable mean", "answers", "groups/all-wrong/rerolled/kept"], rows)
    matched = [equal_answers(h, n, args.dist) for h, n in zip(per_arm["hints"], per_arm["no_hints"])]
    diffs = {f"{what} hints-no_hints at equal answers": C.with_ci([m[f"hints {what}"] - m[f"no_hints {what}"] for m in matched])
             for what in (args.dist, "learnable mean")}
    diffs["answers hints/no_hints (whole run)"] = C.with_ci(
        [h["answers_total"] / n["answers_total"] for h, n in zip(per_arm["hints"], per_arm["no_hints"])])
    print("\nper seed, then mean [95% bootstrap CI]")
    for k, v in diffs.items():
        print(f"  {k} = {ci_text(v)}   per seed: {', '.join(f'{x:+.3f}' for x in v['per_seed'])}")
    return C.save_bench("guidance", args, ARMS, overrides(args), baseline=baseline, summary=summary, runs=per_arm,
                        equal_answers=matched, ratios=diffs, start_accuracy=start)


if __name__ == "__main__":
    main()
