"""Train Long, Think Short (docs/curriculum.md, "Budget tightening") on the chain testbed: budget
tightening vs a fixed budget vs no budget, same SFT-warmed model (recipes/chain_uniform.yaml's: its
traces mix verbose "b7=0" and terse "b0" steps, so the same computation fits in about 2 to 4 tokens a step) and same seeds.

Arms (the recipe plus the chain_answer reward and a length penalty, `length_budget`, weight 0.5):
  none        no budget: answers as long as rollout.max_tokens allows
  fixed       budget = `--end` tokens from step 0
  tightening  budget = max(end, start * gamma ** floor(t / every)): 52, 41, 33, 26, 24 ... (the paper's formula)
Generation stops at budget + `--slack` tokens; past the budget the penalty is -(tokens - B) / B
(capped at 1) times 0.5. B = 24 lets every rung up to len10 answer tersely within budget (len08:
18 tokens + EOS), and not verbosely (len08 verbose: 34).

Measured per run: held-out accuracy (sampled, as in the recipe; evaluation gets the recipe's full
max_tokens in every arm, so a budget cannot win by truncating the eval) and the mean answer tokens
of the training rollouts over the last `--tail` steps (when tightening has reached B). Per seed,
then the mean and a 95 % bootstrap interval over seeds, of: final learnable mean per arm, answer
tokens per arm, and the differences tightening - fixed, tightening - none (accuracy) and ratios
tightening / none (tokens). The paper's claim: tightening keeps accuracy at about length B; a
fixed B from the start loses accuracy; no budget keeps long answers.

    python bench/budget.py            # 3 arms x seeds 0-4
    python bench/budget.py --quick    # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPE = C.RECIPES / "chain_uniform.yaml"
REWARDS = "rewards=[{name: envs.chain:chain_answer}, {name: length_budget, weight: 0.5}]"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="another recipe with the same sections")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--start", type=int, default=52)
    p.add_argument("--end", type=int, default=24)
    p.add_argument("--gamma", type=float, default=0.8)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--slack", type=int, default=4)
    p.add_argument("--tail", type=int, default=5, help="steps at the end over which answer tokens are averaged")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.every, args.tail = "0", 4, 1, 2
        args.set += ["eval.every=2", "env.eval_size=8", "model.warmup.steps=100"]
    return args


def arms(args) -> dict[str, list[str]]:
    def budget(start: int) -> str:
        return (f"curriculum.budget={{shape: exponential, start: {start}, end: {args.end}, gamma: {args.gamma}, "
                f"every: {args.every}, slack: {args.slack}}}")
    return {"none": [REWARDS], "fixed": [REWARDS, budget(args.end)], "tightening": [REWARDS, budget(args.start)]}


def overrides(args) -> list[str]:
    return [f"trainer.steps={args.steps}", "eval.every=10", *args.set]


def summarise_run(run: C.Run, tail: int) -> dict:
    budgets = [c["budget"]["default"] for c in run.curriculum if c.get("budget")]
    return {
        "seed": run.info["seed"],
        "final_accuracy": C.final_accuracy(run),
        "final_accuracy_mean": run.evals[-1]["eval/accuracy_mean"],
        "answer_tokens_tail": statistics.fmean(m["response_length/mean"] for m in run.steps[-tail:]),
        "answer_tokens_per_step": [m["response_length/mean"] for m in run.steps],
        "accuracy_curve": [(e["step"], e["eval/accuracy_mean"]) for e in run.evals],
        "budget_first_last": [budgets[0], budgets[-1]] if budgets else None,
        "wall_s": run.wall_s,
    }


def compare(per_arm: dict[str, list[dict]]) -> dict:
    t = per_arm["tightening"]
    out = {}
    for other in ("fixed", "none"):
        o = per_arm[other]
        out[f"accuracy tightening-{other}"] = C.with_ci([a["final_accuracy_mean"] - b["final_accuracy_mean"] for a, b in zip(t, o)])
        out[f"answer tokens tightening/{other}"] = C.with_ci([a["answer_tokens_tail"] / b["answer_tokens_tail"] for a, b in zip(t, o)])
    return out


def plot(per_arm: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, runs in per_arm.items():
        toks = np.array([r["answer_tokens_per_step"] for r in runs])
        line, = ax.plot(toks.mean(0), label=name)
        ax.fill_between(range(toks.shape[1]), toks.min(0), toks.max(0), color=line.get_color(), alpha=0.15)
        steps = [s for s, _ in runs[0]["accuracy_curve"]]
        acc = np.array([[a for _, a in r["accuracy_curve"]] for r in runs])
        ax2.plot(steps, acc.mean(0), marker="o", color=line.get_color(), label=name)
        ax2.fill_between(steps, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel="step", ylabel="mean answer tokens (training rollouts)", title="answer length (band = min..max over seeds)")
    ax2.set(xlabel="step", ylabel="held-out accuracy, learnable mean", title="accuracy (full max_tokens at eval)")
    ax.legend()
    C.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, baseline = C.run_bench("budget", args.recipe, arms(args), seeds, overrides(args))
    per_arm = {name: [summarise_run(r, args.tail) for r in rs] for name, rs in runs.items()}
    summary = {name: {"final_accuracy_mean": C.with_ci([r["final_accuracy_mean"] for r in rs]),
                      "answer_tokens_tail": C.with_ci([r["answer_tokens_tail"] for r in rs]),
                      "budget_first_last": rs[0]["budget_first_last"]} for name, rs in per_arm.items()}
    rows = [[name, "-" if s["budget_first_last"] is None else "{}->{}".format(*s["budget_first_last"]),
             ci_text(s["final_accuracy_mean"], 3), ci_text(s["answer_tokens_tail"], 1)] for name, s in summary.items()]
    C.print_table(["arm", "budget first->last", "final learnable mean [95% CI]", f"answer tokens, last {args.tail} steps"], rows)
    ratios = compare(per_arm)
    print("\nper seed, then mean [95% bootstrap CI]")
    for k, v in ratios.items():
        print(f"  {k} = {ci_text(v, 3)}   per seed: {', '.join(f'{x:.3f}' for x in v['per_seed'])}")
    if not args.quick:
        plot(per_arm, C.RESULTS / "budget.png")
    return C.save_bench("budget", args, arms(args), overrides(args), baseline=baseline, summary=summary,
                        runs=per_arm, ratios=ratios)


def ci_text(v: dict, digits: int) -> str:
    lo, hi = v["ci95"]
    return f"{v['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


if __name__ == "__main__":
    main()
