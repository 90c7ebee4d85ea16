"""Token-budget tightening (METHODS 3): a fixed budget vs an exponential tightening schedule that
ends at the same budget, on recipes/budget_arith.yaml (add1 + add2, exact match + length penalty
0.5 relative to the budget, slack 4 tokens past it).

Arms (same shared SFT-warmed model, same seeds, same steps):
  fixed       budget = `--end` tokens from the first step
  tightening  budget = max(end, start * gamma ** floor(t / every)): 12, 8, 6, 4, ... (the recipe)

Measured per run: greedy held-out accuracy per distribution and learnable mean at the end
(evaluation allows rollout.max_tokens = 12 tokens in both arms); mean answer tokens of the
training rollouts over the last `--tail` steps, when both arms are under the same budget (the
trainer does not log the length of evaluation answers). Ratios last: tightening - fixed for
accuracy, tightening / fixed for answer tokens, per seed then mean ± std.
METHODS 3 claims both improve (higher accuracy at similar or shorter length).

    python bench/budget.py            # 2 arms x 3 seeds
    python bench/budget.py --quick    # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPE = C.RECIPES / "budget_arith.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="another recipe with the same sections")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--start", type=int, default=12, help="tightening: first budget (tokens)")
    p.add_argument("--end", type=int, default=4, help="final budget of both arms (tokens)")
    p.add_argument("--gamma", type=float, default=0.7)
    p.add_argument("--every", type=int, default=10, help="steps per budget stage")
    p.add_argument("--eval-size", type=int, default=100)
    p.add_argument("--tail", type=int, default=10, help="last steps averaged for answer tokens")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 6 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.every, args.eval_size, args.tail = "0", 6, 2, 20, 2
    return args


def arms(args) -> dict[str, list[str]]:
    common = [f"curriculum.budget.end={args.end}", "curriculum.budget.shape=exponential",
              f"curriculum.budget.gamma={args.gamma}", f"curriculum.budget.every={args.every}"]
    return {"fixed": [*common, f"curriculum.budget.start={args.end}"],
            "tightening": [*common, f"curriculum.budget.start={args.start}"]}


def overrides(args) -> list[str]:
    return [f"trainer.steps={args.steps}", f"eval.every={args.steps}", f"env.eval_size={args.eval_size}"]


def summarise_run(run: C.Run, tail: int) -> dict:
    final = run.evals[-1]
    last = run.steps[-tail:]
    budgets = [c["budget"]["default"] for c in run.curriculum if c.get("budget")]
    return {
        "seed": run.info["seed"],
        "final_accuracy": C.final_accuracy(run),
        "final_accuracy_mean": final["eval/accuracy_mean"],
        "answer_tokens_tail": statistics.fmean(m["response_length/mean"] for m in last),
        "answer_tokens_all": statistics.fmean(m["response_length/mean"] for m in run.steps),
        "truncated_frac_tail": statistics.fmean(m.get("truncated_frac", 0.0) for m in last),
        "budget_first_last": [budgets[0], budgets[-1]] if budgets else None,
        "answers_total": sum(C.answers_per_step(run)),
        "wall_s": run.wall_s,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, baseline = C.run_bench("budget", args.recipe, arms(args), seeds, overrides(args))
    per_arm = {name: [summarise_run(r, args.tail) for r in rs] for name, rs in runs.items()}
    dists = list(per_arm["fixed"][0]["final_accuracy"])

    header = ["arm", "budget first->last", *[f"final {d}" for d in dists], "final mean",
              f"answer tokens (last {args.tail} steps)", "truncated frac (last)"]
    rows, summary = [], {}
    for name, rs in per_arm.items():
        finals = {d: C.mean_std([r["final_accuracy"][d] for r in rs]) for d in dists}
        fmean = C.mean_std([r["final_accuracy_mean"] for r in rs])
        toks = C.mean_std([r["answer_tokens_tail"] for r in rs])
        trunc = C.mean_std([r["truncated_frac_tail"] for r in rs])
        summary[name] = {"final_accuracy": finals, "final_accuracy_mean": fmean, "answer_tokens_tail": toks,
                         "truncated_frac_tail": trunc}
        b = rs[0]["budget_first_last"]
        rows.append([name, f"{b[0]}->{b[1]}" if b else "-", *[C.fmt(*finals[d], 2) for d in dists],
                     C.fmt(*fmean, 3), C.fmt(*toks, 2), C.fmt(*trunc, 2)])
    C.print_table(header, rows)

    t, f = per_arm["tightening"], per_arm["fixed"]
    acc_diff = [a["final_accuracy_mean"] - b["final_accuracy_mean"] for a, b in zip(t, f)]
    tok_ratio = [a["answer_tokens_tail"] / b["answer_tokens_tail"] for a, b in zip(t, f)]
    ratios = {"accuracy_mean tightening-fixed": C.mean_std(acc_diff),
              "answer_tokens tightening/fixed": C.mean_std(tok_ratio)}
    print("\nratios (same seed, then mean ± std over seeds)")
    print(f"  final mean accuracy, tightening - fixed = {C.fmt(*ratios['accuracy_mean tightening-fixed'], 3)}")
    print(f"  answer tokens, tightening / fixed      = {C.fmt(*ratios['answer_tokens tightening/fixed'], 2)}")
    return C.save_bench("budget", args, arms(args), overrides(args), baseline=baseline, summary=summary, runs=per_arm,
                        ratios=ratios)


if __name__ == "__main__":
    main()
