"""Does a curriculum save compute on data like real RL data? The skills proving ground
(envs/skills.py, recipes/skills_uniform.yaml): distinct skills, a persistent per-prompt difficulty
spread, and a dead share w of train prompts the starting policy always solves or never does.

Arms (same SFT-warmed model, same seeds, same steps; overrides on the recipe):
  uniform         every skill equally often, prompts in shuffled passes (the reference)
  dapo            + DAPO dynamic sampling (zero-variance groups dropped and refilled)
  greso           dapo + GRESO pre-rollout skipping (the authors' rule: floor 0.01, streaks of one kind)
  learnability    MoPPS prompt sampler (Beta posteriors, Thompson toward pass rate 0.5)
  lilo            the p(1-p) learnability score on the posterior mean
  profile_filter  `rlcurr profile` (G = 8) first, then train only on prompts profiled in
                  [1/8, 7/8] (curriculum.prompts.keep_pass) with the profile as prior; the
                  profile's answers are counted against this arm (added to every point of its curve)
  ucb             DUMP's UCB over the skills
  ucb_learn       UCB picks the skill, MoPPS the prompt
  speed           SPEED-RL screening
  guidance        adaptive hints (Guide-GRPO): reported also on the held-out hard-dead prompts,
                  evaluated without hints
  budget          token-budget tightening: read in tokens to uniform's accuracy
The reference accuracy is uniform's final held-out accuracy on the LEARNABLE prompts (the mean
over skills; the hard-dead eval set is left out of that mean), per seed. For each arm and seed:
answers (and tokens, seconds) generated until its first evaluation at or above it, ratio to
uniform's, mean and 95 % bootstrap interval over seeds; the gap at equal answers; final per-skill
accuracy. The to-target machinery is bench/curriculum.py's.

Then the saving as a function of w (`--sweep`): uniform and the two arms given by --sweep-arms
at w = 0, 0.25, 0.5, 0.75 (3 seeds), with the bound 1 - w (answers, arm / uniform; a speed-up of
1/(1 - w)) that skipping exactly the dead prompts would give, plotted
(bench/results/realistic_sweep.png). And `--chain`: the recommended arm against uniform on the
chain ladder (w about 0), which it must not lose beyond noise.

    python bench/realistic.py                      # headline: every arm, w = 0.5, seeds 0-4
    python bench/realistic.py --sweep              # w sweep, 3 seeds
    python bench/realistic.py --chain              # recommended arm on the chain ladder
    python bench/realistic.py --transfer --seeds 100,101,102   # each skill alone: little transfer?
    python bench/realistic.py --persistence --seeds 0,1,2       # pass rates of two profiles correlate?
    python bench/realistic.py --quick              # smoke: uniform + learnability, 1 seed, few steps
    python bench/realistic.py --from-results bench/results/realistic.json
Settings were chosen on seeds 100+; the reported seeds are 0-4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import curriculum as CB  # noqa: E402

RECIPE = C.RECIPES / "skills_uniform.yaml"
DAPO = "curriculum.dynamic_sampling={max_rounds: 8}"
ARMS = {
    "uniform": ["curriculum.sampler=uniform"],
    "dapo": ["curriculum.sampler=uniform", DAPO],
    "greso": ["curriculum.sampler=uniform", DAPO, "curriculum.greso={}"],
    "learnability": ["curriculum.sampler=uniform", "curriculum.learnability={}"],
    "lilo": ["curriculum.sampler=uniform", "curriculum.learnability={rule: lilo}"],
    "profile_filter": ["curriculum.sampler=uniform", "curriculum.prompts.keep_pass=[0.1, 0.9]"],
    "ucb": ["curriculum.sampler=ucb"],
    "ucb_learn": ["curriculum.sampler=ucb", "curriculum.learnability={}"],
    "speed": ["curriculum.sampler=uniform", "curriculum.speed={}"],
    "guidance": ["curriculum.sampler=uniform", "curriculum.guidance={}"],
    "budget": ["curriculum.sampler=uniform", "curriculum.budget={start: 16, end: 10}"],
}
PROFILED = {"profile_filter"}  # arms that run `rlcurr profile` first and train with its prior
HARD_DEAD = "hard_dead"
WS = (0.0, 0.25, 0.5, 0.75)


def seed_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {list(ARMS)} (uniform first)")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE]")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2, 3, 4], help="comma list")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    p.add_argument("--dead-share", type=float, default=0.5, help="env.dead_share of the headline")
    p.add_argument("--sweep", action="store_true", help="the w sweep instead of the headline")
    p.add_argument("--sweep-arms", default="learnability,ucb_learn")
    p.add_argument("--ws", default=",".join(map(str, WS)), help="dead shares of the sweep")
    p.add_argument("--reuse", type=Path, metavar="JSON", action="append", default=[],
                   help="an earlier headline or sweep result whose runs stand for their w (not rerun)")
    p.add_argument("--chain", action="store_true", help="the recommended arm vs uniform on the chain ladder")
    p.add_argument("--persistence", action="store_true",
                   help="two profiles of the starting policy with fresh answers: is a pass rate the prompt's?")
    p.add_argument("--transfer", action="store_true",
                   help="uniform and each skill trained alone: does one skill move the others?")
    p.add_argument("--recommended", default="lilo", help="arm(s) for --chain, comma list")
    p.add_argument("--tag", default=None)
    p.add_argument("--quick", action="store_true", help="smoke: uniform + learnability, 1 seed, 4 steps")
    p.add_argument("--from-results", type=Path, metavar="JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.arms, args.seeds, args.steps = "uniform,learnability", [0], 4
        args.set += ["eval.every=2", "env.eval_size=4", "model.warmup.steps=60", "trainer.prompts_per_step=8"]
    return args


# ---------------------------------------------------------------- runs


def profile_prior(cfg, out: Path) -> Path:
    """`rlcurr profile` (G = 8) of the starting policy of `cfg` (its model and pools: the config
    is written out as a recipe and profiled as a user would), into `out`."""
    from rlcurr.cli import main as cli
    from rlcurr.config import dump_config

    with tempfile.TemporaryDirectory() as d:
        recipe = Path(d) / "recipe.yaml"
        recipe.write_text(dump_config(cfg))
        code = cli(["profile", str(recipe), "--samples", "8", "--out", str(out), "--overwrite"])
    if code:
        raise SystemExit(f"rlcurr profile failed ({code})")
    return out


def run_arms(recipe: Path, arms: dict[str, list[str]], seeds: list[int], overrides: list[str], tag: str) -> dict:
    """Every arm on every seed from one warmed model; profiled arms get their profile first."""
    model = C.warm_model(recipe, overrides)
    print(f"{tag}: {list(arms)} x seeds {seeds}, model {model}", flush=True)
    per_arm: dict[str, list[dict]] = {name: [] for name in arms}
    for seed in seeds:
        for name, extra in arms.items():
            extra = list(extra)
            if name in PROFILED:  # the profile sees the model and pools the arm starts from
                base = C.build_config(recipe, [*overrides, f"seed={seed}"], model_path=model,
                                      run_dir=C.RUNS / tag / f"{name}_seed{seed}")
                out = profile_prior(base, C.RUNS / tag / f"{name}_seed{seed}_profile")
                extra.append(f"curriculum.prompts.prior={out}")
            cfg = C.build_config(recipe, [*overrides, f"seed={seed}", *extra], model_path=model,
                                 run_dir=C.RUNS / tag / f"{name}_seed{seed}")
            run = C.run_config(cfg)
            run.info.update(arm=name, seed=seed)
            summary = summarise_run(run)
            per_arm[name].append(summary)
            print(f"  {name:>14} seed {seed}: {len(run.steps)} steps in {run.wall_s:.0f} s, final learnable mean "
                  f"{summary['final_accuracy_mean']:.3f}, answers {summary['spent']['answers']}", flush=True)
    return per_arm


def summarise_run(run: C.Run) -> dict:
    """bench/curriculum.py's summary, with the learnable mean over the skills (hard-dead eval set
    out), the hard-dead accuracy kept apart, and a profile's answers added to every point."""
    curve = []
    spent = {"answers": 0, "tokens": 0, "seconds": 0.0}
    by_step = {}
    for m in run.steps:
        spent = {"answers": spent["answers"] + m["rollout/answers_generated"],
                 "tokens": spent["tokens"] + m["rollout/tokens_generated"],
                 "seconds": spent["seconds"] + m["time/step"]}
        by_step[m["step"]] = spent
    profile = int(next((m.get("profile/answers", 0) for m in run.metrics if m.get("step") == -1), 0))
    skills = [k.removeprefix("eval/accuracy/") for k in C.eval_keys(run)]
    learn = [d for d in skills if d != HARD_DEAD]
    for e in run.evals:
        at = by_step.get(e["step"], {"answers": 0, "tokens": 0, "seconds": 0.0})
        acc = {d: e[f"eval/accuracy/{d}"] for d in learn}
        curve.append({"step": e["step"], "answers": at["answers"] + profile, "tokens": at["tokens"],
                      "seconds": at["seconds"], "accuracy_mean": statistics.fmean(acc.values()), "accuracy": acc,
                      "hard_dead": e.get(f"eval/accuracy/{HARD_DEAD}")})
    start, final = curve[0]["accuracy"], curve[-1]["accuracy"]
    return {"seed": run.info["seed"], "curve": curve, "start_accuracy": start, "final_accuracy": final,
            "final_accuracy_mean": curve[-1]["accuracy_mean"], "share_of_answers": CB.share_of_answers(run),
            "forgetting": 0.0, "hard_dead": [curve[0]["hard_dead"], curve[-1]["hard_dead"]],
            "profile_answers": profile,
            "spent": {k: curve[-1][k] for k in ("answers", "tokens", "seconds")}, "wall_s": run.wall_s}


