"""Speed against a peer: rlcurr (HF engine, vLLM engine) vs TRL's GRPOTrainer, on CPU.

Same model (a random-init tiny Qwen2 of tens of millions of parameters, built locally, no SFT
warm-up: its answers run to max_tokens, so generation is a real share of the step), same
prompts (2-digit additions from envs/arith), same reward (rlcurr's exact_match, which has TRL's
reward contract), same answers per prompt, max tokens, temperature, learning rate, clipping
(0.2 / 0.28), token-mean loss, no KL (beta = 0), one optimizer step per batch, one micro-batch,
no gradient checkpointing. TRL generates with transformers' `generate` (its vLLM modes need a
GPU server or colocated GPU vLLM, so they are not compared here).

Measured: seconds per step and seconds per 1k generated answer tokens, mean over `--steps`
steps after `--warmup` untimed steps, for each system; rlcurr's phase breakdown (plan, rollout,
reward, learn, sync) from metrics.jsonl; ratios rlcurr / TRL last.

What a step contains differs a little and is stated, not hidden: rlcurr's step also computes
old logprobs of the batch with a separate forward pass and copies the learner's weights into
the rollout engine (`sync`); TRL with num_iterations = 1 skips the old-logprob pass and
generates with the training model itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

PHASES = ("plan", "rollout", "reward", "guide", "learn", "sync")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--systems", default="trl,rlcurr-hf,rlcurr-vllm", help="comma list of trl, rlcurr-hf, rlcurr-vllm")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: small model, 1 timed step")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate = 128, 2, 2, 2, 256
        args.prompts, args.n, args.max_tokens, args.steps = 4, 4, 8, 1
    return args


# ---------------------------------------------------------------- shared inputs


def build_model(args) -> Path:
    """The random-init tiny model, cached by its shape under $RLCURR_CACHE/bench."""
    from rlcurr.config import TinyModelConfig
    from rlcurr.learner.models import build_tiny_model
    from rlcurr.learner.prepare import cache_root

    tiny = TinyModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                           num_kv_heads=args.kv_heads, intermediate_size=args.intermediate)
    key = hashlib.sha256(json.dumps([tiny.model_dump(), args.seed]).encode()).hexdigest()[:16]
    out = cache_root() / "bench" / key
    if not (out / "config.json").is_file():
        build_tiny_model(tiny, out, args.seed)
    return out


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


def prompts(args) -> list[tuple[str, str]]:
    """(question, answer) pairs: the add2 train pool of envs/arith, seed 0."""
    from envs.arith import ArithConfig

    env = ArithConfig(distributions=["add2"]).build(0)
    return [(p.question, p.answer) for p in env.train_prompts("add2")]


# ---------------------------------------------------------------- rlcurr


def run_rlcurr(args, engine: str, model_dir: Path) -> dict:
    steps = args.warmup + args.steps
    cfg = C.build_config(C.RECIPES / "quickstart.yaml", [
        f"seed={args.seed}", "env.distributions=[add2]", "env.eval_size=1", f"rollout.engine={engine}",
        f"rollout.n={args.n}", f"rollout.max_tokens={args.max_tokens}", "rollout.temperature=1.0",
        f"trainer.prompts_per_step={args.prompts}", f"trainer.steps={steps}", "eval.every=0",
        f"learner.lr={args.lr}", "learner.schedule.name=constant", "learner.schedule.warmup_steps=0",
        "algo.clip_low=0.2", "algo.clip_high=0.28", "algo.loss_agg=token-mean", "algo.kl_coef=0.0",
        f"algo.micro_batch_size={args.prompts * args.n}", "algo.mini_batches=1", "algo.epochs=1",
    ], model_path=model_dir, run_dir=C.RUNS / f"speed_rlcurr_{engine}")
    run = C.run_config(cfg)
    timed = run.steps[args.warmup:]
    secs = [m["time/step"] for m in timed]
    tokens = [m["tokens"] for m in timed]
    phases = {ph: statistics.fmean(m.get(f"time/{ph}", 0.0) for m in timed) for ph in PHASES}
    return summarise(f"rlcurr-{engine}", secs, tokens, phases={k: v for k, v in phases.items() if v > 0})


# ---------------------------------------------------------------- TRL


def run_trl(args, model_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlcurr.rewards.builtin import exact_match

    generated: list[int] = []  # answer tokens generated per step (the reward sees every answer once)

    def reward(prompts, completions, completion_ids=None, answer=None, **kw):
        generated.append(sum(len(c) for c in completion_ids))
        return exact_match(prompts, completions, answer=answer)

    reward.__name__ = "exact_match"

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.seconds.append(time.perf_counter() - self.t0)

    pairs = prompts(args)
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
    secs, tokens = timer.seconds[args.warmup:], generated[args.warmup:len(timer.seconds)]
    return summarise("trl", secs, tokens)


# ---------------------------------------------------------------- report


def summarise(system: str, secs: list[float], tokens: list[int], phases: dict | None = None) -> dict:
    s_step = statistics.fmean(secs)
    out = {"system": system, "s_per_step": s_step, "s_per_step_each": secs,
           "tokens_per_step": statistics.fmean(tokens), "s_per_1k_tokens": 1000 * sum(secs) / max(sum(tokens), 1)}
    if phases:
        out["phases_s"] = phases
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_dir = build_model(args)
    n_params = count_params(model_dir)
    print(f"model: {n_params / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers), "
          f"{args.prompts} prompts x {args.n} answers, max_tokens {args.max_tokens}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, CPU ({C.hardware()['cores']} cores)", flush=True)
    results = {}
    for system in args.systems.split(","):
        print(f"running {system} ...", flush=True)
        if system == "trl":
            results[system] = run_trl(args, model_dir)
        elif system in ("rlcurr-hf", "rlcurr-vllm"):
            results[system] = run_rlcurr(args, system.split("-")[1], model_dir)
        else:
            raise SystemExit(f"unknown system {system!r}")

    print("\nseconds per step (mean over timed steps) and per 1k generated answer tokens")
    C.print_table(["system", "s/step", "answer tokens/step", "s/1k tokens", "steps (s)"],
                  [[r["system"], f"{r['s_per_step']:.2f}", f"{r['tokens_per_step']:.0f}", f"{r['s_per_1k_tokens']:.2f}",
                    " ".join(f"{s:.2f}" for s in r["s_per_step_each"])] for r in results.values()])
    for r in results.values():
        if "phases_s" in r:
            total = sum(r["phases_s"].values())
            print(f"{r['system']} phases: " + ", ".join(f"{k} {v:.2f}s ({100 * v / total:.0f}%)"
                                                      for k, v in r["phases_s"].items()))
    ratios = {}
    if "trl" in results:
        base = results["trl"]
        for name, r in results.items():
            if name != "trl":
                ratios[f"{name}/trl s_per_step"] = r["s_per_step"] / base["s_per_step"]
                ratios[f"{name}/trl s_per_1k_tokens"] = r["s_per_1k_tokens"] / base["s_per_1k_tokens"]
    print("\nratios (< 1: rlcurr faster)")
    for k, v in ratios.items():
        print(f"  {k} = {v:.2f}")
    result = {"settings": {**vars(args), "params": n_params}, "systems": results, "ratios": ratios}
    if not args.quick:
        C.write_result("speed_trl", result, C.command_line())
    return result


if __name__ == "__main__":
    main()
