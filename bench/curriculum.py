"""Curriculum efficiency: uniform vs UCB (DUMP, METHODS 1) vs SEC (METHODS 2) sampling on the
arith mixture add1 (easy), add2 (medium), add3 (hard), noise (unlearnable).

Every arm trains the same SFT-warmed tiny model (a 150-step SFT warm-up, done once and shared:
add1 starts near 0.11, add2 0.03, add3 0; with the recipe's 400-step warm-up add1 starts near 0.6
and GRPO at this lr pulled it *down* for both samplers, a measured dead end) with
the same recipe (recipes/dump_arith.yaml, with lr 2e-4 after 10 warm-up steps as in the quickstart, 150 steps of 16 prompts x 16 answers,
evaluation on 100 held-out prompts per distribution every 10 steps) and the same seeds; only
`curriculum.sampler` differs. Why a curriculum can matter here: add1 starts near 50 % success,
where a group's mean |A| is largest, while add3 and noise give all-wrong groups (|A| = 0) that
uniform sampling keeps paying for. Measured per run, from metrics.jsonl / curriculum.jsonl:

- rollouts (answers generated for training) until the greedy held-out accuracy averaged over the
  learnable distributions (add1, add2, add3; `eval/accuracy_mean`) first reaches the target =
  the untrained model's accuracy + `--target-gain` (checked at every evaluation, so resolution
  is eval.every steps); "not reached" counts are reported, never imputed;
- final held-out accuracy per distribution and the learnable mean;
- the share of answers each distribution received (what the curriculum did).

Ratios last: rollouts-to-target of ucb / uniform and sec / uniform, per seed (same seed, same
model) then mean ± std over the seeds where both arms reached the target.

    python bench/curriculum.py            # 3 samplers x 3 seeds (~15-20 min on 2 idle cores)
    python bench/curriculum.py --quick    # smoke: 1 seed, few steps
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPE = C.RECIPES / "dump_arith.yaml"
ARMS = {
    "uniform": ["curriculum.sampler=uniform"],
    "ucb": ["curriculum.sampler=ucb"],  # the recipe's METHODS 1 defaults: c 1.0, tau 0.1, window 300
    "sec": ["curriculum.sampler=sec", "curriculum.sec.alpha=0.5", "curriculum.sec.tau=0.2"],  # as sec_arith.yaml
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="another recipe with the same sections")
    p.add_argument("--arms", default="uniform,ucb,sec", help=f"comma list of {list(ARMS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-size", type=int, default=100, help="held-out prompts per distribution")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=150, help="SFT warm-up steps of the shared model")
    p.add_argument("--target-gain", type=float, default=0.05,
                   help="target = untrained learnable-mean accuracy + this")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 6 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.eval_every, args.eval_size, args.warmup_steps = "0", 6, 3, 20, 20
    return args


def overrides(args) -> list[str]:
    warm = [] if args.warmup_steps is None else [f"model.warmup.steps={args.warmup_steps}"]
    return [f"trainer.steps={args.steps}", f"eval.every={args.eval_every}", f"env.eval_size={args.eval_size}",
            f"learner.lr={args.lr}", "learner.schedule.warmup_steps=10", *warm]


def share_of_answers(run: C.Run) -> dict[str, float]:
    planned: dict[str, int] = {}
    for c in run.curriculum:
        for d, s in c.get("distributions", {}).items():
            planned[d] = planned.get(d, 0) + s.get("planned", 0)
    total = sum(planned.values()) or 1
    return {d: v / total for d, v in planned.items()}


def summarise_run(run: C.Run, target: float) -> dict:
    curve = C.eval_curve(run)
    final = run.evals[-1]
    return {
        "seed": run.info["seed"],
        "rollouts_to_target": C.rollouts_to_target(curve, target),
        "tokens_to_target": _tokens_at(run, C.rollouts_to_target(curve, target)),
        "final_accuracy": C.final_accuracy(run),
        "final_accuracy_mean": final["eval/accuracy_mean"],
        "share_of_answers": share_of_answers(run),
        "answers_total": sum(C.answers_per_step(run)),
        "curve": [(step, answers, acc) for step, answers, acc in curve],
        "wall_s": run.wall_s,
    }


def _tokens_at(run: C.Run, answers: int | None) -> int | None:
    """Generated answer tokens spent when `answers` answers had been generated."""
    if answers is None:
        return None
    spent_answers = C.cumulative(C.answers_per_step(run))
    spent_tokens = C.cumulative([m.get("tokens", 0) for m in run.steps])
    for a, t in zip(spent_answers, spent_tokens):
        if a >= answers:
            return int(t)
    return 0


def main(argv=None) -> dict:
    args = parse_args(argv)
    arms = {a: ARMS[a] for a in args.arms.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, baseline = C.run_bench("curriculum", args.recipe, arms, seeds, overrides(args))

    target = baseline["eval/accuracy_mean"] + args.target_gain
    per_arm = {name: [summarise_run(r, target) for r in rs] for name, rs in runs.items()}
    dists = list(per_arm[next(iter(arms))][0]["final_accuracy"])

    print(f"target: learnable-mean accuracy >= {target:.3f} (before RL + {args.target_gain})\n")
    header = ["arm", "rollouts to target (mean ± std)", "reached", *[f"final {d}" for d in dists], "final mean",
              "share of answers " + "/".join(dists)]
    rows = []
    summary = {}
    for name, rs in per_arm.items():
        reached = [r["rollouts_to_target"] for r in rs if r["rollouts_to_target"] is not None]
        m, s = C.mean_std(reached)
        finals = {d: C.mean_std([r["final_accuracy"][d] for r in rs]) for d in dists}
        fmean = C.mean_std([r["final_accuracy_mean"] for r in rs])
        share = {d: C.mean_std([r["share_of_answers"].get(d, 0.0) for r in rs])[0] for d in dists}
        summary[name] = {"rollouts_to_target": [m, s], "reached": len(reached), "seeds": len(rs),
                         "final_accuracy": finals, "final_accuracy_mean": fmean, "share_of_answers": share}
        rows.append([name, C.fmt(m, s, 0), f"{len(reached)}/{len(rs)}", *[C.fmt(*finals[d], 2) for d in dists],
                     C.fmt(*fmean, 3), "/".join(f"{share[d]:.2f}" for d in dists)])
    C.print_table(header, rows)

    ratios = {}
    if "uniform" in per_arm:
        print("\nratios (rollouts to target, arm / uniform, same seed; < 1: fewer rollouts than uniform)")
        for name, rs in per_arm.items():
            if name == "uniform":
                continue
            pairs = [(a["rollouts_to_target"], u["rollouts_to_target"]) for a, u in zip(rs, per_arm["uniform"])]
            both = [a / u for a, u in pairs if a is not None and u is not None and u > 0]
            # Seeds where this arm reached the target and uniform never did: the ratio is below
            # (this arm's rollouts) / (uniform's whole run); reported as a bound, not averaged in.
            bounds = [a / ut["answers_total"] for (a, u), ut in zip(pairs, per_arm["uniform"]) if a is not None and u is None]
            m, s = C.mean_std(both)
            fm = summary[name]["final_accuracy_mean"][0] - summary["uniform"]["final_accuracy_mean"][0]
            ratios[f"{name}/uniform"] = {"mean": m, "std": s, "per_seed": both, "seeds_both_reached": len(both),
                                         "upper_bounds_uniform_not_reached": bounds, "final_mean_accuracy_diff": fm}
            print(f"  {name}/uniform = {C.fmt(m, s, 2)} over {len(both)} seed(s) where both reached the target "
                  f"(per seed: {', '.join(f'{x:.2f}' for x in both) or 'none'}); "
                  f"final mean accuracy {name} - uniform = {fm:+.3f}")
            if bounds:
                print(f"    and < {', '.join(f'{b:.2f}' for b in bounds)} on seed(s) where only {name} reached it")
    return C.save_bench("curriculum", args, arms, overrides(args), baseline=baseline, target=target,
                        summary=summary, runs=per_arm, ratios=ratios)


if __name__ == "__main__":
    main()