# ---------------------------------------------------------------- figures


def precondition(uniform: list[dict]) -> dict:
    """Uniform's gain on the learnable mean (before RL -> end), mean over seeds: >= 0.15 needed."""
    gains = [r["final_accuracy_mean"] - r["curve"][0]["accuracy_mean"] for r in uniform]
    return {"uniform_gain": C.with_ci(gains), "passed": statistics.fmean(gains) >= CB.MIN_GAIN,
            "min_gain": CB.MIN_GAIN}


def analyse(per_arm: dict[str, list[dict]], plot_to: Path | None) -> dict:
    figures = {"precondition": precondition(per_arm["uniform"]), "summary": CB.summarise_arms(per_arm),
               "to_target": {w: CB.to_target(per_arm, w) for w in ("answers", "tokens", "seconds")},
               "gap_at_equal_answers": CB.gap_at_equal_answers(per_arm),
               "hard_dead_final": {name: C.mean_std([r["hard_dead"][1] for r in runs if r["hard_dead"][1] is not None]
                                                    or [float("nan")]) for name, runs in per_arm.items()}}
    pre = figures["precondition"]
    print(f"\nprecondition: uniform lifts the learnable mean by {pre['uniform_gain']['mean']:+.3f} "
          f"[{pre['uniform_gain']['ci95'][0]:+.3f}, {pre['uniform_gain']['ci95'][1]:+.3f}] -> "
          f"{'PASSED' if pre['passed'] else 'FAILED'} (>= {pre['min_gain']})")
    CB.print_report(None, figures["summary"], figures["to_target"], figures["gap_at_equal_answers"])
    print("\nheld-out hard-dead prompts (no hints at evaluation), final accuracy: "
          + ", ".join(f"{n} {m:.3f}" for n, (m, _) in figures["hard_dead_final"].items()))
    if plot_to is not None:
        CB.plot(per_arm, plot_to)
    return figures


