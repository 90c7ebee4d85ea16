"""Peak memory of ONE learner train_step, old scoring path vs new, each in its own process.

Model: a random-init Qwen2 with a Qwen-sized vocabulary (151,936), 2 layers, hidden 64 (tied
embedding / LM head), so the output head and its logits dominate, as they do for a real policy
on long answers. Batch: 2 answers of --answer-len tokens (default 1536) after a 32-token prompt,
advantages +1 / -1; GRPO token-mean, mini_batches 2 (so old logprobs take their own pass),
micro_batch_size 1, no KL, no entropy bonus. The same Learner API and settings in both arms.

  old = the whole `rlcurr` package at git revision c5f30b7 (before the answer-only scoring), exported with
        `git archive` into a temporary directory and put first on PYTHONPATH: full-sequence
        logits, fp32 log_softmax over the vocabulary, old logprobs in chunks of 64 answers,
        entropy as a second full-vocabulary pass.
  new = this working tree: logits only at answer positions, chunked logsumexp (recomputed in
        the backward), forwards cut by micro-batch (and learner.max_tokens_per_micro_batch,
        unset here), entropy a by-product of the chunks.

Memory: the process's peak resident set (resource.getrusage ru_maxrss) on CPU, which includes
Python, torch and the model (printed separately: RSS after loading); with CUDA, also
torch.cuda.max_memory_allocated. Same update: the optimizer is swapped for SGD(lr=1) in both
arms, so the weight change IS the gradient, and the max |difference| of the updated weights
must be <= 1e-5 (Adam's first step, lr * sign(g), would blow fp noise up to lr).

Allocator: both children run with MALLOC_MMAP_THRESHOLD_=1 MiB. With glibc's default dynamic
threshold, freed 30-odd-MiB chunk temporaries stay in the heap and peak RSS grows with the
answer length although live memory does not (measured here: the new path at 1024-token answers
peaked at 1798 MiB with the default vs 842 MiB with the fixed threshold; a bare 2048-token
chunked forward reached +2 GiB vs +0.2 GiB). The old path's allocations are far above either
threshold. `--glibc-default` measures without the setting. A GPU's caching allocator reuses
blocks, so there the CUDA figure is the one to read.

Prints the ratio new/old of peak memory last; writes bench/results/learner_memory.json.
`--quick`: 128-token answers (about a minute on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD_REV = "c5f30b7"
MMAP_THRESHOLD = 1 << 20  # bytes; glibc serves larger allocations by mmap, returned on free
VOCAB = 151_936
PROMPT_LEN = 32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="128-token answers")
    p.add_argument("--answer-len", type=int, default=1536)
    p.add_argument("--answers", type=int, default=2)
    p.add_argument("--glibc-default", action="store_true",
                   help="leave glibc's dynamic mmap threshold on (RSS then keeps freed heap memory)")
    p.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- child: one train_step


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args) -> None:
    import torch

    import rlcurr
    from rlcurr.config import AlgoConfig, LearnerConfig
    from rlcurr.learner.learner import Learner
    from rlcurr.types import TrainSample

    torch.set_num_threads(os.cpu_count() or 1)
    algo = AlgoConfig(micro_batch_size=1, epochs=1, mini_batches=2)
    learner = Learner(args.model, LearnerConfig(lr=1.0), algo, 10)
    learner.optimizer = torch.optim.SGD([p for p in learner.model.parameters() if p.requires_grad], lr=1.0)
    gen = torch.Generator().manual_seed(0)
    samples = [TrainSample(prompt_ids=torch.randint(0, VOCAB, (PROMPT_LEN,), generator=gen).tolist(),
                           response_ids=torch.randint(0, VOCAB, (args.answer_len,), generator=gen).tolist(),
                           advantage=1.0 if b % 2 == 0 else -1.0, rollout_logprobs=[])
               for b in range(args.answers)]
    loaded = rss_mib()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = learner.train_step(samples, 0)
    wall = time.perf_counter() - t0
    out = {"package": str(Path(rlcurr.__file__).parent), "rss_after_load_mib": loaded, "peak_rss_mib": rss_mib(),
           "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None, "train_step_s": wall,
           "grad_norm": metrics["grad_norm"]}
    torch.save({k: v.detach().cpu() for k, v in learner.model.state_dict().items()}, args.out + ".pt")
    Path(args.out + ".json").write_text(json.dumps(out))


# ---------------------------------------------------------------- parent


def build_model(out_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rlcurr.learner.models import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)  # the learner reads only pad_token_id from it
    return out_dir


def run_child(arm: str, args, model: Path, work: Path, old_tree: Path) -> dict:
    env = dict(os.environ)
    if not args.glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    if arm == "old":
        env["PYTHONPATH"] = str(old_tree) + os.pathsep + env.get("PYTHONPATH", "")
    else:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    out = work / arm
    subprocess.run([sys.executable, __file__, "--child", arm, "--model", str(model), "--out", str(out),
                    "--answer-len", str(args.answer_len), "--answers", str(args.answers)],
                   env=env, check=True, cwd=work)
    result = json.loads(Path(str(out) + ".json").read_text())
    print(f"[{arm}] package {result['package']}: peak RSS {result['peak_rss_mib']:.0f} MiB "
          f"(after load {result['rss_after_load_mib']:.0f} MiB), train_step {result['train_step_s']:.1f} s", flush=True)
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.quick:
        args.answer_len = 128
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common as C
    import torch

    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_tree = work / "old"
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(repo), "archive", OLD_REV, "rlcurr"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        model = build_model(work / "model")
        results = {arm: run_child(arm, args, model, work, old_tree) for arm in ("old", "new")}
        w_old, w_new = torch.load(work / "old.pt"), torch.load(work / "new.pt")
        assert set(w_old) == set(w_new)
        max_diff = max((w_old[k] - w_new[k]).abs().max().item() for k in w_old)
    o, n = results["old"], results["new"]
    ratios = {"peak_rss new/old": n["peak_rss_mib"] / o["peak_rss_mib"],
              "peak_rss_above_load new/old": (n["peak_rss_mib"] - n["rss_after_load_mib"])
              / (o["peak_rss_mib"] - o["rss_after_load_mib"])}
    if o["cuda_peak_mib"]:
        ratios["cuda_peak new/old"] = n["cuda_peak_mib"] / o["cuda_peak_mib"]
    same = max_diff <= 1e-5
    C.write_result("learner_memory", {"args": {k: v for k, v in vars(args).items() if k not in ("child", "model", "out")},
                                      "old": f"rlcurr at git {OLD_REV} (git archive, first on PYTHONPATH)",
                                      "new": "this working tree", "vocab": VOCAB, "prompt_len": PROMPT_LEN,
                                      "malloc_mmap_threshold": None if args.glibc_default else MMAP_THRESHOLD,
                                      "results": results, "max_abs_weight_diff": max_diff, "same_update": same,
                                      "ratios": ratios},
                   " ".join(["python bench/learner_memory.py", *(argv if argv is not None else sys.argv[1:])]))
    print(f"\n== learner memory: one train_step, {args.answers} answers x {args.answer_len} tokens "
          f"(+{PROMPT_LEN} prompt), vocab {VOCAB}, 2-layer hidden-64 Qwen2, on {os.cpu_count()} cores ==")
    C.print_table(["figure", "old", "new"], [
        ["peak RSS MiB", f"{o['peak_rss_mib']:.0f}", f"{n['peak_rss_mib']:.0f}"],
        ["RSS after model load MiB", f"{o['rss_after_load_mib']:.0f}", f"{n['rss_after_load_mib']:.0f}"],
        ["train_step s", f"{o['train_step_s']:.1f}", f"{n['train_step_s']:.1f}"],
        ["grad norm", f"{o['grad_norm']:.6g}", f"{n['grad_norm']:.6g}"]])
    print(f"same update: max |weight diff| = {max_diff:.2e} ({'<=' if same else '>'} 1e-5)")
    for k, r in ratios.items():
        print(f"ratio {k}: {r:.3f}")


if __name__ == "__main__":
    main()
