"""Tokens through the learner's model per step at the GPU recipes' batch settings, three ways:

  padded    answers right-padded one per row: what FSDP trained with before the learner saw
            through FSDP's class swap (shared prompts and packing were switched off);
  shuffled  shared prompts on, micro-batches cut from the shuffled mini-batch (siblings rarely
            share a micro-batch: groups of 16 over micro-batches of 4);
  grouped   shared prompts on, siblings made adjacent in each mini-batch before sharding and
            cutting (`dataparallel.minibatches(groups=...)`): the learner now.

It runs the learner's own layout code (`batching.model_inputs`) on every micro-batch of every
rank, on token ids whose LENGTHS follow an assumed distribution (no model runs, nothing is timed):
prompt lengths uniform in [250, 450] tokens (Knights-and-Knaves prompts under a Qwen2.5 tokenizer
are of that order), answer lengths log-normal around 0.35 x rollout.max_tokens (sigma 0.6), capped.
The counts are exact for those lengths; what real answers look like decides the real saving.

    python bench/microbatch_tokens.py            # both GPU recipes, one seed each
    python bench/microbatch_tokens.py --quick    # a small batch, seconds
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RECIPES, command_line, print_table, write_result  # noqa: E402


def recipe_settings(name: str) -> dict:
    """The batch shape a GPU recipe trains with (read from the recipe, not retyped)."""
    from rlcurr.config import load_yaml

    r = load_yaml(RECIPES / f"{name}.yaml")
    return dict(prompts=r["trainer"]["prompts_per_step"], n=r["rollout"]["n"], max_tokens=r["rollout"]["max_tokens"],
                mini_batches=r["algo"].get("mini_batches", 1), micro=r["algo"]["micro_batch_size"],
                ranks=r["learner"].get("num_workers", 1), token_cap=r["learner"].get("max_tokens_per_micro_batch"))


def synthetic_batch(s: dict, rng: random.Random):
    from rlcurr.types import TrainSample

    samples = []
    for p in range(s["prompts"]):
        prompt = [p % 100 + 5] * rng.randint(250, 450)  # distinct per prompt within a step
        prompt[0] = p  # make every prompt's tokens unique
        for _ in range(s["n"]):
            n = min(s["max_tokens"], max(8, int(rng.lognormvariate(math.log(0.35 * s["max_tokens"]), 0.6))))
            samples.append(TrainSample(prompt_ids=prompt, response_ids=[7] * n, advantage=1.0, rollout_logprobs=[]))
    return samples


def tokens_per_step(samples, s: dict, layout: str, model, seed: int) -> int:
    """Sum over mini-batches, ranks and micro-batches of the ids tensor's size [R, L]."""
    from rlcurr.learner import batching
    from rlcurr.learner.dataparallel import minibatches, prompt_groups, shard

    groups = prompt_groups(samples) if layout == "grouped" else None
    total = 0
    with mock.patch.object(batching, "from_transformers", lambda m: layout != "padded"):
        for mb in minibatches(len(samples), 1, s["mini_batches"], random.Random(seed), groups=groups):
            for rank in range(s["ranks"]):
                mine = shard(mb, rank, s["ranks"])
                lengths = [len(samples[i].prompt_ids) + len(samples[i].response_ids) for i in mine]
                for cut in batching.cut_by_tokens(lengths, s["micro"], s["token_cap"]):
                    part = [samples[mine[c]] for c in cut]
                    ids_RL, *_ = batching.model_inputs(model, [x.prompt_ids for x in part],
                                                       [x.response_ids for x in part], pad_id=0)
                    total += ids_RL.numel()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 prompts per step, 512-token answers")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, Qwen2Config

    # Only the class and config matter (sdpa, no sliding window): model_inputs does not run it.
    model = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=128, hidden_size=8, intermediate_size=8,
                                                         num_hidden_layers=1, num_attention_heads=1,
                                                         num_key_value_heads=1, max_position_embeddings=8192),
                                             attn_implementation="sdpa")
    rows, results = [], {}
    for name in ("dump_kk_8gpu", "dump_kk_2gpu_colocate"):
        s = recipe_settings(name)
        if args.quick:
            s.update(prompts=8, max_tokens=512, token_cap=None)
        samples = synthetic_batch(s, random.Random(0))
        counts = {layout: tokens_per_step(samples, s, layout, model, seed=0) for layout in ("padded", "shuffled", "grouped")}
        real = sum(len(x.prompt_ids) + len(x.response_ids) for x in samples)
        results[name] = {"settings": s, "real_tokens": real, "tokens": counts,
                         "grouped_vs_padded": counts["grouped"] / counts["padded"],
                         "grouped_vs_shuffled": counts["grouped"] / counts["shuffled"]}
        rows.append([name, f"{s['prompts']}x{s['n']}, mb {s['micro']}, {s['ranks']} ranks", f"{real:,}",
                     *(f"{counts[k]:,}" for k in ("padded", "shuffled", "grouped")),
                     f"{counts['grouped'] / counts['padded']:.2f}", f"{counts['grouped'] / counts['shuffled']:.2f}"])
    print_table(["recipe", "batch", "prompt+answer tokens", "padded", "shuffled", "grouped", "grouped/padded",
                 "grouped/shuffled"], rows)
    if not args.quick:
        write_result("microbatch_tokens", {"assumptions": "prompts U[250,450] tokens; answers lognormal(ln(0.35 "
                                           "max_tokens), 0.6) capped at max_tokens; one step, seed 0",
                                           "recipes": results}, command_line())


if __name__ == "__main__":
    main()