def sweep(args, overrides: list[str]) -> dict:
    """uniform + the sweep arms at each w; the answers ratio to uniform per w with its interval."""
    names = ["uniform", *[a for a in args.sweep_arms.split(",") if a]]
    arms = {n: ARMS[n] for n in names}
    seeds = args.seeds
    out = {}
    for w in [float(x) for x in args.ws.split(",")]:
        reused = reused_runs(args.reuse, w, names, seeds, overrides)  # read when reached: a headline may finish meanwhile
        missing = {n: a for n, a in arms.items() if n not in reused}
        fresh = run_arms(args.recipe, missing, seeds, [*overrides, f"env.dead_share={w}"], f"realistic_w{w}") if missing else {}
        per_arm = {n: reused.get(n) or fresh[n] for n in names}
        targets = CB.to_target(per_arm, "answers")
        out[str(w)] = {"runs": per_arm, "answers_to_target": targets, "bound_answers_ratio": 1 - w}
        print(f"w = {w}: " + ", ".join(f"{n} {C.fmt(t['ratio_mean'], None, 2)} {t['ratio_ci95']}"
                                      for n, t in targets.items() if n != "uniform"), flush=True)
    return out


def reused_runs(paths: list[Path], w: float, names: list[str], seeds: list[int],
                overrides: list[str]) -> dict[str, list[dict]]:
    """The runs at dead share w of each arm in `names` that an earlier result (`--reuse`, run with
    the same overrides) holds on every one of `seeds`: a headline (its runs at its dead share) or a
    sweep (its runs per w)."""
    found: dict[str, list[dict]] = {}
    for path in paths:
        done = json.loads(path.read_text())
        theirs = done["settings"]["overrides"] if "settings" in done else done.get("overrides", [])
        if theirs != overrides:
            raise SystemExit(f"{path}: ran with overrides {theirs}, not {overrides}")
        by_w = ({float(k): v["runs"] for k, v in done["sweep"].items()} if "sweep" in done
                else {float(done["settings"]["dead_share"]): done["runs"]})
        for name, runs in by_w.get(w, {}).items():
            mine = sorted((r for r in runs if r["seed"] in seeds), key=lambda r: r["seed"])
            if name in names and name not in found and [r["seed"] for r in mine] == sorted(seeds):
                found[name] = mine
                print(f"w = {w}: {name} from {path}", flush=True)
    return found


