"""rlcurr's own learner on a GPU: seconds per GRPO step, tokens/s, model FLOPs utilisation (MFU) and
peak memory of `rlcurr.learner.learner.Learner.train_step` on a Qwen2-0.5B-shaped model, next to
the plain-torch measurement of bench/gpu_learner_mfu.py run in the same process on the same GPU.

Model: transformers' Qwen2 (`Qwen2Config` + `AutoModelForCausalLM.from_config`, random init) of
Qwen2-0.5B's shape (hidden 896, 24 layers, 14 query / 2 key-value heads, MLP 4864, vocabulary
151936, tied embeddings), saved to a temporary directory with rlcurr's character tokenizer (the
learner reads only its pad id; every synthetic token id lies above the special tokens, so the pad
id never occurs in the data). `Learner(..., dtype="bfloat16")`: fp32 master weights, gradients
and AdamW moments, bf16 compute under autocast (rlcurr.learner.precision), one rank, no LoRA.

Batch: `--prompts` groups of `--answers-per-prompt` answers sharing a prompt, every prompt
`--prompt-len` and every answer `--answer-len` random tokens, advantages the group-normalised
rewards of half right / half wrong answers (both signs, never 0, so the zero-advantage skip leaves
nothing out), constant engine logprobs (the parity metric runs as in training). GRPO defaults:
token-mean, one epoch, one mini-batch, so the learner reuses the training forward's logprobs as
the old ones: ONE forward + backward per micro-batch, then clipping and AdamW. Micro-batches of
`--micro-batch-size` answers (default: one group). Every step is timed on its own between
`torch.cuda.synchronize()` calls, after `--warmup` untimed steps; reported: median and a 95 %
percentile-bootstrap interval of the median over the timed steps. The plain-torch arm is timed the
same way, step by step, with bench/gpu_learner_mfu.py's own model, training step and FLOPs
function.

Tokens, three counts per step:
  - batch tokens: prompt + answer per answer, as separate sequences;
  - model tokens: each group's prompt once, plus every answer: the tokens the model must see;
  - tokens through the model: read from the model's inputs by a forward pre-hook (non-pad ids,
    and row x length slots with padding), so they show the layout the learner actually built,
    including a prompt copied again when a group does not fit one segment
    (rlcurr.learner.batching.prompt_segments). The hook also counts forwards with and without
    gradients, which shows the reused old-logprob pass (no gradient-free forward).

FLOPs per step: bench/gpu_learner_mfu.py's convention (PaLM appendix B, no discount for the causal
mask), its `flops_per_token`, applied to what the learner's step needs:
    model tokens x (6 N_body + 12 L H d_head S)  +  answer tokens x 6 V D
N_body = all parameters but the tied embedding / LM-head matrix (V x D): the learner applies the
head only at the positions that predict answer tokens (one per answer token; the input lookup is
free), so prompt tokens cost the body alone. S = prompt + answer length, the sequence each token
belongs to (a shared prompt's tokens are counted once, at their answers' S). Left out, as MFU
leaves them out: the recomputation of the chunked logits in the backward (activation
checkpointing of `batching.selective_logprobs`), the dense attention over a row's padding and
masked-out positions, duplicated prompt copies and padding (these show in the tokens through the
model), norms, softmax, the loss and AdamW. MFU = FLOPs per step / seconds per step / peak, with
the same dense bf16 peak table as bench/gpu_learner_mfu.py. The plain-torch arm counts
6 N + 12 L H d_head S for every token (its head runs at every position), as that bench does.

Memory: `torch.cuda.max_memory_allocated` over each timed step (the statistics reset before each),
next to `rlcurr.plan.estimate_memory`'s learner-rank estimate for a Config of the same shape
(model.path = the temporary model, rollout.max_tokens = answer length, prompt_tokens = prompt
length); the estimate's CUDA context line is not in `max_memory_allocated` and is shown apart.

Imports torch, transformers and rlcurr's learner only (no Ray, no vLLM). Results go to
bench/results/gpu_learner_rlcurr.json only from a GPU run.

    python bench/gpu_learner_rlcurr.py                   # on a GPU: 8 prompts x 8 answers, 256 + 512 tokens
    python bench/gpu_learner_rlcurr.py --cpu-smoke       # tiny model, CPU, 2 steps: checks the code runs
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import gpu_learner_mfu as mfu  # noqa: E402

NAME = "gpu_learner_rlcurr"
SMOKE_BATCH = dict(prompts=2, answers_per_prompt=2, prompt_len=8, answer_len=16, steps=2, warmup=1)


# ---------------------------------------------------------------- model, config, batch


def build_model_dir(shape: mfu.Shape, out_dir: Path, max_positions: int, seed: int = 0) -> Path:
    """A random-init transformers Qwen2 of `shape` (tied embeddings) + rlcurr's character tokenizer."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rlcurr.learner.models import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.mlp,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, rope_theta=shape.rope_theta, rms_norm_eps=shape.eps,
                         max_position_embeddings=max(max_positions, 32768), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_run_config(model_dir: Path, args):
    """The Config a recipe of this shape would give: the learner's and the memory estimate's input."""
    from rlcurr.config import build_config

    return build_config({
        "name": NAME, "model": {"path": str(model_dir), "dtype": "bfloat16"}, "env": {"name": "arith"},
        "rollout": {"n": args.answers_per_prompt, "max_tokens": args.answer_len},
        "algo": {"name": "grpo", "micro_batch_size": args.micro_batch_size},
        "learner": {"max_tokens_per_micro_batch": args.max_tokens_per_micro_batch},
        "trainer": {"prompts_per_step": args.prompts, "steps": args.warmup + args.steps}})


