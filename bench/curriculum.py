"""Curriculum efficiency, compute-matched (as SPEED-RL, AdaRFT and DOTS report theirs): how many
answers (and tokens, and seconds) each distribution sampler needs to reach uniform sampling's
final held-out accuracy, on the chain testbed (envs/chain.py, recipes/chain_uniform.yaml).

Arms (same SFT-warmed model, same seeds, same steps; only the sampler differs):
  uniform    every distribution equally often
  ucb        DUMP (docs/curriculum.md, "UCB sampling (DUMP)")
  sec        Self-Evolving Curriculum (docs/curriculum.md, "SEC")
  alp_gmm    ALP-GMM over the rung index (docs/curriculum.md, "ALP-GMM")
  ucb_dapo   DUMP + DAPO dynamic sampling (docs/curriculum.md, "DAPO dynamic sampling"): zero-variance
             groups dropped and refilled

For each seed the target is uniform's final learnable-mean accuracy on that seed (greedy-free:
the mean over `eval.samples` sampled answers per held-out prompt, every rung but `noise`). For
every arm: answers generated (every training answer: refill rounds and hinted re-rolls count) until
the first evaluation at or above the target, the same in tokens and in seconds of training steps;
ratio arm / uniform per seed, then the mean and a 95 % bootstrap interval over seeds. An arm that
never reaches the target on a seed is counted at its whole run (a lower bound on its ratio, so the
interval favours the arm there) and reported as not reached.

Also reported: final accuracy per rung, the share of answers each rung received, and forgetting
(the largest drop, from before RL to the end, of any rung that started solved, >= 0.9).
Precondition, printed first: under uniform sampling every rung that starts in the learnable band
(0.1-0.7) gains >= 0.15 held-out accuracy by the end (mean over seeds). If it fails the ratios say
nothing about curricula and the bench says so.

    python bench/curriculum.py                    # 5 arms x seeds 0-4 (< 60 min on 2 idle cores)
    python bench/curriculum.py --seeds 100,101    # the seeds the settings were chosen on
    python bench/curriculum.py --quick            # smoke: 2 arms, 1 seed, a few steps (< 3 min)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPE = C.RECIPES / "chain_uniform.yaml"
ARMS = {
    "uniform": ["curriculum.sampler=uniform"],
    "ucb": ["curriculum.sampler=ucb"],         # the paper's defaults: c 1.0, tau 0.1, window 300
    "sec": ["curriculum.sampler=sec"],         # the code's defaults: alpha 0.1, tau 1.0
    "alp_gmm": ["curriculum.sampler=alp_gmm"],  # the paper's defaults; task parameter = rung index
    "ucb_dapo": ["curriculum.sampler=ucb", "curriculum.dynamic_sampling={max_rounds: 8}"],
}
BAND = (0.1, 0.7)       # a rung starting in this accuracy range is "in the learnable band"
SOLVED = 0.9
MIN_GAIN = 0.15         # the precondition: uniform raises every in-band rung by this much


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="another recipe with the same sections")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {list(ARMS)} (uniform first)")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE]",
                   help="an extra arm, e.g. ucb_c0.3=curriculum.sampler=ucb,curriculum.ucb.c=0.3")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's trainer.steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    p.add_argument("--tag", default="curriculum", help="results file bench/results/<tag>.json")
    p.add_argument("--quick", action="store_true", help="smoke run: uniform + ucb, 1 seed, 6 steps")
    p.add_argument("--from-results", type=Path, metavar="JSON",
                   help="no training: recompute and print the figures from a results file's saved runs")
    args = p.parse_args(argv)
    if args.quick:
        args.arms, args.seeds, args.steps = "uniform,ucb", "0", 6
        args.set += ["eval.every=3", "env.eval_size=8", "model.warmup.steps=100"]
    return args


def arms_from(args, table: dict[str, list[str]] | None = None, reference: str = "uniform") -> dict[str, list[str]]:
    """`--arms` from `table` (default ARMS) plus each `--arm NAME=OVERRIDE[,OVERRIDE]`; the first
    arm must be `reference`, the arm every ratio is taken against."""
    table = ARMS if table is None else table
    names = [a for a in args.arms.split(",") if a]
    unknown = [a for a in names if a not in table]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {unknown}; --arms takes {list(table)}, --arm adds others")
    arms = {a: table[a] for a in names}
    for spec in args.arm:
        name, _, overrides = spec.partition("=")
        arms[name] = overrides.split(",")
    if next(iter(arms)) != reference or (reference != "uniform" and "uniform" in arms):
        raise SystemExit(f"error: --arms must start with {reference} (every ratio is against it)"
                         + ("" if reference == "uniform" else " and name no 'uniform'"))
    return arms


def overrides(args) -> list[str]:
    return ([f"trainer.steps={args.steps}"] if args.steps else []) + list(args.set)


# ---------------------------------------------------------------- one run


def learnable(run: C.Run) -> list[str]:
    return [k.removeprefix("eval/accuracy/") for k in C.eval_keys(run) if not k.endswith("/noise")]


def spend_curve(run: C.Run) -> list[dict]:
    """Every evaluation with what had been spent on training before it: answers, tokens and
    seconds of training steps (evaluation time excluded), the step -1 baseline first."""
    spent, total = {}, {"answers": 0, "tokens": 0, "seconds": 0.0}
    for m in run.steps:
        total = {"answers": total["answers"] + m["rollout/answers_generated"],
                 "tokens": total["tokens"] + m["rollout/tokens_generated"],
                 "seconds": total["seconds"] + m["time/step"]}
        spent[m["step"]] = total
    zero = {"answers": 0, "tokens": 0, "seconds": 0.0}
    return [{"step": e["step"], **spent.get(e["step"], zero), "accuracy_mean": e["eval/accuracy_mean"],
             "accuracy": {d: e[f"eval/accuracy/{d}"] for d in learnable(run)}} for e in run.evals]


def first_reach(curve: list[dict], target: float, what: str) -> float | None:
    for point in curve:
        if point["accuracy_mean"] >= target - 1e-9:
            return point[what]
    return None


def share_of_answers(run: C.Run) -> dict[str, float]:
    planned: dict[str, int] = {}
    for c in run.curriculum:
        for d, s in c.get("distributions", {}).items():
            planned[d] = planned.get(d, 0) + s.get("planned", 0)
    total = sum(planned.values()) or 1
    return {d: v / total for d, v in planned.items()}


def summarise_run(run: C.Run) -> dict:
    curve = spend_curve(run)
    start, final = curve[0]["accuracy"], curve[-1]["accuracy"]
    solved = [d for d, a in start.items() if a >= SOLVED]
    return {"seed": run.info["seed"], "curve": curve, "start_accuracy": start, "final_accuracy": final,
            "final_accuracy_mean": curve[-1]["accuracy_mean"], "share_of_answers": share_of_answers(run),
            "forgetting": max([start[d] - final[d] for d in solved], default=0.0),
            "spent": {k: curve[-1][k] for k in ("answers", "tokens", "seconds")}, "wall_s": run.wall_s}


# ---------------------------------------------------------------- across runs


def precondition(uniform: list[dict]) -> dict:
    """Rungs by their accuracy before RL (mean over seeds); uniform's gain on each in-band rung."""
    rungs = list(uniform[0]["start_accuracy"])
    start = {d: statistics.fmean(r["start_accuracy"][d] for r in uniform) for d in rungs}
    gain = {d: statistics.fmean(r["final_accuracy"][d] - r["start_accuracy"][d] for r in uniform) for d in rungs}
    band = [d for d in rungs if BAND[0] <= start[d] <= BAND[1]]
    return {"start": start, "uniform_gain": gain, "solved": [d for d in rungs if start[d] >= SOLVED],
            "in_band": band, "out_of_reach": [d for d in rungs if start[d] < BAND[0]],
            "passed": bool(band) and all(gain[d] >= MIN_GAIN for d in band), "min_gain": MIN_GAIN}


