"""Bounded-staleness asynchronous training: trainer.max_staleness k = 0, 1, 2 on the
quickstart (recipes/quickstart.yaml, 1-digit addition) and on the chain proving ground
(recipes/chain_uniform.yaml), same SFT-warmed model per recipe, same seeds.

Arms (only trainer.max_staleness differs):
  k0  synchronous: collect batch t, then learn on it (every core for each phase in turn)
  k1  the rollout workers generate batch t+1 while the learner trains on batch t
  k2  batch t+2 while the learner trains on t (answers up to 2 policy versions old)
At k >= 1 on CPU the trainer splits the cores (half to the learner, half to the rollout workers;
trainer.cpu_threads) and the learner's objective is the decoupled one with algo.tis_cap.

Measured per run: s/step (mean `time/step` over all steps; evaluation is not in it), the mean
`time/outside_gen_learn_frac` (share of a step in which neither generation nor the learner was
busy), `async/lag` (max and mean), held-out accuracy (`eval/accuracy_mean`, the learnable mean)
before RL (step -1), at every evaluation and at the last step, and the gain (last - before RL).
Per recipe and arm, per seed against k0 on the same seed, then the mean and a 95 % bootstrap
interval over seeds: s/step ratio arm / k0, gain difference arm - k0. The seed spread is
max - min of k0's gains over seeds; the issue's bar: at k = 1 learning per step must not fall by
more than that (mean gain difference >= -spread). k = 2 is reported the same way.
Plot (bench/results/async.png): per recipe, accuracy vs step and vs cumulative training time
(sum of time/step up to the evaluation), mean over seeds per arm, thin lines per seed.

Budget (2 idle cores, < 1 h): the quickstart runs 150 steps here instead of the recipe's 250
(`--quickstart-steps`; eval every 25, evaluations at steps 24 ... 149; the quickstart's curve,
docs/results.md, "Quickstart", is near its plateau by step 149), chain_uniform its 30 steps.
9 runs per recipe, warm models cached.
Run it on otherwise idle cores: k0 runs each phase on 2 torch threads, k >= 1 one thread per
actor, and under contention the 2-thread phases slow down far more (a smoke at load ~12 measured
k0's learner at 2-6 s/step, the async arms' at 0.2-0.5), so a busy machine fakes a speed-up.

    python bench/async.py                              # both recipes, k0/k1/k2 x seeds 0,1,2
    python bench/async.py --recipes chain --seeds 0,1  # a subset
    python bench/async.py --quick                      # smoke: 4 steps, 1 seed, nothing written
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPES = {"quickstart": C.RECIPES / "quickstart.yaml", "chain": C.RECIPES / "chain_uniform.yaml"}
ARMS = {f"k{k}": [f"trainer.max_staleness={k}"] for k in (0, 1, 2)}
REFERENCE = "k0"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {list(RECIPES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--quickstart-steps", type=int, default=150, help="trainer.steps on the quickstart (recipe: 250)")
    p.add_argument("--chain-steps", type=int, default=None, help="trainer.steps on chain_uniform (default: the recipe's 30)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 steps per recipe, nothing written")
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; --recipes takes {list(RECIPES)}")
    if args.quick:
        args.seeds, args.quickstart_steps, args.chain_steps = "0", 4, 4
        args.set += ["eval.every=2"]
    return args


def overrides(args, recipe: str) -> list[str]:
    steps = args.quickstart_steps if recipe == "quickstart" else args.chain_steps
    out = [f"trainer.steps={steps}"] if steps else []
    if args.quick:  # smaller batches and evaluations; env and warm-up as in the recipe, so that the
        # SFT-warmed model is the cached one the full bench uses (its cache key includes both)
        out += (["trainer.prompts_per_step=8"] if recipe == "quickstart" else
                ["trainer.prompts_per_step=4", "eval.samples=1"])
    return out + list(args.set)


# ---------------------------------------------------------------- one run


def eval_curve(run: C.Run) -> list[dict]:
    """Every evaluation (step -1 first) with the training time spent before it: the sum of
    `time/step` of steps 0..step (evaluation time is never in time/step)."""
    spent, total = {}, 0.0
    for m in run.steps:
        total += m["time/step"]
        spent[m["step"]] = total
    return [{"step": e["step"], "seconds": spent.get(e["step"], 0.0), "accuracy_mean": e["eval/accuracy_mean"]}
            for e in run.evals]


def summarise_run(run: C.Run) -> dict:
    steps, curve = run.steps, eval_curve(run)
    lags = [m.get("async/lag", 0) for m in steps]
    return {
        "seed": run.info["seed"],
        "steps": len(steps),
        "s_per_step": statistics.fmean(m["time/step"] for m in steps),
        "rollout_s_per_step": statistics.fmean(m.get("time/rollout", 0.0) for m in steps),
        "learner_s_per_step": statistics.fmean(m.get("time/learner", 0.0) for m in steps),
        "outside_gen_learn_frac": statistics.fmean(m["time/outside_gen_learn_frac"] for m in steps),
        "lag_max": max(lags),
        "lag_mean": statistics.fmean(lags),
        "curriculum_lag_max": max((c.get("lag", 0) for c in run.curriculum), default=None),
        "before_rl": curve[0]["accuracy_mean"],
        "final_step": curve[-1]["step"],
        "final_accuracy_mean": curve[-1]["accuracy_mean"],
        "gain": curve[-1]["accuracy_mean"] - curve[0]["accuracy_mean"],
        "final_accuracy": C.final_accuracy(run),
        "curve": curve,
        "train_seconds": curve[-1]["seconds"],
        "wall_s": run.wall_s,
    }


# ---------------------------------------------------------------- across runs


def analyse_recipe(per_arm: dict[str, list[dict]]) -> dict:
    """Per arm: means over seeds, and per-seed comparisons with k0 on the same seed."""
    ref = per_arm[REFERENCE]
    k0_gains = [r["gain"] for r in ref]
    spread = max(k0_gains) - min(k0_gains)
    out = {"seed_spread_k0_gain": spread, "arms": {}}
    for name, runs in per_arm.items():
        pairs = list(zip(runs, ref))
        assert all(a["seed"] == b["seed"] for a, b in pairs)
        gain_diff = C.with_ci([a["gain"] - b["gain"] for a, b in pairs])
        out["arms"][name] = {
            "s_per_step": C.with_ci([r["s_per_step"] for r in runs]),
            "s_per_step_ratio_vs_k0": C.with_ci([a["s_per_step"] / b["s_per_step"] for a, b in pairs]),
            "outside_gen_learn_frac": C.with_ci([r["outside_gen_learn_frac"] for r in runs]),
            "rollout_s_per_step": statistics.fmean(r["rollout_s_per_step"] for r in runs),
            "learner_s_per_step": statistics.fmean(r["learner_s_per_step"] for r in runs),
            "lag_max": max(r["lag_max"] for r in runs),
            "final_accuracy_mean": C.with_ci([r["final_accuracy_mean"] for r in runs]),
            "gain": C.with_ci([r["gain"] for r in runs]),
            "gain_diff_vs_k0": gain_diff,
            # the bar: learning per step falls by no more than the seed spread
            "within_seed_spread": gain_diff["mean"] >= -spread - 1e-12,
        }
    return out


def ci_text(v: dict, digits: int = 3, sign: bool = False) -> str:
    lo, hi = v["ci95"]
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(v['mean'])} [{f.format(lo)}, {f.format(hi)}]"


def print_recipe(recipe: str, figures: dict) -> None:
    print(f"\n== {recipe}: seed spread of k0's gain (max - min) = {figures['seed_spread_k0_gain']:.3f}")
    rows = []
    for name, a in figures["arms"].items():
        rows.append([name, ci_text(a["s_per_step"], 3), ci_text(a["s_per_step_ratio_vs_k0"], 2),
                     f"{a['outside_gen_learn_frac']['mean']:.2f}", a["lag_max"],
                     ci_text(a["final_accuracy_mean"], 3), ci_text(a["gain"], 3, sign=True),
                     ci_text(a["gain_diff_vs_k0"], 3, sign=True), "yes" if a["within_seed_spread"] else "NO"])
    C.print_table(["arm", "s/step [95% CI]", "s/step / k0", "outside frac", "max lag", "final acc",
                   "gain (final - before RL)", "gain - k0's", "within spread"], rows)
    for name, a in figures["arms"].items():
        print(f"  {name} per seed: s/step/k0 " + ", ".join(f"{x:.2f}" for x in a["s_per_step_ratio_vs_k0"]["per_seed"])
              + "; gain " + ", ".join(f"{x:+.3f}" for x in a["gain"]["per_seed"])
              + "; gain - k0 " + ", ".join(f"{x:+.3f}" for x in a["gain_diff_vs_k0"]["per_seed"]))


def verdicts(figures: dict[str, dict]) -> dict[str, str]:
    out = {}
    for recipe, f in figures.items():
        spread = f["seed_spread_k0_gain"]
        for name in ("k1", "k2"):
            a = f["arms"].get(name)
            if a is None:
                continue
            d, r = a["gain_diff_vs_k0"], a["s_per_step_ratio_vs_k0"]
            out[f"{recipe} {name}"] = (
                f"gain - k0's = {ci_text(d, 3, sign=True)} vs seed spread {spread:.3f}: "
                f"{'within' if a['within_seed_spread'] else 'BELOW'} the spread; s/step x{r['mean']:.2f} of k0's")
    print("\nverdicts (learning per step vs k0; the issue's bar applies at k1)")
    for k, v in out.items():
        print(f"  {k}: {v}")
    return out


def plot(per_recipe: dict[str, dict[str, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(per_recipe), 2, figsize=(12, 4.2 * len(per_recipe)), squeeze=False)
    for (recipe, per_arm), (ax, ax2) in zip(per_recipe.items(), axes):
        for i, (name, runs) in enumerate(per_arm.items()):
            color = f"C{i}"
            n = min(len(r["curve"]) for r in runs)
            steps = [p["step"] for p in runs[0]["curve"][:n]]
            acc = np.array([[p["accuracy_mean"] for p in r["curve"][:n]] for r in runs])
            secs = np.array([[p["seconds"] for p in r["curve"][:n]] for r in runs])
            for a, s in zip(acc, secs):
                ax.plot(steps, a, color=color, alpha=0.2, lw=0.8)
                ax2.plot(s, a, color=color, alpha=0.2, lw=0.8)
            ax.plot(steps, acc.mean(0), marker="o", ms=3, color=color, label=name)
            ax2.plot(secs.mean(0), acc.mean(0), marker="o", ms=3, color=color, label=name)
        ax.set(xlabel="step (-1 = before RL)", ylabel="held-out accuracy (learnable mean)",
               title=f"{recipe}: accuracy vs step ({len(runs)} seeds; thin = per seed)")
        ax2.set(xlabel="training time, s (sum of time/step; evaluation excluded)",
                ylabel="held-out accuracy (learnable mean)", title=f"{recipe}: accuracy vs wall time")
        ax.legend()
        ax2.legend()
    C.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = args.recipes.split(",")
    per_recipe, baselines, figures, settings = {}, {}, {}, {}
    for recipe in recipes:
        ov = overrides(args, recipe)
        settings[recipe] = {"recipe": str(RECIPES[recipe]), "overrides": ov}
        runs, baselines[recipe] = C.run_bench(f"async_{recipe}", RECIPES[recipe], ARMS, seeds, ov)
        per_recipe[recipe] = {name: [summarise_run(r) for r in rs] for name, rs in runs.items()}
        figures[recipe] = analyse_recipe(per_recipe[recipe])
        print_recipe(recipe, figures[recipe])
    verdict = verdicts(figures)
    result = {"settings": {**vars(args), "arms": ARMS, "recipes": settings}, "baseline": baselines,
              "figures": figures, "verdicts": verdict, "runs": per_recipe}
    if not args.quick:
        plot(per_recipe, C.RESULTS / "async.png")
        C.write_result("async", result, C.command_line())
    return result


if __name__ == "__main__":
    main()