def synthetic_samples(prompts: int, answers_per_prompt: int, prompt_len: int, answer_len: int, vocab: int,
                      first_id: int, seed: int = 0) -> list:
    """GRPO groups: a random prompt each, random answers; the first ceil(G/2) answers of a group are
    'right' (reward 1), the rest wrong, advantages (r - mean) / std: both signs, never 0."""
    from rlcurr.types import TrainSample

    gen = torch.Generator().manual_seed(seed)
    rewards = [1.0 if g < math.ceil(answers_per_prompt / 2) else 0.0 for g in range(answers_per_prompt)]
    mean, std = statistics.fmean(rewards), statistics.pstdev(rewards)
    samples = []
    for _ in range(prompts):
        prompt = torch.randint(first_id, vocab, (prompt_len,), generator=gen).tolist()
        for r in rewards:
            answer = torch.randint(first_id, vocab, (answer_len,), generator=gen).tolist()
            samples.append(TrainSample(prompt_ids=prompt, response_ids=answer, advantage=(r - mean) / std,
                                       rollout_logprobs=[-2.0] * answer_len, reward=r))
    return samples


# ---------------------------------------------------------------- FLOPs


def learner_step_flops(shape: mfu.Shape, n_params: int, prompts: int, answers_per_prompt: int, prompt_len: int,
                       answer_len: int) -> dict:
    """Model FLOPs of one learner step (see the module docstring), with bench/gpu_learner_mfu.py's
    `flops_per_token`: model tokens x (6 N_body + attention) + answer tokens x 6 V D."""
    seq = prompt_len + answer_len
    body_params = n_params - shape.vocab * shape.hidden  # tied: the embedding matrix is the LM head
    body, attention = mfu.flops_per_token(shape, body_params, seq)
    whole, _ = mfu.flops_per_token(shape, n_params, seq)
    answer_tokens = prompts * answers_per_prompt * answer_len
    model_tokens = prompts * prompt_len + answer_tokens
    flops = model_tokens * (body + attention) + answer_tokens * (whole - body)
    return {"params": n_params, "body_params": body_params, "seq": seq, "answer_tokens": answer_tokens,
            "model_tokens": model_tokens, "batch_tokens": prompts * answers_per_prompt * seq,
            "flops_per_token_6N_body": body, "flops_per_token_attn": attention, "flops_per_answer_token_head":
            whole - body, "flops_per_step": flops, "flops_per_model_token": flops / model_tokens}


# ---------------------------------------------------------------- statistics