def to_target(per_arm: dict[str, list[dict]], what: str) -> dict[str, dict]:
    """Per arm and seed: `what` spent to reach uniform's final accuracy on that seed, and the
    ratio to uniform's own; mean and 95 % bootstrap interval of the ratios."""
    out = {}
    for name, runs in per_arm.items():
        per_seed = []
        for r, u in zip(runs, per_arm["uniform"]):
            target = u["final_accuracy_mean"]
            mine, theirs = first_reach(r["curve"], target, what), first_reach(u["curve"], target, what)
            reached = mine is not None
            value = mine if reached else r["spent"][what]
            per_seed.append({"seed": r["seed"], "target": target, "reached": reached, what: value,
                             "ratio": value / theirs if theirs else None})
        ratios = [s["ratio"] for s in per_seed if s["ratio"] is not None]
        out[name] = {"per_seed": per_seed, "reached": sum(s["reached"] for s in per_seed),
                     "ratio_mean": statistics.fmean(ratios) if ratios else None,
                     "ratio_ci95": C.bootstrap_ci(ratios)}
    return out


def gap_at_equal_answers(per_arm: dict[str, list[dict]]) -> dict[str, dict]:
    """A second, less quantised reading of the same curves: per seed, the arm's learnable mean read
    off its curve (linear between evaluations) at each of uniform's evaluations after step 0
    that the arm's run covers, minus uniform's value there, averaged; then mean and 95 % interval
    over seeds. > 0 = ahead of uniform at equal answers."""
    import numpy as np

    out = {}
    for name, runs in per_arm.items():
        gaps = []
        for r, u in zip(runs, per_arm["uniform"]):
            xs, ys = [p["answers"] for p in r["curve"]], [p["accuracy_mean"] for p in r["curve"]]
            points = [p for p in u["curve"][1:] if p["answers"] <= xs[-1]]
            gaps.append(statistics.fmean(float(np.interp(p["answers"], xs, ys)) - p["accuracy_mean"] for p in points))
        out[name] = C.with_ci(gaps)
    return out