def runs_for_seeds(args, arms: dict[str, list[str]], overrides: list[str], tag: str) -> dict[str, list[dict]]:
    """Every arm on every one of `args.seeds`: runs that earlier results hold (`--reuse`: same
    overrides and dead share; several JSONs, e.g. seeds split over two processes) stand for their
    seed, the rest are run now."""
    per_arm: dict[str, list[dict]] = {name: [] for name in arms}
    for path in args.reuse:
        earlier = json.loads(path.read_text())
        settings = earlier["settings"]
        if settings["overrides"] != overrides or float(settings["dead_share"]) != args.dead_share:
            raise SystemExit(f"{path}: ran with overrides {settings['overrides']} at dead share "
                             f"{settings['dead_share']}, not {overrides} at {args.dead_share}")
        for name in arms:
            seen = {r["seed"] for r in per_arm[name]}
            per_arm[name] += [r for r in earlier["runs"].get(name, []) if r["seed"] in args.seeds and r["seed"] not in seen]
    for seed in args.seeds:
        missing = {n: a for n, a in arms.items() if seed not in {r["seed"] for r in per_arm[n]}}
        if missing:
            for name, runs in run_arms(args.recipe, missing, [seed], [*overrides, f"env.dead_share={args.dead_share}"],
                                       tag).items():
                per_arm[name] += runs
    return {name: sorted(runs, key=lambda r: r["seed"]) for name, runs in per_arm.items()}


def transfer(args, overrides: list[str]) -> dict:
    """Uniform and one arm per skill (`curriculum.weights={skill: 1}`), same model and seeds; runs of
    earlier transfer results (`--reuse`, same overrides) stand for their seeds, which are not rerun."""
    from rlcurr.config import load_config

    skills = load_config(args.recipe).env.skills
    arms = {"uniform": ARMS["uniform"],
            **{f"{s}_only": ["curriculum.sampler=weights", f"curriculum.weights={{{s}: 1}}"] for s in skills}}
    per_arm = runs_for_seeds(args, arms, overrides, args.tag or "realistic_transfer")
    return transfer_figures(per_arm, skills)


