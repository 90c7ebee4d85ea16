"""Adaptive guidance (Guide-GRPO, METHODS 4): with and without hints, on recipes/guide_arith.yaml
(add2 + add3; add3 is the hardest learnable distribution; the SFT warm-up shows a third of its
examples with their hint, the answer's leading digits, so the model knows what a hint is).

Arms (same shared SFT-warmed model, same seeds, same steps):
  no_hints  guidance on with curriculum.guidance.max_rerolls=0: all-wrong groups are counted
            but never re-rolled, so the run is plain GRPO with the same bookkeeping
  hints     the recipe: every all-wrong group is re-rolled with its hint; a re-roll with mixed
            outcomes replaces the group (off-policy, shaped ratio)

Measured per run, for `--dist` (default add3) from curriculum.jsonl's hint counters:
  signal fraction = groups with a learning signal / groups drawn, where a group has a signal
  unless all its answers failed and no hinted re-roll rescued it (groups with every answer right
  also carry no signal; they are not counted by the hint counters and are ~0 on add3, see the
  reward column);
and from metrics.jsonl: 1 - zero_variance_frac over all trained groups (both distributions,
exact), the greedy held-out accuracy per distribution after `--steps` steps, and rollouts
(hinted re-rolls generate n more answers each, so the hints arm spends more). Ratios last:
hints / no_hints for the signal fraction, hints - no_hints for accuracy.

    python bench/guidance.py            # 2 arms x 3 seeds
    python bench/guidance.py --quick    # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPE = C.RECIPES / "guide_arith.yaml"
ARMS = {"no_hints": ["curriculum.guidance.max_rerolls=0"], "hints": []}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="another recipe with the same sections")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-size", type=int, default=100)
    p.add_argument("--dist", default="add3", help="the distribution whose signal fraction is reported")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.eval_size = "0", 4, 20
    return args


def overrides(args) -> list[str]:
    return [f"trainer.steps={args.steps}", f"eval.every={args.steps}", f"env.eval_size={args.eval_size}"]


def signal_fraction(run: C.Run, dist: str) -> float:
    """Over the run: 1 - (all-wrong groups not rescued by a kept hinted re-roll) / groups."""
    total = run.curriculum[-1]["hints"]["total"][dist]  # cumulative counters since step 0
    return 1.0 - (total["failed"] - total["kept"]) / max(total["groups"], 1)


def summarise_run(run: C.Run, dist: str) -> dict:
    final = run.evals[-1]
    total = run.curriculum[-1]["hints"]["total"][dist]
    return {
        "seed": run.info["seed"],
        "signal_fraction": signal_fraction(run, dist),
        "all_wrong_fraction": total["failed"] / max(total["groups"], 1),
        "rerolled": total["rerolled"], "kept": total["kept"], "solved": total["solved"],
        "trained_groups_with_signal": statistics.fmean(1.0 - m["zero_variance_frac"] for m in run.steps),
        "train_reward": statistics.fmean(m.get(f"reward/{dist}", 0.0) for m in run.steps),
        "final_accuracy": C.final_accuracy(run),
        "final_accuracy_mean": final["eval/accuracy_mean"],
        "answers_total": sum(C.answers_per_step(run)),
        "wall_s": run.wall_s,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, baseline = C.run_bench("guidance", args.recipe, ARMS, seeds, overrides(args))
    per_arm = {name: [summarise_run(r, args.dist) for r in rs] for name, rs in runs.items()}
    dists = list(per_arm["no_hints"][0]["final_accuracy"])

    header = ["arm", f"{args.dist} groups with signal", f"{args.dist} all-wrong", "rerolled/kept (sum)",
              "trained groups with signal", *[f"final {d}" for d in dists], "rollouts"]
    rows, summary = [], {}
    for name, rs in per_arm.items():
        sig = C.mean_std([r["signal_fraction"] for r in rs])
        wrong = C.mean_std([r["all_wrong_fraction"] for r in rs])
        trained = C.mean_std([r["trained_groups_with_signal"] for r in rs])
        finals = {d: C.mean_std([r["final_accuracy"][d] for r in rs]) for d in dists}
        answers = C.mean_std([r["answers_total"] for r in rs])
        summary[name] = {"signal_fraction": sig, "all_wrong_fraction": wrong, "trained_groups_with_signal": trained,
                         "final_accuracy": finals, "answers_total": answers}
        rows.append([name, C.fmt(*sig, 2), C.fmt(*wrong, 2),
                     f"{sum(r['rerolled'] for r in rs)}/{sum(r['kept'] for r in rs)}", C.fmt(*trained, 2),
                     *[C.fmt(*finals[d], 2) for d in dists], C.fmt(*answers, 0)])
    C.print_table(header, rows)

    h, n = per_arm["hints"], per_arm["no_hints"]
    sig_ratio = [a["signal_fraction"] / b["signal_fraction"] for a, b in zip(h, n) if b["signal_fraction"] > 0]
    acc_diff = [a["final_accuracy"][args.dist] - b["final_accuracy"][args.dist] for a, b in zip(h, n)]
    cost = [a["answers_total"] / b["answers_total"] for a, b in zip(h, n)]
    ratios = {f"{args.dist} signal fraction hints/no_hints": C.mean_std(sig_ratio),
              f"{args.dist} final accuracy hints-no_hints": C.mean_std(acc_diff),
              "rollouts hints/no_hints": C.mean_std(cost)}
    print("\nratios (same seed, then mean ± std over seeds)")
    for k, v in ratios.items():
        print(f"  {k} = {C.fmt(*v, 3)}")
    return C.save_bench("guidance", args, ARMS, overrides(args), baseline=baseline, summary=summary, runs=per_arm,
                        ratios=ratios)


if __name__ == "__main__":
    main()