def median_ci(xs: list[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> dict:
    """Median of per-step values and a percentile-bootstrap interval of the median."""
    import numpy as np

    a = np.asarray(xs, dtype=float)
    medians = np.median(np.random.default_rng(seed).choice(a, size=(resamples, a.size)), axis=1)
    tail = (1 - level) / 2 * 100
    return {"median": float(np.median(a)), "ci95": [float(np.percentile(medians, tail)),
                                                     float(np.percentile(medians, 100 - tail))],
            "per_step": [float(x) for x in xs]}


def per_step_figures(seconds: list[float], tokens: dict[str, int], flops_per_step: float,
                     peak: float | None) -> dict:
    out = {"s_per_step": median_ci(seconds)}
    for name, n in tokens.items():
        out[f"{name}_per_s"] = median_ci([n / s for s in seconds])
    out["achieved_flops"] = median_ci([flops_per_step / s for s in seconds])
    if peak:
        out["mfu"] = median_ci([flops_per_step / s / peak for s in seconds])
    return out


# ---------------------------------------------------------------- the two arms


class ModelInputCounter:
    """Forward pre-hook on the learner's model: per forward, the non-pad token ids, the row x
    length slots, and whether gradients were on (tensors kept on the device until read)."""

    def __init__(self, model: torch.nn.Module, pad_id: int):
        self.pad_id, self.calls = pad_id, []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append(((ids != self.pad_id).sum(), ids.numel(), torch.is_grad_enabled()))

    def take(self) -> dict:
        calls, self.calls = self.calls, []
        return {"real_tokens": int(sum(int(c[0]) for c in calls)), "slots": sum(c[1] for c in calls),
                "grad_forwards": sum(1 for c in calls if c[2]), "no_grad_forwards": sum(1 for c in calls if not c[2])}


def sync(device: torch.device) -> None:
    mfu.sync(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def learner_arm(cfg, model_dir: Path, samples: list, warmup: int, steps: int, force_cpu: bool) -> dict:
    """Warm-up and timed `Learner.train_step` calls: per-step seconds, model inputs, peak memory."""
    import rlcurr.learner.learner as learner_module

    cpu = mock.patch.object(learner_module, "pick_device", lambda: torch.device("cpu")) if force_cpu \
        else contextlib.nullcontext()
    with cpu:
        learner = learner_module.Learner(str(model_dir), cfg.learner, cfg.algo, warmup + steps,
                                         dtype=cfg.model.dtype, seed=cfg.seed, temperature=cfg.rollout.temperature,
                                         response_limit=cfg.rollout.max_tokens)
    device = learner.device
    n_params = sum(p.numel() for p in learner.model.parameters())  # tied weights counted once
    counter = ModelInputCounter(learner.model, learner.pad_id)
    seconds, peaks, inputs, metrics = [], [], [], {}
    for step in range(warmup + steps):
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        metrics = learner.train_step(samples, step)
        sync(device)
        elapsed = time.perf_counter() - t0
        seen = counter.take()
        if step >= warmup:
            seconds.append(elapsed)
            peaks.append(peak_gib(device))
            inputs.append(seen)
    counter.handle.remove()
    out = {"device": str(device), "params": n_params, "seconds": seconds, "inputs_per_step": inputs,
           "loss": metrics.get("loss"), "grad_norm": metrics.get("grad_norm"),
           "skipped_answers_frac": metrics.get("learner/skipped_answers_frac", 0.0),
           "max_memory_gib": max(peaks) if device.type == "cuda" else None,
           "model_dtype": str(next(learner.model.parameters()).dtype).removeprefix("torch.")}
    del learner
    release(device)
    return out


def plain_arm(shape: mfu.Shape, batch: int, seq: int, warmup: int, steps: int, device: torch.device,
              seed: int = 0) -> dict:
    """bench/gpu_learner_mfu.py's model and training step (pure bf16), timed step by step."""
    torch.manual_seed(seed)
    model = mfu.Decoder(shape).to(device=device, dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=device.type == "cuda")
    ids_BT = torch.randint(0, shape.vocab, (batch, seq + 1), device=device)  # reads seq, predicts the next of each
    seconds, peaks = [], []
    loss = None
    for step in range(warmup + steps):
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        loss = mfu.train_step(model, opt, ids_BT)
        sync(device)
        if step >= warmup:
            seconds.append(time.perf_counter() - t0)
            peaks.append(peak_gib(device))
    dense, attention = mfu.flops_per_token(shape, n_params, seq)
    out = {"params": n_params, "batch": batch, "seq": seq, "seconds": seconds, "loss": float(loss.detach()),
           "flops_per_token_6N": dense, "flops_per_token_attn": attention,
           "flops_per_step": batch * seq * (dense + attention),
           "max_memory_gib": max(peaks) if device.type == "cuda" else None}
    del model, opt, ids_BT
    release(device)
    return out


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def learner_memory_estimate(cfg, prompt_len: int, gpu_memory_gib: float) -> dict:
    """`rlcurr.plan.estimate_memory`'s learner-rank lines for this Config (GiB)."""
    from rlcurr.plan import CUDA_CONTEXT_BYTES, GIB, estimate_memory

    est = estimate_memory(cfg, gpu_memory_gib=gpu_memory_gib, prompt_tokens=prompt_len)
    rank = next(g for g in est.gpus if g.kind.startswith("learner rank"))
    return {"total_gib": rank.total_bytes / GIB, "cuda_context_gib": CUDA_CONTEXT_BYTES / GIB,
            "total_without_context_gib": (rank.total_bytes - CUDA_CONTEXT_BYTES) / GIB,
            "lines": [{"what": what, "gib": n / GIB, "how": how} for what, n, how in rank.lines]}


# ---------------------------------------------------------------- printing


def fmt_stat(stat: dict | None, scale: float = 1.0, spec: str = ",.1f") -> str:
    """'median [low, high]' of a `median_ci`, each times `scale`, in the format `spec`."""
    if stat is None:
        return "n/a"
    lo, hi = (x * scale for x in stat["ci95"])
    return f"{stat['median'] * scale:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def fmt_gib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def print_report(r: dict) -> None:
    s, L, P = r["settings"], r["rlcurr"], r["plain_torch"]
    f, lf, pf = r["flops"], L["figures"], P["figures"]
    seen = L["inputs_per_step"][0]
    print(f"device: {r['device']}, torch {r['torch']}; model {f['params'] / 1e6:.1f}M parameters {r['shape']}")
    print(f"rlcurr learner: {s['prompts']} prompts x {s['answers_per_prompt']} answers, prompt {s['prompt_len']} + "
          f"answer {s['answer_len']} tokens, micro-batches of {s['micro_batch_size']} answers, bf16 compute on "
          f"{L['model_dtype']} masters; {s['steps']} timed steps after {s['warmup']} warm-up")
    print(f"  per step: {seen['grad_forwards']} forward+backward, {seen['no_grad_forwards']} gradient-free forwards; "
          f"tokens: batch {f['batch_tokens']}, model {f['model_tokens']}, through the model {seen['real_tokens']} "
          f"({seen['slots']} slots with padding), answer {f['answer_tokens']}; loss {L['loss']:.3f}, "
          f"grad norm {L['grad_norm']:.3f}")
    print(f"  FLOPs/step = model tokens x (6 N_body + 12 L H d_head S) + answer tokens x 6 V D = "
          f"{f['model_tokens']} x ({f['flops_per_token_6N_body']:.4g} + {f['flops_per_token_attn']:.4g}) + "
          f"{f['answer_tokens']} x {f['flops_per_answer_token_head']:.4g} = {f['flops_per_step']:.4g} "
          f"({f['flops_per_model_token']:.4g} per model token)")
    print(f"plain torch (bench/gpu_learner_mfu.py, pure bf16): batch {P['batch']} x seq {P['seq']}, "
          f"FLOPs/token 6N + attention = {P['flops_per_token_6N']:.4g} + {P['flops_per_token_attn']:.4g}")
    print("median [95% interval of the median] over the timed steps:")
    est = r["memory_estimate"]
    rows = [["s/step", fmt_stat(lf["s_per_step"], spec=".4f"), fmt_stat(pf["s_per_step"], spec=".4f")],
            ["tokens/s, batch (prompt+answer each)", fmt_stat(lf["batch_tokens_per_s"], spec=",.0f"),
             fmt_stat(pf["tokens_per_s"], spec=",.0f")],
            ["tokens/s, through the model", fmt_stat(lf["through_model_tokens_per_s"], spec=",.0f"),
             fmt_stat(pf["tokens_per_s"], spec=",.0f")],
            ["tokens/s, model (prompt once/group)", fmt_stat(lf["model_tokens_per_s"], spec=",.0f"),
             fmt_stat(pf["tokens_per_s"], spec=",.0f")],
            ["FLOPs per model token", f"{f['flops_per_model_token']:.4g}",
             f"{P['flops_per_token_6N'] + P['flops_per_token_attn']:.4g}"],
            ["achieved TFLOP/s", fmt_stat(lf["achieved_flops"], 1e-12, ".3g"),
             fmt_stat(pf["achieved_flops"], 1e-12, ".3g")],
            ["MFU %", fmt_stat(lf.get("mfu"), 100), fmt_stat(pf.get("mfu"), 100)],
            ["peak memory GiB (max_memory_allocated)", fmt_gib(L["max_memory_gib"]), fmt_gib(P["max_memory_gib"])],
            ["plan estimate GiB (learner rank)", f"{est['total_gib']:.2f} (- {est['cuda_context_gib']:.1f} context "
                                                 f"= {est['total_without_context_gib']:.2f})", "-"]]
    C.print_table(["figure", "rlcurr learner", "plain torch"], rows)
    if r.get("mfu_ratio") is not None:
        print(f"MFU rlcurr / plain torch = {r['mfu_ratio']:.3f} (peak {r['peak_flops'] / 1e12:.0f} TFLOP/s)")
    else:
        print("MFU: n/a (unknown peak; pass --peak FLOP/s)")


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8, help="groups per step")
    p.add_argument("--answers-per-prompt", type=int, default=8, help="G answers sharing each prompt (>= 2)")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--answer-len", type=int, default=512)
    p.add_argument("--micro-batch-size", type=int, default=None, help="answers per forward (default: G)")
    p.add_argument("--max-tokens-per-micro-batch", type=int, default=None, help="learner.max_tokens_per_micro_batch")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--plain-batch", type=int, default=None, help="plain-torch arm's rows (default: micro-batch size)")
    p.add_argument("--plain-seq", type=int, default=None,
                   help="plain-torch arm's tokens per row (default: prompt + answer)")
    p.add_argument("--peak", default="auto", help="peak dense bf16 FLOP/s, or 'auto' from the GPU name")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help="GPU memory for the plan estimate's warnings (default: the device's)")
    p.add_argument("--copy-result-to", type=Path, default=None,
                   help="also copy the written JSON into this folder (a lent GPU machine's $OUT)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU, 2 steps: checks that the code runs; "
                                                            "writes nothing")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        for k, v in SMOKE_BATCH.items():
            setattr(args, k, v)
    if args.answers_per_prompt < 2:
        p.error("--answers-per-prompt must be >= 2 (a group of one has advantage 0, which the learner skips)")
    args.micro_batch_size = args.micro_batch_size or args.answers_per_prompt
    args.plain_batch = args.plain_batch or args.micro_batch_size
    args.plain_seq = args.plain_seq or args.prompt_len + args.answer_len
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.cpu_smoke:
        shape, device = mfu.SMOKE, torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke")
        shape, device = mfu.Shape(), torch.device("cuda")
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    gpu_gib = args.gpu_memory_gib or (torch.cuda.get_device_properties(device).total_memory / 2**30
                                      if device.type == "cuda" else 80.0)
    peak = mfu.peak_flops(args.peak, device)
    from rlcurr.learner.models import SPECIAL_TOKENS

    with tempfile.TemporaryDirectory(prefix="gpu_learner_rlcurr_") as tmp:
        model_dir = build_model_dir(shape, Path(tmp) / "model", args.prompt_len + args.answer_len)
        cfg = build_run_config(model_dir, args)
        estimate = learner_memory_estimate(cfg, args.prompt_len, gpu_gib)
        samples = synthetic_samples(args.prompts, args.answers_per_prompt, args.prompt_len, args.answer_len,
                                    shape.vocab, first_id=len(SPECIAL_TOKENS))
        learner = learner_arm(cfg, model_dir, samples, args.warmup, args.steps, force_cpu=args.cpu_smoke)
    flops = learner_step_flops(shape, learner["params"], args.prompts, args.answers_per_prompt, args.prompt_len,
                               args.answer_len)
    through = learner["inputs_per_step"][0]["real_tokens"]
    learner["figures"] = per_step_figures(
        learner["seconds"], {"batch_tokens": flops["batch_tokens"], "model_tokens": flops["model_tokens"],
                             "through_model_tokens": through, "answer_tokens": flops["answer_tokens"]},
        flops["flops_per_step"], peak)
    plain = plain_arm(shape, args.plain_batch, args.plain_seq, args.warmup, args.steps, device)
    plain["figures"] = per_step_figures(plain["seconds"], {"tokens": args.plain_batch * args.plain_seq},
                                        plain["flops_per_step"], peak)
    mfu_ratio = (learner["figures"]["mfu"]["median"] / plain["figures"]["mfu"]["median"]) if peak else None
    command = " ".join(["python bench/gpu_learner_rlcurr.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "device": dev_name, "torch": torch.__version__, "shape": asdict(shape), "peak_flops": peak,
              "flops": flops, "rlcurr": learner, "plain_torch": plain, "mfu_ratio": mfu_ratio,
              "memory_estimate": estimate, "command": command}
    print_report(result)
    if device.type == "cuda" and not args.cpu_smoke:
        path = C.write_result(NAME, {k: v for k, v in result.items() if k != "command"}, command)
        if args.copy_result_to is not None:
            args.copy_result_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, args.copy_result_to / path.name)
    return result


if __name__ == "__main__":
    main()
