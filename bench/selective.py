"""Selective rollouts, compute-matched on the chain testbed (envs/chain.py,
recipes/chain_uniform.yaml): answers generated, seconds of training steps and zero-variance
groups generated to reach DAPO's final held-out accuracy.

Arms (same SFT-warmed model, same seeds, same steps; overrides on chain_uniform.yaml):
  dapo        uniform sampler + DAPO dynamic sampling (docs/curriculum.md, "DAPO dynamic sampling"):
              zero-variance groups are dropped and refilled
  dapo_greso  dapo + GRESO pre-rollout filtering (docs/curriculum.md, "GRESO", defaults)
  speed       uniform sampler + SPEED-RL screening (docs/curriculum.md, "SPEED-RL", defaults), no
              dynamic sampling
  ucb_greso   DUMP's UCB sampler + GRESO, *with* dynamic sampling as well, so that
              dapo -> dapo_greso adds GRESO and dapo_greso -> ucb_greso swaps the sampler: each
              of the three DAPO arms differs from the next in one thing
The DAPO arms use `curriculum.dynamic_sampling={max_rounds: 8}` (as bench/curriculum.py's
ucb_dapo) rather than the default 4: max_rounds only decides when a step gives up (raises
DynamicSamplingExhausted), never how a filled step is built, and one exhausted step would end
the bench.

Per seed the target is dapo's final learnable-mean accuracy (`eval/accuracy_mean`: every rung but
`noise`, avg@`eval.samples`) on that seed. Per arm and seed, read off the evaluations: answers
generated for training (refill rounds, screening answers, hinted re-rolls: everything the trainer
counts in `rollout/answers_generated`), seconds of training steps (`time/step`, evaluation
excluded) and zero-variance groups generated (`rollout/zero_variance_groups`, every on-policy group
whose answers all got the same reward, dropped or not) until the first evaluation at or above the
target; ratio arm / dapo per seed, mean and 95 % bootstrap interval over seeds. An arm that never
reaches the target on a seed is counted at its whole run (a lower bound on its ratio) and marked
`+`. The to-target machinery is bench/curriculum.py's (to_target, gap_at_equal_answers, first
crossing at evaluations), run with dapo in uniform's place. Also: zero-variance groups over the
whole run (every arm trains the same number of steps on the same batch size) as a ratio to dapo's.

Goals, printed with their verdicts: dapo_greso / dapo <= 0.5 in zero-variance groups
(whole run) and <= 0.7 in answers to the target. "met" needs the interval's upper end at or
below the goal, "missed" its lower end above it; anything else is "undecided".

Prompt pool: `env.train_size=16` training prompts per rung during RL (`--train-size`), for every
arm, instead of the recipe's 4000. GRESO acts only on prompts seen before; drawing ~60 prompts per
rung with replacement from 4000 almost never repeats one, and dapo_greso would equal dapo by
construction. From 16, a prompt recurs ~3-4 times in a run (several "epochs", as in the paper's
setting). The model is still SFT-warmed on the recipe's environment (4000 traces per rung, the
cached model bench/curriculum.py starts from); held-out prompts are the recipe's first
`eval_size`.

Size: 24 steps of 16 prompts x 8 answers, evaluated every 4 steps on 24 held-out prompts per rung
(avg@2), seeds 0-4: 20 runs of about 1.5 min each on 2 idle CPU cores (DAPO arms generate ~1.5x
uniform's answers), about 30-35 min: an estimate from bench/curriculum.py's measured runs (30 steps,
uniform 74-123 s, ucb_dapo 62-97 s each), not yet measured for this bench. Evaluation is more frequent than bench/curriculum.py's (every
4 steps, not 5: finer crossing points) on fewer prompts (24 per rung, not 32) to keep its cost;
more steps would not fit. The quick run's sizes are only a smoke test of the code.

    python bench/selective.py                   # 4 arms x seeds 0-4 (~30-35 min on 2 idle cores)
    python bench/selective.py --seeds 0,1,2     # fewer seeds
    python bench/selective.py --quick           # smoke: dapo + dapo_greso, 1 seed, 6 steps (8 min
                                                # measured at load average ~5 on 2 cores; less idle)
    python bench/selective.py --from-results bench/results/selective.json   # figures again, no training
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import curriculum as CB  # noqa: E402

DAPO = "curriculum.dynamic_sampling={max_rounds: 8}"
GRESO = "curriculum.greso={}"
ARMS = {
    "dapo": ["curriculum.sampler=uniform", DAPO],
    "dapo_greso": ["curriculum.sampler=uniform", DAPO, GRESO],
    "speed": ["curriculum.sampler=uniform", "curriculum.speed={}"],
    "ucb_greso": ["curriculum.sampler=ucb", DAPO, GRESO],
}
REF = "dapo"
GOALS = {("zero_variance_groups", "whole run"): 0.5, ("answers", "to target"): 0.7}  # dapo_greso / dapo
COUNTS = ("rollout/groups_generated", "rollout/zero_variance_groups")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=CB.RECIPE, help="another recipe with the same sections")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {list(ARMS)} (dapo first)")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE]", help="an extra arm")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--eval-size", type=int, default=24, help="held-out prompts per rung")
    p.add_argument("--train-size", type=int, default=16,
                   help="training prompts per rung during RL (the recipe's 4000 = no prompt ever recurs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    p.add_argument("--tag", default="selective", help="results file bench/results/<tag>.json")
    p.add_argument("--quick", action="store_true", help="smoke run: dapo + dapo_greso, 1 seed, 6 steps")
    p.add_argument("--from-results", type=Path, metavar="JSON",
                   help="no training: recompute and print the figures from a results file's saved runs")
    args = p.parse_args(argv)
    if args.quick:
        # the full bench's model (SFT-warmed on the recipe's environment, cached under $RLCURR_CACHE)
        args.arms, args.seeds, args.steps, args.eval_every, args.eval_size = "dapo,dapo_greso", "0", 6, 3, 8
    return args


def arms_from(args) -> dict[str, list[str]]:
    return CB.arms_from(args, ARMS, REF)


def overrides(args) -> list[str]:
    return [f"trainer.steps={args.steps}", f"eval.every={args.eval_every}", f"env.eval_size={args.eval_size}",
            f"env.train_size={args.train_size}", *args.set]


# ---------------------------------------------------------------- one run


def add_group_counts(curve: list[dict], steps: list[dict]) -> dict[str, int] | None:
    """Add to every evaluation of `curve` (bench/curriculum.py's spend_curve) the on-policy groups
    and zero-variance groups generated by the steps up to and including its own (0 at the step -1
    baseline); the run's totals. None, curve untouched, when a step did not log both counts."""
    if not steps or any(k not in m for m in steps for k in COUNTS):
        return None
    done, total = {}, {"groups_generated": 0, "zero_variance_groups": 0}
    for m in steps:
        total = {"groups_generated": total["groups_generated"] + m[COUNTS[0]],
                 "zero_variance_groups": total["zero_variance_groups"] + m[COUNTS[1]]}
        done[m["step"]] = total
    for point in curve:
        point.update(done.get(point["step"], {"groups_generated": 0, "zero_variance_groups": 0}))
    return total


def summarise_run(run: C.Run) -> dict:
    s = CB.summarise_run(run)
    totals = add_group_counts(s["curve"], run.steps)
    s["spent"].update(totals or {"groups_generated": None, "zero_variance_groups": None})
    return s


# ---------------------------------------------------------------- across runs


def against_ref(figure, per_arm: dict[str, list[dict]], *args) -> dict:
    """A bench/curriculum.py figure (which compares every arm with the one named "uniform") with
    dapo in uniform's place; keys renamed back."""
    out = figure({("uniform" if k == REF else k): v for k, v in per_arm.items()}, *args)
    return {(REF if k == "uniform" else k): v for k, v in out.items()}


def whole_run_ratios(per_arm: dict[str, list[dict]], what: str) -> dict[str, dict]:
    """Per arm: `what` spent over the whole run / dapo's on the same seed; mean and 95 % interval."""
    return {name: C.with_ci([r["spent"][what] / ref["spent"][what] if ref["spent"][what] else float("nan")
                             for r, ref in zip(runs, per_arm[REF])]) for name, runs in per_arm.items()}


def verdict(mean: float | None, ci95: tuple[float, float], goal: float) -> str:
    """"met" when the whole 95 % interval is at or below `goal`, "missed" when it is all above,
    "undecided" otherwise (or without a value)."""
    lo, hi = ci95
    if mean is None or lo != lo or hi != hi:
        return "undecided (no value)"
    return "met" if hi <= goal else "missed" if lo > goal else "undecided (the interval straddles the goal)"


def counted(per_arm: dict[str, list[dict]]) -> bool:
    return all(r["spent"].get("zero_variance_groups") is not None for runs in per_arm.values() for r in runs)


def summarise_arms(per_arm: dict[str, list[dict]]) -> dict:
    out = against_ref(CB.summarise_arms, per_arm)
    for name, runs in per_arm.items():
        for what in ("groups_generated", "zero_variance_groups", "seconds"):
            out[name][f"{what}_total"] = C.mean_std([r["spent"].get(what) for r in runs])
        out[name]["wall_s"] = C.mean_std([r["wall_s"] for r in runs])
    return out


def analyse(per_arm: dict[str, list[dict]], plot_to: Path | None) -> dict:
    """Every figure of the bench from the per-run summaries, printed (and plotted)."""
    whats = ("answers", "seconds", "tokens") + (("zero_variance_groups",) if counted(per_arm) else ())
    to_target = {what: against_ref(CB.to_target, per_arm, what) for what in whats}
    whole_run = {what: whole_run_ratios(per_arm, what) for what in whats if what != "seconds"}
    goals = []
    for (what, when), goal in GOALS.items():
        r = (to_target if when == "to target" else whole_run).get(what, {}).get("dapo_greso")
        mean, ci95 = (None, (float("nan"),) * 2) if r is None else (
            (r["ratio_mean"], r["ratio_ci95"]) if when == "to target" else (r["mean"], r["ci95"]))
        lower_bound = bool(r and when == "to target" and r["reached"] < len(r["per_seed"]))
        said = verdict(mean, ci95, goal)
        if lower_bound and said == "met":  # a lower bound below the goal says nothing about the ratio
            said = "undecided (below the goal only as a lower bound: some seed never reached the target)"
        goals.append({"what": what, "when": when, "goal": goal, "mean": mean, "ci95": ci95,
                      "lower_bound": lower_bound, "verdict": said})
    figures = {"summary": summarise_arms(per_arm), "to_target": to_target, "whole_run": whole_run,
               "gap_at_equal_answers": against_ref(CB.gap_at_equal_answers, per_arm), "goals": goals}
    print_report(figures, counted(per_arm))
    if plot_to is not None:
        plot(per_arm, plot_to)
    return figures


def print_report(f: dict, have_counts: bool) -> None:
    header = ["arm", "final mean", "answers", "groups gen.", "zero-var groups", "train s", "wall s"]
    rows = [[name, C.fmt(*s["final_accuracy_mean"], 3), C.fmt(*s["answers_total"], 0),
             C.fmt(*s["groups_generated_total"], 0), C.fmt(*s["zero_variance_groups_total"], 0),
             C.fmt(*s["seconds_total"], 0), C.fmt(*s["wall_s"], 0)] for name, s in f["summary"].items()]
    print("\nper arm over the whole run (mean ± std over seeds)")
    C.print_table(header, rows)
    if not have_counts:
        print(f"  zero-variance figures left out: some run did not log {' and '.join(COUNTS)}")
    print(f"\nto reach {REF}'s final accuracy on the same seed (arm / {REF}; < 1 = cheaper; "
          "seconds = training steps, evaluation excluded)")
    for what, t in f["to_target"].items():
        for name, r in t.items():
            if name != REF:
                lo, hi = r["ratio_ci95"]
                per = ", ".join(f"{s[what]:.0f}{'' if s['reached'] else '+'}/{t[REF]['per_seed'][i][what]:.0f}"
                                for i, s in enumerate(r["per_seed"]))
                print(f"  {what:>20} {name}/{REF} = {C.fmt(r['ratio_mean'], None, 2)} [95% CI {C.fmt(lo, None, 2)}, "
                      f"{C.fmt(hi, None, 2)}], reached {r['reached']}/{len(r['per_seed'])}  per seed arm/{REF}: {per}")
    print("  (+ = never reached; counted at its whole run, a lower bound)")
    print(f"\nwhole run, arm / {REF} (same steps, same batch)")
    for what, t in f["whole_run"].items():
        for name, r in t.items():
            if name != REF:
                lo, hi = r["ci95"]
                print(f"  {what:>20} {name}/{REF} = {r['mean']:.2f} [95% CI {lo:.2f}, {hi:.2f}]  per seed: "
                      + ", ".join(f"{x:.2f}" for x in r["per_seed"]))
    print(f"\nlearnable-mean gap to {REF} at equal answers (> 0 = ahead)")
    for name, g in f["gap_at_equal_answers"].items():
        if name != REF:
            lo, hi = g["ci95"]
            print(f"  {name}: {g['mean']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}]")
    print("\ngoals, dapo_greso / dapo:")
    for g in f["goals"]:
        lo, hi = g["ci95"]
        print(f"  {g['what']} ({g['when']}) <= {g['goal']}: {C.fmt(g['mean'], None, 2)} [95% CI {C.fmt(lo, None, 2)}, "
              f"{C.fmt(hi, None, 2)}] -> {g['verdict'].upper()}"
              + ("  (some seed never reached the target: a lower bound)" if g["lower_bound"] else ""))


def plot(per_arm: dict[str, list[dict]], path: Path) -> None:
    """Left: learnable mean vs answers generated, every seed's curve, one colour per arm. Right:
    zero-variance groups generated per arm, whole run and until dapo's final accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (name, runs) in enumerate(per_arm.items()):
        for j, r in enumerate(runs):
            ax.plot([p["answers"] for p in r["curve"]], [p["accuracy_mean"] for p in r["curve"]], "o-", ms=2,
                    lw=1, alpha=0.7, color=f"C{i}", label=name if j == 0 else None)
    ax.set(xlabel="answers generated for training", ylabel="held-out accuracy, learnable mean",
           title=f"selective rollouts vs {REF} ({len(per_arm[REF])} seeds, one line each)")
    ax.legend()
    if counted(per_arm):
        names = list(per_arm)
        whole = [[r["spent"]["zero_variance_groups"] for r in per_arm[n]] for n in names]
        until = [[s["zero_variance_groups"] for s in against_ref(CB.to_target, per_arm, "zero_variance_groups")[n]["per_seed"]]
                 for n in names]
        x = np.arange(len(names))
        for k, (vals, lab) in enumerate(((whole, "whole run"), (until, f"until {REF}'s final accuracy"))):
            ax2.bar(x + (k - 0.5) * 0.38, [np.mean(v) for v in vals], 0.38, yerr=[np.std(v) for v in vals],
                    capsize=3, label=lab)
        ax2.set_xticks(x, names)
        ax2.legend()
    ax2.set(ylabel="zero-variance groups generated (mean ± std over seeds)", title="zero-variance groups per arm")
    C.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_results:
        result = json.loads(args.from_results.read_text())
        result.update(analyse(result["runs"], plot_to=args.from_results.with_suffix(".png")))
        result["figures_recomputed"] = {"command": C.command_line(), "git": C.git_rev()}
        args.from_results.write_text(json.dumps(result, indent=2) + "\n")
        print(f"rewrote {args.from_results}")
        return result
    arms = arms_from(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    # the model is SFT-warmed on the recipe's environment (its 4000 traces per rung; the same cached
    # model as bench/curriculum.py's), not on the 16-prompt RL pool
    runs, baseline = C.run_bench(args.tag, args.recipe, arms, seeds, overrides(args), warm_overrides=list(args.set))
    per_arm = {name: [summarise_run(r) for r in rs] for name, rs in runs.items()}
    png = C.RUNS / args.tag / "quick.png" if args.quick else C.RESULTS / f"{args.tag}.png"
    figures = analyse(per_arm, plot_to=png)
    return C.save_bench(args.tag, args, arms, overrides(args), baseline=baseline, runs=per_arm, **figures)


if __name__ == "__main__":
    main()