def summarise_arms(per_arm: dict[str, list[dict]]) -> dict:
    rungs = list(per_arm["uniform"][0]["final_accuracy"])
    out = {}
    for name, runs in per_arm.items():
        share = {d: statistics.fmean(r["share_of_answers"].get(d, 0.0) for r in runs) for d in runs[0]["share_of_answers"]}
        out[name] = {"final_accuracy": {d: C.mean_std([r["final_accuracy"][d] for r in runs]) for d in rungs},
                     "final_accuracy_mean": C.mean_std([r["final_accuracy_mean"] for r in runs]),
                     "forgetting": C.mean_std([r["forgetting"] for r in runs]),
                     "answers_total": C.mean_std([r["spent"]["answers"] for r in runs]),
                     "share_of_answers": share}
    return out


def print_report(pre: dict | None, summary: dict, targets: dict[str, dict], gaps: dict[str, dict]) -> None:
    """The bench's tables; `pre` None: the caller printed its own precondition."""
    if pre is not None:
        print("\nprecondition (uniform): rungs before RL " + ", ".join(f"{d} {a:.2f}" for d, a in pre["start"].items()))
        print(f"  solved {pre['solved']}, in band {pre['in_band']}, out of reach {pre['out_of_reach']}")
        print("  uniform gain per in-band rung: " + ", ".join(f"{d} {pre['uniform_gain'][d]:+.2f}" for d in pre["in_band"])
              + f" -> {'PASSED' if pre['passed'] else 'FAILED'} (each >= {pre['min_gain']})")
    rungs = list(next(iter(summary.values()))["final_accuracy"])
    header = ["arm", "final mean", "forgetting", *rungs, "share of answers " + "/".join(summary["uniform"]["share_of_answers"])]
    rows = [[name, C.fmt(*s["final_accuracy_mean"], 3), C.fmt(*s["forgetting"], 2),
             *[f"{s['final_accuracy'][d][0]:.2f}" for d in rungs],
             "/".join(f"{v:.2f}" for v in s["share_of_answers"].values())] for name, s in summary.items()]
    print()
    C.print_table(header, rows)
    print("\nratios to reach uniform's final accuracy (arm / uniform, same seed; < 1 = cheaper than uniform)")
    for what, t in targets.items():
        for name, r in t.items():
            if name == "uniform":
                continue
            lo, hi = r["ratio_ci95"]
            per = ", ".join(f"{s['ratio']:.2f}{'' if s['reached'] else '+'}" for s in r["per_seed"] if s["ratio"])
            print(f"  {what:>8} {name}/uniform = {C.fmt(r['ratio_mean'], None, 2)} [95% CI {C.fmt(lo, None, 2)}, "
                  f"{C.fmt(hi, None, 2)}], reached {r['reached']}/{len(r['per_seed'])}  per seed: {per}")
    print("  (+ = never reached; counted at its whole run, a lower bound)")
    print("\nlearnable-mean gap to uniform at equal answers, averaged over uniform's evaluations (> 0 = ahead)")
    for name, g in gaps.items():
        if name != "uniform":
            lo, hi = g["ci95"]
            print(f"  {name}: {g['mean']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}]  per seed: "
                  + ", ".join(f"{x:+.3f}" for x in g["per_seed"]))


