"""Speed against a peer: rlcurr (HF engine sync and async, vLLM engine) vs TRL's GRPOTrainer, on CPU.

Two workloads, run one after the other in one invocation and reported side by side:

- `mixed` (the realistic case): a tiny Qwen2 of tens of millions of parameters (27M by default),
  SFT-warmed on the arithmetic task until its answers at temperature 1 are right part of the time:
  most groups have mixed rewards, some are all-right or all-wrong. Default: 1-digit additions
  (add1), 60 SFT steps of 64 examples at peak lr 6e-4 (`--mixed-distributions`, `--sft-steps`,
  `--sft-lr`; the quickstart recipe's warm-up machinery, cached under $RLCURR_CACHE/warm, about
  1 minute on 2 cores the first time). Measured on that model, 50 prompts x 8 answers at
  temperature 1: reward mean 0.36, zero-variance groups 10 %. Its answers are short (the model
  stops with EOS). rlcurr runs with its defaults, so the forward/backward of answers with
  advantage 0 (the zero-variance groups) is skipped. The bench prints each system's measured
  reward mean and zero-variance share of the timed steps, and a note if a reward mean leaves
  0.2-0.8.
- `raw` (the machinery alone): the same shape, random init, no warm-up, 2-digit additions (add2):
  (almost) every answer runs to max_tokens and is wrong, every reward is 0. rlcurr runs with `algo.skip_zero_advantage=false`
  (with the skip it would train on nothing), so both trainers do the same work.

Same for every system within a workload: model directory, prompt pool (envs/arith, seed 0),
reward (rlcurr's exact_match, which has TRL's reward contract), answers per prompt, prompts per
step, max tokens, temperature 1, learning rate (constant), clipping (0.2 / 0.28), token-mean loss,
no KL (beta = 0), one optimizer step per batch, one micro-batch, no gradient checkpointing.

Systems:
- `trl`: GRPOTrainer, generating with transformers' `generate` on the training model itself (its
  vLLM modes need a GPU server or colocated GPU vLLM, so they are not compared here).
- `rlcurr-hf`: the synchronous loop (generate, score, learn, sync weights), HF engine.
- `rlcurr-hf-async`: the same plus `trainer.max_staleness=1`: the rollout of step t+1 runs, with
  the weights from before step t's update (its answers are one version stale when trained on),
  while the learner updates on step t; on CPU the cores are split, half to the learner actor,
  half to the rollout worker. The run has one
  extra step at the end that is not timed: the last step has nothing left to generate, so timing
  it would flatter the overlap.
- `rlcurr-vllm` (optional): the synchronous loop with vLLM as the rollout engine.
What a step contains differs a little and is stated, not hidden: rlcurr copies the learner's
weights into the rollout engine (`sync`), TRL generates with the training model itself; with one
optimizer step both take the old logprobs from the training forward (no separate pass).

Measured, for each system: seconds per step and seconds per 1k generated answer tokens (mean over
`--steps` steps after `--warmup` untimed ones), the reward mean and the share of zero-variance
groups of the timed steps, rlcurr's phases (plan, rollout, reward, learn, sync as shares of the
step), the learner actor's busy seconds (`time/learner`) and the share of the step outside
generation and learner (`time/outside_gen_learn_frac`); ratios rlcurr-X / TRL next to the goals
(mixed: rlcurr-hf <= 0.7, rlcurr-hf-async <= 0.5 of TRL's s/step; raw: rlcurr-hf <= 1.0).

The physical limit: the learner's achieved FLOP/s against the machine's measured matmul peak
(best of `--peak-reps` fp32 `torch.mm` of two `--peak-size` square matrices after one warm-up
product, 2 size^3 FLOPs each; at the bench process's torch threads = all cores, which the
synchronous learner gets, and at cores // 2, which the asynchronous learner gets). Learner FLOPs
of a step, one forward + backward per trained token:
    F = T_trained x (6 N + 12 L d S)
with N the model's parameters (embeddings included: they are tied to the output layer), L layers,
d hidden size, S the mean trained sequence length (prompt + answer tokens; the attention term
counts the full S x S score and value products per layer, forward + backward), and
    T_trained = (answers / n x prompt tokens + answers x answer tokens per answer) x (1 - skipped share),
since rlcurr's learner puts each group's prompt through the model once, followed by its n
answers (`batching.answer_hidden`, shared prompts; TRL's puts it through once per answer,
n times the prompt's work); answer tokens are the step's `tokens` metric, the prompt length is the mean over the
prompt pool under the model's tokenizer (the prompts a step drew are not logged: an
approximation), and the skipped share is `learner/skipped_answers_frac` (answers with advantage
0 the learner left out; taken as average-length answers). Padding is not counted (useful FLOPs).
Achieved FLOP/s = F / mean `time/learner`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

PHASES = ("plan", "rollout", "reward", "guide", "learn", "sync")
SYSTEMS = ("trl", "rlcurr-hf", "rlcurr-hf-async", "rlcurr-vllm")
WORKLOADS = ("mixed", "raw")
# s/step of rlcurr-X over TRL's, per workload: the goals the bench reports against
GOALS = {"mixed": {"rlcurr-hf": 0.7, "rlcurr-hf-async": 0.5}, "raw": {"rlcurr-hf": 1.0}}
RAW_DISTRIBUTIONS = ["add2"]
MIXED_BAND = (0.2, 0.8)  # the mixed workload's intended reward mean at temperature 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--systems", default="trl,rlcurr-hf,rlcurr-hf-async", help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument("--workloads", default="mixed,raw", help="comma list of mixed, raw")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--n", type=int, default=8, help="answers per prompt")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--mixed-distributions", default="add1", help="mixed workload: arith distributions (comma list)")
    p.add_argument("--sft-steps", type=int, default=60, help="mixed workload: SFT warm-up steps (batch 64)")
    p.add_argument("--sft-lr", type=float, default=6e-4, help="mixed workload: SFT warm-up peak learning rate")
    p.add_argument("--peak-size", type=int, default=2048, help="torch.mm peak: square matrix size")
    p.add_argument("--peak-reps", type=int, default=3, help="torch.mm peak: timed products (best taken)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3,
                   help="every system runs once per round (order reversed every other round); ratios per round, "
                        "mean and 95 %% interval over rounds")
    p.add_argument("--quick", action="store_true", help="smoke run: small model, 1 timed step, tiny warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate = 128, 2, 2, 2, 256
        args.prompts, args.n, args.max_tokens, args.steps = 4, 4, 8, 1
        args.sft_steps, args.sft_lr, args.peak_size, args.peak_reps = 10, 3e-3, 512, 2
    for s in args.systems.split(","):
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    for w in args.workloads.split(","):
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    return args


# ---------------------------------------------------------------- shared inputs


def tiny_config(args):
    from rlcurr.config import TinyModelConfig

    return TinyModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                           num_kv_heads=args.kv_heads, intermediate_size=args.intermediate)


def build_model(args) -> Path:
    """The random-init tiny model (raw workload), cached by its shape under $RLCURR_CACHE/bench."""
    from rlcurr.learner.models import build_tiny_model
    from rlcurr.learner.prepare import cache_root

    tiny = tiny_config(args)
    key = hashlib.sha256(json.dumps([tiny.model_dump(), args.seed]).encode()).hexdigest()[:16]
    out = cache_root() / "bench" / key
    if not (out / "config.json").is_file():
        build_tiny_model(tiny, out, args.seed)
    return out


def warm_overrides(args) -> list[str]:
    """The quickstart recipe turned into the mixed workload's model: our shape, our task, our warm-up."""
    t = tiny_config(args)
    return [f"seed={args.seed}", f"env.distributions=[{args.mixed_distributions}]",
            f"model.tiny.hidden_size={t.hidden_size}", f"model.tiny.num_layers={t.num_layers}",
            f"model.tiny.num_heads={t.num_heads}", f"model.tiny.num_kv_heads={t.num_kv_heads}",
            f"model.tiny.intermediate_size={t.intermediate_size}",
            f"model.warmup.steps={args.sft_steps}", f"model.warmup.lr={args.sft_lr}", "model.warmup.batch_size=64"]


