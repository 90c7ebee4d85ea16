"""Rewards computed by models on the quickstart: does GRPO learn as much from a tiny reward model
(or a tiny judge) as from the exact-match rule, and does the model reward keep agreeing with the rule?

Setting: the quickstart (1-digit addition, a 0.9M Qwen2 SFT-warmed 50 steps, GRPO, 2 CPU cores),
one SFT-warmed policy shared by every run. The reward models are built by the recipes' own
`params.build` (rlcurr.rewards.tiny_scorers: trained on the 100 questions with perturbed answers
labelled by exact match, never on the policy's answers), cached in $RLCURR_CACHE.

Arms, same seeds and steps:
  rule   recipes/quickstart.yaml: exact_match is the reward
  rm     recipes/rm_quickstart.yaml: the reward model's P(right) is the ONLY reward
  judge  recipes/judge_quickstart.yaml: the yes/no judge is the only reward (one seed, a short run)

Measured: held-out exact-match accuracy (the environment's verifier, whatever the training
reward) before RL and at the end; reward/rm_agreement (model reward > 0.5 == exact match, on the
answers being trained on) averaged over the first 10 and the last 10 steps; and the agreement of
the reward model and of the judge with exact match on held-out answers: 8 answers sampled at
temperature 1 by the warmed policy for each eval prompt (answers no scorer was trained on), and
the reward model's agreement on 8 such answers per eval prompt from each rule / rm run's final
policy (`final_policy_agreement`; what the policy learned to write is what a hacked RM misjudges).
Intervals: 95 % bootstrap over seeds (bench/common.py).

Versions of the reward model (rlcurr.rewards.tiny_scorers.CLASSIFIER_VERSION): v1 was trained on
right answers and mostly plausible wrong numbers; GRPO on it learned to write letters it scored
~1.0 (kept in the JSON under `v1_hacked`). v2 adds malformed negatives (letters mixed with
digits, extra text around the sum, several numbers, empty answers) and whitespace-only positives.

    RLCURR_CACHE=/tmp/rlcache RLCURR_CPU_THREADS=1 nice -n 10 python bench/reward_model.py \
        --keep-previous v1_hacked --score-policies bench/runs/reward_model_v1/rm_seed{0,1,2}
    python bench/reward_model.py --quick     # smoke: 1 seed, a few steps
    python bench/reward_model.py --reuse     # read the runs a previous (interrupted) call finished
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

RECIPES = {"rule": C.RECIPES / "quickstart.yaml", "rm": C.RECIPES / "rm_quickstart.yaml",
           "judge": C.RECIPES / "judge_quickstart.yaml"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=200, help="GRPO steps of the rule and rm arms")
    p.add_argument("--judge-steps", type=int, default=100, help="GRPO steps of the judge run (seed 0)")
    p.add_argument("--quick", action="store_true", help="smoke: 1 seed, 6 steps, judge 4")
    p.add_argument("--name", default="reward_model", help="bench/results/<name>.json")
    p.add_argument("--reuse", action="store_true", help="read runs already finished in bench/runs/<name>/")
    p.add_argument("--keep-previous", metavar="KEY", default=None,
                   help="keep the figures of the existing bench/results/<name>.json under KEY of the new one")
    p.add_argument("--score-policies", nargs="*", default=[], metavar="RUN_DIR",
                   help="more finished runs whose final policy the reward model scores (e.g. older versions')")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.judge_steps, args.name = "0", 6, 4, "reward_model_quick"
    return args


def run_arm(arm: str, seed: int, steps: int, model: Path, tag: str, reuse: bool = False) -> dict:
    import time

    from rlcurr.trainer import Trainer

    cfg = C.build_config(RECIPES[arm], [f"seed={seed}", f"trainer.steps={steps}", "eval.every=25"],
                         model_path=model, run_dir=C.RUNS / tag / f"{arm}_seed{seed}")
    t0 = time.perf_counter()
    run = C.read_run(cfg.run_dir)
    if reuse and len(run.steps) == steps:
        print(f"  {arm:>5} seed {seed}: reusing the finished run in {cfg.run_dir}", flush=True)
    else:
        trainer = Trainer(cfg, log=lambda s: print("    " + s, flush=True) if "warning" in s else None)
        try:
            trainer.run()
        finally:
            trainer.rm_monitor.close()  # the reward actors: a bench runs many trainers in one process
            C.release(trainer)
        run = C.read_run(cfg.run_dir)
    evals = run.evals
    agree = [m["reward/rm_agreement"] for m in run.steps if "reward/rm_agreement" in m]
    out = {"seed": seed, "steps": len(run.steps), "wall_s": time.perf_counter() - t0 if not reuse else None,
           "accuracy_before": evals[0]["eval/accuracy_mean"], "accuracy_after": evals[-1]["eval/accuracy_mean"],
           "curve": [(m.get("step", -1), m["eval/accuracy_mean"]) for m in evals],
           "agreement_first10": statistics.fmean(agree[:10]) if agree else None,
           "agreement_last10": statistics.fmean(agree[-10:]) if agree else None,
           "alert_steps": sum(m.get("alert/rm_agreement", 0) for m in run.steps),
           "reward_errors": sum(m.get("reward/errors", 0) for m in run.steps)}
    print(f"  {arm:>5} seed {seed}: {out['steps']} steps, accuracy "
          f"{out['accuracy_before']:.2f} -> {out['accuracy_after']:.2f}, agreement "
          f"{C.fmt(out['agreement_first10'], digits=2)} -> {C.fmt(out['agreement_last10'], digits=2)}", flush=True)
    return out


def sample_answers(policy: Path, cfg, seed: int = 123) -> tuple[list, list, list, list]:
    """8 answers at temperature 1 by `policy` for every eval prompt: (prompts, references,
    completions, exact-match correct)."""
    from rlcurr.rewards.builtin import exact_match
    from rlcurr.rollout.hf_engine import HFEngine
    from rlcurr.types import GenRequest

    env = cfg.env.build(cfg.seed)
    eval_prompts = [p for d in env.distributions() for p in env.eval_prompts(d)]
    engine = HFEngine(str(policy), seed=seed)
    outs = engine.generate([GenRequest(engine.tokenizer(p.question)["input_ids"], 8, cfg.rollout.max_tokens, 1.0)
                            for p in eval_prompts])
    prompts = [p.question for p, cs in zip(eval_prompts, outs) for _ in cs]
    answers = [p.answer for p, cs in zip(eval_prompts, outs) for _ in cs]
    completions = [c.text for cs in outs for c in cs]
    correct = [v == 1.0 for v in exact_match(prompts, completions, answer=answers)]
    return prompts, answers, completions, correct


def agreement(scores, correct) -> float:
    pairs = [(s > 0.5) == ok for s, ok in zip(scores, correct) if s is not None]
    return sum(pairs) / len(pairs)


def rates(scores, correct) -> tuple[float, float]:  # true positive / true negative rates against exact match
    pos = [s > 0.5 for s, ok in zip(scores, correct) if s is not None and ok]
    neg = [s <= 0.5 for s, ok in zip(scores, correct) if s is not None and not ok]
    return sum(pos) / max(len(pos), 1), sum(neg) / max(len(neg), 1)


def reward_model():
    from rlcurr.rewards.model_rewards import RewardModelReward

    rm_spec = next(r for r in C.build_config(RECIPES["rm"], []).rewards if r.name == "reward_model")
    return RewardModelReward(**rm_spec.params)  # Ray is not running here: scored in this process


def held_out_agreement(model: Path) -> dict:
    """RM and judge against exact match on answers the warmed policy samples for the eval prompts."""
    from rlcurr.rewards.model_rewards import JudgeReward

    cfg = C.build_config(RECIPES["judge"], [], model_path=model)
    prompts, _, completions, correct = sample_answers(model, cfg)
    judge_spec = next(r for r in cfg.rewards if r.name == "judge")
    rm = reward_model()
    judge = JudgeReward(**judge_spec.params)
    rm_scores = rm(prompts=prompts, completions=completions)
    judge.judge_texts([judge.template.format(question=q, completion=c) for q, c in zip(prompts, completions)])
    judge_scores = []
    for q, c in zip(prompts, completions):
        try:
            judge_scores.append(judge(prompts=[q], completions=[c])[0])
        except ValueError:
            judge_scores.append(None)

    out = {"answers": len(completions), "correct_share": sum(correct) / len(correct),
           "distinct_answers": len(set(zip(prompts, completions))),
           "rm_agreement": agreement(rm_scores, correct), "rm_tpr_tnr": rates(rm_scores, correct),
           "judge_agreement": agreement(judge_scores, correct), "judge_tpr_tnr": rates(judge_scores, correct),
           "judge_unparseable_share": sum(s is None for s in judge_scores) / len(judge_scores),
           "rm_build": _build_info(rm.path), "judge_build": _build_info(judge.path)}
    print(f"held-out answers ({out['answers']}, {out['correct_share']:.2f} right): RM agreement "
          f"{out['rm_agreement']:.3f} (TPR/TNR {out['rm_tpr_tnr'][0]:.2f}/{out['rm_tpr_tnr'][1]:.2f}), judge "
          f"{out['judge_agreement']:.3f} (TPR/TNR {out['judge_tpr_tnr'][0]:.2f}/{out['judge_tpr_tnr'][1]:.2f}, "
          f"{out['judge_unparseable_share']:.3f} unparseable)", flush=True)
    return out


def final_policy_agreement(run_dir: Path, rm) -> dict:
    """The reward model against exact match on answers sampled by the run's last checkpoint."""
    import collections

    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*/model"), key=lambda p: int(p.parent.name[5:]))
    policy = ckpts[-1]
    cfg = C.build_config(RECIPES["rule"], [], model_path=policy)
    prompts, _, completions, correct = sample_answers(policy, cfg)
    scores = rm(prompts=prompts, completions=completions)
    off_format = [not c.strip().isdigit() for c in completions]  # anything but digits (and whitespace)
    wrong_but_high = collections.Counter(c for c, s, ok in zip(completions, scores, correct) if s > 0.5 and not ok)
    out = {"run": str(Path(run_dir)), "policy": str(policy), "answers": len(completions),
           "correct_share": sum(correct) / len(correct), "off_format_share": sum(off_format) / len(off_format),
           "rm_agreement": agreement(scores, correct), "rm_tpr_tnr": rates(scores, correct),
           "rm_mean_score_off_format": (statistics.fmean(s for s, o in zip(scores, off_format) if o)
                                        if any(off_format) else None),
           "top_answers": collections.Counter(completions).most_common(8),
           "top_wrong_scored_right": wrong_but_high.most_common(8)}
    print(f"  final policy of {run_dir}: {out['correct_share']:.2f} right, {out['off_format_share']:.2f} off format, "
          f"RM agreement {out['rm_agreement']:.3f} (TPR/TNR {out['rm_tpr_tnr'][0]:.2f}/{out['rm_tpr_tnr'][1]:.2f})",
          flush=True)
    return out


