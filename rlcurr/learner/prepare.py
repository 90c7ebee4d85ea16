"""Resolve `model:` in a recipe to a local HF directory the workers load.

model.path  -> that directory, used as is.
model.tiny  -> build a random-init tiny model, then the SFT warm-up on the environment's train
               pools. Both are cached under $RLCURR_CACHE (default ~/.cache/rlcurr) keyed by a
               hash of everything that determines them, so the second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from rlcurr.learner.models import build_tiny_model, check_model_dir, load_tokenizer
from rlcurr.learner.sft import sft_warmup
from rlcurr.prompting import encode_prompt, format_env_prompt


def cache_root() -> Path:
    return Path(os.environ.get("RLCURR_CACHE", Path.home() / ".cache" / "rlcurr"))


def _key(*parts) -> str:
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_model(cfg, env, log: Callable[[str], None] = print) -> Path:
    m = cfg.model
    if m.path is not None:
        return check_model_dir(m.path)
    base = _cached(cache_root() / "tiny" / _key(m.tiny, cfg.seed),
                   lambda out: build_tiny_model(m.tiny, out, cfg.seed))
    if m.warmup.steps == 0:
        return base
    dists = m.warmup.distributions or env.distributions()
    unknown = [d for d in dists if d not in env.distributions()]
    if unknown:
        from rlcurr.errors import UserError

        raise UserError(f"model.warmup.distributions: unknown {unknown}; the environment has {env.distributions()}")
    key = _key(m.tiny, m.warmup, cfg.env, cfg.seed, dists)

    def warm(out: Path) -> Path:
        tok = load_tokenizer(base)
        rng = random.Random(cfg.seed)
        examples = []
        for d in dists:
            for p, target in env.sft_examples(d):
                # Some examples carry the hint, so that the model learns to use hints (Guide-GRPO).
                hint = p.hint if (p.hint and rng.random() < m.warmup.hint_fraction) else None
                # Prompts encoded exactly as rollouts encode them; the target continues the prompt,
                # so it gets no special tokens of its own (no BOS mid-sequence).
                examples.append((encode_prompt(tok, format_env_prompt(tok, cfg.env, p.question, hint=hint)),
                                 *encode_target(tok, target)))
        log(f"SFT warm-up: {m.warmup.steps} steps on {len(examples)} examples from {dists}")
        return sft_warmup(base, out, examples, steps=m.warmup.steps, lr=m.warmup.lr,
                          batch_size=m.warmup.batch_size, seed=cfg.seed)

    return _cached(cache_root() / "warm" / key, warm)


def encode_target(tok, target: str | list[tuple[str, bool]]) -> tuple[list[int], list[bool] | None]:
    """Target ids, and for a multi-turn target ((text, is_tool_output) pieces) which ids are tool
    output: each piece encoded on its own, as the multi-turn rollout encodes tool outputs."""
    if isinstance(target, str):
        return tok(target, add_special_tokens=False)["input_ids"], None
    ids, tool = [], []
    for text, is_tool in target:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        tool += [is_tool] * len(piece)
    return ids, tool


def _cached(target: Path, build: Callable[[Path], Path]) -> Path:
    """Build into a temporary sibling and rename, so an interrupted build is never reused."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        build(tmp)
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