def workload_model(args, workload: str) -> Path:
    if workload == "raw":
        return build_model(args)
    t0 = time.perf_counter()
    out = C.warm_model(C.RECIPES / "quickstart.yaml", warm_overrides(args))  # cached after the first time
    print(f"  warmed model {out} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def distributions(args, workload: str) -> list[str]:
    return RAW_DISTRIBUTIONS if workload == "raw" else args.mixed_distributions.split(",")


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


def prompts(dists: list[str]) -> list[tuple[str, str]]:
    """(question, answer) pairs: the train pools of envs/arith, seed 0."""
    from envs.arith import ArithConfig

    env = ArithConfig(distributions=dists).build(0)
    return [(p.question, p.answer) for d in dists for p in env.train_prompts(d)]


def mean_prompt_tokens(model_dir: Path, dists: list[str]) -> float:
    """Mean prompt length in tokens over the pool, encoded as rollouts encode it."""
    from envs.arith import ArithConfig
    from rlcurr.learner.models import load_tokenizer
    from rlcurr.prompting import encode_prompt, format_env_prompt

    tok, env_cfg = load_tokenizer(model_dir), ArithConfig(distributions=dists)
    return statistics.fmean(len(encode_prompt(tok, format_env_prompt(tok, env_cfg, q))) for q, _ in prompts(dists))


def mm_peak(size: int, reps: int, threads: int) -> float:
    """FLOP/s of the best of `reps` fp32 size x size torch.mm at `threads` threads (after one warm-up)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
        torch.mm(a, b)
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return 2.0 * size**3 / best
    finally:
        torch.set_num_threads(old)


def learner_flops(n_params: int, layers: int, hidden: int, answers: float, answer_tokens: float,
                  prompt_len: float, skipped_frac: float, n: int) -> float:
    """One step's learner FLOPs, F = T_trained x (6 N + 12 L d S) (see the module docstring)."""
    seq = prompt_len + answer_tokens / max(answers, 1)
    trained = (answers / n * prompt_len + answer_tokens) * (1.0 - skipped_frac)
    return trained * (6.0 * n_params + 12.0 * layers * hidden * seq)


# ---------------------------------------------------------------- rlcurr


def run_rlcurr(args, system: str, workload: str, model_dir: Path, dists: list[str]) -> dict:
    engine = "vllm" if system == "rlcurr-vllm" else "hf"
    k = 1 if system == "rlcurr-hf-async" else 0
    extra = ["algo.skip_zero_advantage=false"] if workload == "raw" else []
    if k:
        extra.append(f"trainer.max_staleness={k}")
    steps = args.warmup + args.steps + k  # async: the last k steps have nothing to overlap with, untimed
    cfg = C.build_config(C.RECIPES / "quickstart.yaml", [
        f"seed={args.seed}", f"env.distributions=[{','.join(dists)}]", "env.eval_size=1", f"rollout.engine={engine}",
        f"rollout.n={args.n}", f"rollout.max_tokens={args.max_tokens}", "rollout.temperature=1.0",
        f"trainer.prompts_per_step={args.prompts}", f"trainer.steps={steps}", "eval.every=0",
        f"learner.lr={args.lr}", "learner.schedule.name=constant", "learner.schedule.warmup_steps=0",
        "algo.clip_low=0.2", "algo.clip_high=0.28", "algo.loss_agg=token-mean", "algo.kl_coef=0.0",
        f"algo.micro_batch_size={args.prompts * args.n}", "algo.mini_batches=1", "algo.epochs=1", *extra,
    ], model_path=model_dir, run_dir=C.RUNS / f"speed_trl_{workload}_{system}")
    run = C.run_config(cfg)
    timed = run.steps[args.warmup:args.warmup + args.steps]

    def mean(key, default=0.0):
        return statistics.fmean(m.get(key, default) for m in timed)

    secs = [m["time/step"] for m in timed]
    tokens = [m["tokens"] for m in timed]
    out = summarise(system, secs, tokens, reward_mean=mean("reward/mean"), zero_var_frac=mean("zero_variance_frac"))
    phases = {ph: mean(f"time/{ph}") for ph in PHASES}
    out["phases_s"] = {k_: v for k_, v in phases.items() if k_ != "guide" or v >= 0.005}  # guide: only if used
    out["learner_s"] = mean("time/learner", float("nan"))
    out["outside_gen_learn_frac"] = mean("time/outside_gen_learn_frac", float("nan"))
    out["skipped_answers_frac"] = mean("learner/skipped_answers_frac")
    out["answers_per_step"] = mean("groups") * args.n
    out["overrides"] = extra
    return out


# ---------------------------------------------------------------- TRL


def run_trl(args, workload: str, model_dir: Path, dists: list[str]) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlcurr.rewards.builtin import exact_match

    generated: list[int] = []  # answer tokens generated per step (the reward sees every answer once)
    rewards: list[list[float]] = []  # each step's rewards, in TRL's order (the n answers of a prompt adjacent)

    def reward(prompts, completions, completion_ids=None, answer=None, **kw):
        generated.append(sum(len(c) for c in completion_ids))
        r = exact_match(prompts, completions, answer=answer)
        rewards.append([float(x) for x in r])
        return r

    reward.__name__ = "exact_match"

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.seconds.append(time.perf_counter() - self.t0)

    pairs = prompts(dists)
    random.Random(args.seed).shuffle(pairs)
    data = Dataset.from_dict({"prompt": [q for q, _ in pairs], "answer": [a for _, a in pairs]})
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    batch = args.prompts * args.n
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, use_cpu=True, bf16=False, seed=args.seed, max_steps=args.warmup + args.steps,
            per_device_train_batch_size=batch, generation_batch_size=batch, gradient_accumulation_steps=1,
            num_generations=args.n, max_completion_length=args.max_tokens, temperature=1.0, top_p=1.0,
            learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=1.0, optim="adamw_torch", beta=0.0, epsilon=0.2, epsilon_high=0.28,
            loss_type="dapo", num_iterations=1, scale_rewards="group", gradient_checkpointing=False,
            logging_steps=1, save_strategy="no", report_to="none", disable_dropout=True,
            dataloader_num_workers=0)
        timer = StepTimer()
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=cfg, train_dataset=data,
                              processing_class=tok, callbacks=[timer])
        trainer.train()
    done = len(timer.seconds)
    secs, tokens = timer.seconds[args.warmup:], generated[args.warmup:done]
    timed = rewards[args.warmup:done]
    groups = [step[i:i + args.n] for step in timed for i in range(0, len(step), args.n)]
    return summarise("trl", secs, tokens, reward_mean=statistics.fmean(x for step in timed for x in step),
                     zero_var_frac=sum(len(set(g)) == 1 for g in groups) / len(groups))