def transfer_figures(per_arm: dict[str, list[dict]], skills: list[str]) -> dict:
    """The change of each skill's held-out accuracy (final - before RL) when ONLY skill s trains,
    mean +- std over seeds and its 95 % bootstrap interval, against the seed spread of that skill's
    change under uniform (its std over seeds): little transfer = every off-diagonal |mean change|
    below that spread."""
    def changes(runs: list[dict], skill: str) -> list[float]:
        return [r["final_accuracy"][skill] - r["start_accuracy"][skill] for r in sorted(runs, key=lambda r: r["seed"])]

    spread = {s: C.mean_std(changes(per_arm["uniform"], s))[1] for s in skills}
    matrix = {s: {t: C.mean_std(changes(per_arm[f"{s}_only"], t)) for t in skills} for s in skills}
    moved = {f"{s}->{t}": matrix[s][t][0] for s in skills for t in skills if s != t}
    interval = {f"{s}->{t}": C.bootstrap_ci(changes(per_arm[f"{s}_only"], t)) for s in skills for t in skills if s != t}
    beyond = {k: v for k, v in moved.items() if abs(v) >= spread[k.split("->")[1]]}
    seeds = sorted(r["seed"] for r in per_arm["uniform"])
    print(f"\nchange of held-out accuracy (mean +- std over seeds {seeds}); rows: the skill trained alone")
    C.print_table(["trained", *skills], [[s, *(C.fmt(*matrix[s][t], 2) for t in skills)] for s in skills]
                  + [["uniform", *(C.fmt(*C.mean_std(changes(per_arm["uniform"], t)), 2) for t in skills)]])
    print(f"seed spread under uniform: {', '.join(f'{s} {v:.2f}' for s, v in spread.items())}; "
          f"{len(beyond)} of {len(moved)} off-diagonal moves at or beyond it: {beyond}")
    print("95 % intervals excluding 0: " + str({k: [round(x, 3) for x in ci] for k, ci in interval.items()
                                                 if ci[0] > 0 or ci[1] < 0}))
    return {"runs": per_arm, "seeds": seeds, "matrix": matrix, "seed_spread": spread, "off_diagonal": moved,
            "off_diagonal_ci": interval, "beyond_spread": beyond, "passed": not beyond}


def correlation(a: dict[str, float], b: dict[str, float], uids: list[str], cell: dict | None = None) -> float:
    """Pearson r of the pass rates a[u] and b[u] over `uids`; with `cell` (uid -> its group, e.g.
    (skill, size)) each profile's mean over the group is subtracted first, so only what differs
    between prompts of one group counts."""
    import numpy as np

    x, y = np.array([a[u] for u in uids], float), np.array([b[u] for u in uids], float)
    if cell is not None:
        groups = [cell[u] for u in uids]
        for g in set(groups):
            m = np.array([h == g for h in groups])
            x[m], y[m] = x[m] - x[m].mean(), y[m] - y[m].mean()
    return float(np.corrcoef(x, y)[0, 1])


