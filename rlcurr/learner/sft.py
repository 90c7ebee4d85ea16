"""Supervised warm-up: teach a fresh tiny model the task format (and a little of the task).

Cross-entropy on answer tokens + EOS only (the prompt, and a tool's output in a multi-turn
target, are context), AdamW with a short linear
warm-up then cosine decay, uniform batches drawn with replacement from the given examples.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import torch

from rlcurr.learner.batching import response_logits, response_mask, token_logprobs
from rlcurr.learner.learner import pick_device
from rlcurr.learner.models import load_causal_lm, load_tokenizer


def sft_warmup(model_dir: Path, out_dir: Path, examples: list[tuple[list[int], list[int], list[bool] | None]], *,
               steps: int, lr: float, batch_size: int, seed: int,
               on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train on (prompt_ids, target_ids, tool_mask) for `steps` steps; save the model to `out_dir`.
    tool_mask (None: no tool output) marks target tokens written by a tool: context, not targets."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = load_tokenizer(model_dir)
    device = pick_device()
    model = load_causal_lm(model_dir).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    for step in range(steps):
        mult = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * mult
        batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        prompts = [p for p, _, _ in batch]
        targets = [t + [tokenizer.eos_token_id] for _, t, _ in batch]
        logits_BTV = response_logits(model, prompts, targets, tokenizer.pad_token_id)
        logp_BT = token_logprobs(logits_BTV, targets, tokenizer.pad_token_id)
        mask_BT = response_mask([len(t) for t in targets], logp_BT.shape[1],
                                [None if m is None else m + [False] for _, _, m in batch]).to(device)
        loss = -(logp_BT * mask_BT).sum() / mask_BT.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if on_step is not None:
            on_step(step, loss.item())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