# ---------------------------------------------------------------- report


def summarise(system: str, secs: list[float], tokens: list[int], **extra) -> dict:
    return {"system": system, "s_per_step": statistics.fmean(secs), "s_per_step_each": secs,
            "tokens_per_step": statistics.fmean(tokens), "s_per_1k_tokens": 1000 * sum(secs) / max(sum(tokens), 1),
            **extra}


def add_flops(r: dict, n_params: int, args, prompt_len: float, peaks: dict) -> None:
    """The learner's FLOPs per step, achieved FLOP/s over `time/learner`, share of the relevant peak."""
    if not r.get("learner_s") or math.isnan(r["learner_s"]):
        return
    flops = learner_flops(n_params, args.layers, args.hidden, r["answers_per_step"], r["tokens_per_step"],
                          prompt_len, r["skipped_answers_frac"], args.n)
    threads_key = "learner_async" if r["system"] == "rlcurr-hf-async" else "learner_sync"
    peak = peaks[threads_key]
    achieved = flops / r["learner_s"]
    r["learner_flops"] = {"flops_per_step": flops, "achieved_flops": achieved, "peak_flops": peak["flops"],
                          "peak_threads": peak["threads"], "fraction_of_peak": achieved / peak["flops"],
                          "prompt_tokens_mean": prompt_len}