def persistence(args, overrides: list[str]) -> dict:
    """Two `rlcurr profile`s (G = 8) of the same starting policy over the same train pool, with
    fresh answers (rollout.seed 1000 + seed and 2000 + seed): the Pearson correlation of a prompt's
    pass rate between them, over every prompt, over the learnable ones, and over the learnable ones
    within a size (each profile's mean per skill and size subtracted first: what persists beyond
    the size that sets a prompt's band). Binomial noise at G = 8 caps r below 1."""
    model = C.warm_model(args.recipe, overrides)
    out: dict[str, dict] = {}
    for seed in args.seeds:
        base = [*overrides, f"seed={seed}", f"env.dead_share={args.dead_share}"]
        rates = []
        for k in (1000, 2000):
            cfg = C.build_config(args.recipe, [*base, f"rollout.seed={k + seed}"], model_path=model,
                                 run_dir=C.RUNS / "persistence" / f"seed{seed}_{k}")
            folder = profile_prior(cfg, C.RUNS / "persistence" / f"seed{seed}_{k}_profile")
            rows = C.read_jsonl(folder / "profile.jsonl")
            rates.append({r["uid"]: r["passes"] / r["answers"] for r in rows})
        env = cfg.env.build(seed)
        size = {p.uid: (d, p.columns["size"]) for d in env.distributions() for p in env.train_prompts(d)}
        uids = sorted(set(rates[0]) & set(rates[1]))
        learn = [u for u in uids if "/learn/" in u]

        out[str(seed)] = {"prompts": len(uids), "learnable": len(learn), "r_all": correlation(*rates, uids),
                          "r_learnable": correlation(*rates, learn),
                          "r_learnable_within_size": correlation(*rates, learn, cell=size)}
        print(f"seed {seed}: {out[str(seed)]}", flush=True)
    summary = {k: C.with_ci([v[k] for v in out.values()]) for k in ("r_all", "r_learnable", "r_learnable_within_size")}
    print(json.dumps(summary, indent=1))
    return {"per_seed": out, "summary": summary}


def plot_sweep(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ws = sorted(float(w) for w in result)
    names = [n for n in result[str(ws[0])]["answers_to_target"] if n != "uniform"]
    for name in names:
        means = [result[str(w)]["answers_to_target"][name]["ratio_mean"] for w in ws]
        cis = [result[str(w)]["answers_to_target"][name]["ratio_ci95"] for w in ws]
        ax.errorbar(ws, means, yerr=[[m - c[0] for m, c in zip(means, cis)], [c[1] - m for m, c in zip(means, cis)]],
                    marker="o", capsize=3, label=name)
    ax.plot(ws, [1 - w for w in ws], "k--", label="perfect dead-prompt skipping: 1 - w")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="dead share w (profiled at 0/8 or 8/8)", ylabel="answers to uniform's accuracy, arm / uniform",
           title="saving vs dead share (mean, 95 % CI)")
    ax.legend(fontsize=8)
    C.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_results:
        result = json.loads(args.from_results.read_text())
        if "runs" in result:
            result.update(analyse(result["runs"], plot_to=args.from_results.with_suffix(".png")))
        return result
    overrides = CB.overrides(args)
    if args.sweep:
        result = sweep(args, overrides)
        if not args.quick:
            C.write_result(args.tag or "realistic_sweep", {"sweep": result, "seeds": args.seeds, "overrides": overrides}, C.command_line())
            plot_sweep(result, C.RESULTS / f"{args.tag or 'realistic_sweep'}.png")
        return result
    if args.persistence:
        return C.save_bench(args.tag or "realistic_persistence", args, {}, overrides, **persistence(args, overrides))
    if args.transfer:
        result = transfer(args, overrides)
        return C.save_bench(args.tag or "realistic_transfer", args, {}, overrides, **result)
    if args.chain:
        args.recipe = C.RECIPES / "chain_uniform.yaml"
        arms = {"uniform": ARMS["uniform"], **{a: ARMS[a] for a in args.recommended.split(",")}}
        per_arm = {name: [CB.summarise_run(r) for r in runs] for name, runs in
                   C.run_bench(args.tag or "realistic_chain", args.recipe, arms,
                               args.seeds, overrides)[0].items()}
        figures = {"to_target": CB.to_target(per_arm, "answers"), "gap_at_equal_answers": CB.gap_at_equal_answers(per_arm)}
        print(json.dumps({k: {n: v for n, v in f.items() if n != "uniform"} for k, f in figures.items()}, indent=1,
                         default=str)[:3000])
        return C.save_bench(args.tag or "realistic_chain", args, arms, overrides, runs=per_arm, **figures)
    arms = CB.arms_from(args, ARMS)
    tag = args.tag or "realistic"
    per_arm = runs_for_seeds(args, arms, overrides, tag)
    figures = analyse(per_arm, plot_to=None if args.quick else C.RESULTS / f"{tag}.png")
    return C.save_bench(tag, args, arms, overrides, runs=per_arm, **figures)


if __name__ == "__main__":
    main()