def plot(per_arm: dict[str, list[dict]], path: Path) -> None:
    """Learnable-mean accuracy vs answers generated per arm (mean over seeds, band = min..max),
    and uniform's vs ucb's per-rung curves on the first seed (the climb)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, runs in per_arm.items():
        grid = np.linspace(0, min(r["curve"][-1]["answers"] for r in runs), 60)
        ys = np.array([np.interp(grid, [p["answers"] for p in r["curve"]], [p["accuracy_mean"] for p in r["curve"]])
                       for r in runs])
        line, = ax.plot(grid, ys.mean(0), label=name)
        ax.fill_between(grid, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel="answers generated for training", ylabel="held-out accuracy, learnable mean",
           title=f"samplers vs uniform ({len(next(iter(per_arm.values())))} seeds; band = min..max)")
    ax.legend()
    for name, style in (("uniform", "--"), ("ucb", "-")):
        if name not in per_arm:
            continue
        curve = per_arm[name][0]["curve"]
        for i, d in enumerate(curve[0]["accuracy"]):
            ax2.plot([p["step"] for p in curve], [p["accuracy"][d] for p in curve], style, color=f"C{i}",
                     label=d if name == "uniform" else None)
    ax2.set(xlabel="step", ylabel="held-out accuracy", title="per rung, first seed: uniform (--) vs ucb (-)")
    ax2.legend(fontsize=7, ncol=2)
    C.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_results:
        return report_again(args.from_results)
    arms = arms_from(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, baseline = C.run_bench(args.tag, args.recipe, arms, seeds, overrides(args))
    per_arm = {name: [summarise_run(r) for r in rs] for name, rs in runs.items()}
    figures = analyse(per_arm, plot_to=None if args.quick else C.RESULTS / f"{args.tag}.png")
    return C.save_bench(args.tag, args, arms, overrides(args), baseline=baseline, runs=per_arm, **figures)


def analyse(per_arm: dict[str, list[dict]], plot_to: Path | None) -> dict:
    """Every figure of the bench from the per-run summaries, printed (and plotted)."""
    figures = {"precondition": precondition(per_arm["uniform"]), "summary": summarise_arms(per_arm),
               "to_target": {what: to_target(per_arm, what) for what in ("answers", "tokens", "seconds")},
               "gap_at_equal_answers": gap_at_equal_answers(per_arm)}
    print_report(figures["precondition"], figures["summary"], figures["to_target"], figures["gap_at_equal_answers"])
    if not figures["precondition"]["passed"]:
        print("\nPRECONDITION FAILED: uniform does not lift every in-band rung; the ratios above do not decide "
              "whether a curriculum saves compute on this testbed.")
    if plot_to is not None:
        plot(per_arm, plot_to)
    return figures


def report_again(path: Path) -> dict:
    """Recompute and print every figure from a results file's saved runs; rewrite the file with them."""
    import json

    result = json.loads(path.read_text())
    result.update(analyse(result["runs"], plot_to=path.with_suffix(".png")))
    result["figures_recomputed"] = {"command": C.command_line(), "git": C.git_rev()}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"rewrote {path}")
    return result


if __name__ == "__main__":
    main()