def over_rounds(workload: str, rounds: list[dict]) -> dict:
    """Each ratio per round, its mean and 95 % bootstrap interval over rounds, the goals judged on
    the mean; the last round's full results stay under "systems"."""
    keys = list(rounds[0]["ratios"])
    ratios = {k: C.with_ci([r["ratios"][k] for r in rounds]) for k in keys}
    goals = {k: {"goal_at_most": g, "value": ratios[f"{k}"]["mean"], "met": ratios[k]["mean"] <= g}
             for k, g in ((f"{name}/trl s_per_step", goal) for name, goal in GOALS[workload].items()) if k in ratios}
    print(f"\n== {workload}: ratios over {len(rounds)} round(s), mean [95 % CI] (per round)")
    for k, v in ratios.items():
        g = goals.get(k)
        print(f"  {k} = {v['mean']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] "
              f"({', '.join(f'{x:.2f}' for x in v['per_seed'])})"
              + (f"   goal <= {g['goal_at_most']}: {'met' if g['met'] else 'NOT met'}" if g else ""))
    return {"systems": rounds[-1]["systems"], "rounds": rounds,
            "ratios": {k: v["mean"] for k, v in ratios.items()}, "ratios_ci": ratios, "goals": goals}


def report_workload(workload: str, results: dict, quick: bool = False) -> dict:
    print(f"\n== workload {workload}: seconds per step (mean over timed steps), per 1k generated answer tokens")
    C.print_table(["system", "s/step", "answer tok/step", "s/1k tok", "reward", "zero-var", "skipped", "steps (s)"],
                  [[r["system"], f"{r['s_per_step']:.2f}", f"{r['tokens_per_step']:.0f}", f"{r['s_per_1k_tokens']:.2f}",
                    f"{r['reward_mean']:.3f}", f"{r['zero_var_frac']:.2f}",
                    f"{r['skipped_answers_frac']:.2f}" if "skipped_answers_frac" in r else "-",
                    " ".join(f"{s:.2f}" for s in r["s_per_step_each"])] for r in results.values()])
    for r in results.values():
        if "phases_s" in r:
            step = r["s_per_step"]
            print(f"{r['system']} phases (share of the step): "
                  + ", ".join(f"{k} {v:.2f}s ({100 * v / step:.0f}%)" for k, v in r["phases_s"].items())
                  + f"; learner busy {r['learner_s']:.2f}s ({100 * r['learner_s'] / step:.0f}%), "
                  f"outside generation+learner {100 * r['outside_gen_learn_frac']:.0f}%")
    for r in results.values():
        if "learner_flops" in r:
            f = r["learner_flops"]
            print(f"{r['system']} learner achieved {f['achieved_flops'] / 1e9:.1f} GFLOP/s = "
                  f"{100 * f['fraction_of_peak']:.1f} % of the measured torch.mm peak {f['peak_flops'] / 1e9:.1f} GFLOP/s "
                  f"({f['peak_threads']} thread(s); {f['flops_per_step'] / 1e9:.1f} GFLOP/step"
                  + (f", x {1 - r['skipped_answers_frac']:.2f} not skipped" if r["skipped_answers_frac"] else "") + ")")
    if workload == "mixed" and not quick:
        off = [r["system"] for r in results.values() if not MIXED_BAND[0] <= r["reward_mean"] <= MIXED_BAND[1]]
        if off:
            print(f"note: reward mean of {', '.join(off)} outside {MIXED_BAND}, not the intended mixed workload; "
                  f"change --sft-steps / --sft-lr / --mixed-distributions")
    ratios, goals = {}, {}
    if "trl" in results:
        base = results["trl"]
        for name, r in results.items():
            if name != "trl":
                ratios[f"{name}/trl s_per_step"] = r["s_per_step"] / base["s_per_step"]
                ratios[f"{name}/trl s_per_1k_tokens"] = r["s_per_1k_tokens"] / base["s_per_1k_tokens"]
        for name, goal in GOALS[workload].items():
            key = f"{name}/trl s_per_step"
            if key in ratios:
                goals[key] = {"goal_at_most": goal, "value": ratios[key], "met": ratios[key] <= goal}
    print(f"ratios, {workload} (< 1: rlcurr faster)")
    for k, v in ratios.items():
        g = goals.get(k)
        print(f"  {k} = {v:.2f}" + (f"   goal <= {g['goal_at_most']}: {'met' if g['met'] else 'NOT met'}" if g else ""))
    return {"ratios": ratios, "goals": goals}


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    systems, workloads = args.systems.split(","), args.workloads.split(",")
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    peaks = {"learner_sync": {"threads": threads, "flops": mm_peak(args.peak_size, args.peak_reps, threads)},
             "learner_async": {"threads": max(1, cores // 2),
                               "flops": mm_peak(args.peak_size, args.peak_reps, max(1, cores // 2))}}
    print(f"torch.mm peak ({args.peak_size}x{args.peak_size} fp32): "
          + ", ".join(f"{p['flops'] / 1e9:.1f} GFLOP/s at {p['threads']} thread(s)" for p in peaks.values()), flush=True)
    out = {"settings": {**vars(args)}, "peak": peaks, "workloads": {}}
    for workload in workloads:
        dists = distributions(args, workload)
        print(f"\n== workload {workload} ({','.join(dists)}) ...", flush=True)
        model_dir = workload_model(args, workload)
        n_params = count_params(model_dir)
        prompt_len = mean_prompt_tokens(model_dir, dists)
        out["settings"]["params"] = n_params
        print(f"model: {n_params / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers), "
              f"{args.prompts} prompts x {args.n} answers, max_tokens {args.max_tokens}, prompts {prompt_len:.1f} "
              f"tokens, {args.warmup} warm-up + {args.steps} timed steps, CPU ({cores} cores)", flush=True)
        rounds = []
        for k in range(args.rounds):  # the machine's speed drifts over minutes: ratios within a round
            results = {}
            for system in (systems if k % 2 == 0 else systems[::-1]):
                print(f"round {k + 1}/{args.rounds}: running {system} ...", flush=True)
                t0 = time.perf_counter()
                if system == "trl":
                    results[system] = run_trl(args, workload, model_dir, dists)
                else:
                    results[system] = run_rlcurr(args, system, workload, model_dir, dists)
                    add_flops(results[system], n_params, args, prompt_len, peaks)
                r = results[system]
                print(f"  {system}: {r['s_per_step']:.2f} s/step, reward mean {r['reward_mean']:.3f}, zero-variance "
                      f"groups {r['zero_var_frac']:.2f} ({time.perf_counter() - t0:.0f} s in all)", flush=True)
            rounds.append({"systems": {s: results[s] for s in systems}, **report_workload(workload, results, args.quick)})
        out["workloads"][workload] = {"model": str(model_dir), "distributions": dists, "params": n_params,
                                      **over_rounds(workload, rounds)}
    if len(workloads) > 1:
        print("\n== side by side: s/step ratio to TRL")
        keys = sorted({k for w in out["workloads"].values() for k in w["ratios"] if k.endswith("s_per_step")})
        C.print_table(["ratio", *workloads],
                      [[k, *[f"{out['workloads'][w]['ratios'][k]:.2f}" if k in out["workloads"][w]["ratios"] else "-"
                             for w in workloads]] for k in keys])
    if not args.quick:
        C.write_result("speed_trl", out, C.command_line())
    return out


if __name__ == "__main__":
    main()