def _build_info(path: str) -> dict:
    import json

    f = Path(path) / "build.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def summary(runs: list[dict]) -> dict:
    def ci(key):
        xs = [r[key] for r in runs if r[key] is not None]
        return C.with_ci(xs) if xs else None

    gains = [r["accuracy_after"] - r["accuracy_before"] for r in runs]
    return {"accuracy_before": ci("accuracy_before"), "accuracy_after": ci("accuracy_after"),
            "gain": C.with_ci(gains), "agreement_first10": ci("agreement_first10"),
            "agreement_last10": ci("agreement_last10"), "runs": runs}


def plot(result: dict, path: Path, previous: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, s in result["arms"].items():
        curves = [r["curve"] for r in s["runs"]]
        steps = [x for x, _ in curves[0]]
        mean = [statistics.fmean(c[i][1] for c in curves) for i in range(len(steps))]
        ax.plot(steps, mean, marker="o", label=f"{arm}{' v2' if arm == 'rm' and previous else ''} "
                f"({len(curves)} seed{'s' if len(curves) > 1 else ''})")
    if previous and "rm" in previous.get("arms", {}):
        curves = [r["curve"] for r in previous["arms"]["rm"]["runs"]]
        steps = [x for x, _ in curves[0]]
        mean = [statistics.fmean(c[i][1] for c in curves) for i in range(len(steps))]
        ax.plot(steps, mean, marker="x", linestyle="--", color="grey",
                label=f"rm v1, hacked ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
    ax.set_xlabel("GRPO step (-1: before RL)")
    ax.set_ylabel("held-out exact-match accuracy")
    ax.set_title("quickstart trained by the rule, a reward model, a judge")
    ax.legend(fontsize=8)
    C.save_figure(fig, path)


def main(argv=None) -> None:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    import os

    import ray

    # a private Ray: a plain ray.init() joins a cluster another user `ray start`ed on this machine
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    previous = None
    if args.keep_previous:
        import json

        old = json.loads((C.RESULTS / f"{args.name}.json").read_text())
        keep = {k: v for k, v in old.items() if k not in ("bench",)}
        # figures kept earlier under other keys stay at the top level of the new result
        carried = {k: keep.pop(k) for k in list(keep) if k.startswith("v") and k[1:2].isdigit()}
        previous = keep
    model = C.warm_model(RECIPES["rule"])
    print(f"warmed policy: {model}", flush=True)
    held = held_out_agreement(model)  # also builds (and caches) the reward model and the judge
    tag = args.name
    arms = {}
    for arm in ("rule", "rm"):
        arms[arm] = summary([run_arm(arm, s, args.steps, model, tag, args.reuse) for s in seeds])
    arms["judge"] = summary([run_arm("judge", seeds[0], args.judge_steps, model, tag, args.reuse)])
    rm = reward_model()
    print("reward model on answers of the final policies:", flush=True)
    final = {arm: [final_policy_agreement(C.RUNS / tag / f"{arm}_seed{s}", rm) for s in seeds] for arm in ("rule", "rm")}
    final_summary = {arm: {"rm_agreement": C.with_ci([r["rm_agreement"] for r in rs]),
                           "correct_share": C.with_ci([r["correct_share"] for r in rs]),
                           "off_format_share": C.with_ci([r["off_format_share"] for r in rs]), "runs": rs}
                     for arm, rs in final.items()}
    extra = [final_policy_agreement(Path(d), rm) for d in args.score_policies]
    print()
    rows = []
    for arm, s in arms.items():
        def cell(key, s=s):
            v = s[key]
            return "n/a" if v is None else f"{v['mean']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
        rows.append([arm, len(s["runs"]), cell("accuracy_before"), cell("accuracy_after"), cell("gain"),
                     cell("agreement_first10"), cell("agreement_last10")])
    C.print_table(["arm", "seeds", "accuracy before", "after", "gain", "agreement first 10", "last 10"], rows)
    result = {"setting": {"seeds": seeds, "steps": args.steps, "judge_steps": args.judge_steps,
                          "recipes": {k: str(v.relative_to(C.BENCH_DIR.parent)) for k, v in RECIPES.items()},
                          "policy": str(model)},
              "held_out_agreement": held, "arms": arms, "final_policy_agreement": final_summary}
    if extra:
        result["other_policies_scored"] = extra
    if previous is not None:
        result.update(carried)
        result[args.keep_previous] = previous
    command = "RLCURR_CACHE=/tmp/rlcache RLCURR_CPU_THREADS=1 nice -n 10 python bench/reward_model.py " + \
        " ".join(sys.argv[1:] if argv is None else argv)
    C.write_result(args.name, result, command.strip())
    if not args.quick:
        plot(result, C.RESULTS / f"{args.name}.png", previous)
        print(f"wrote {C.RESULTS / (args.name + '.png')}")


if __name__ == "__main__":
    main()
