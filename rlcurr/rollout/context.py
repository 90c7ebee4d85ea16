"""How many tokens one rollout sequence can need: vLLM's `max_model_len` for a run.

vLLM serves at most `max_model_len` tokens per sequence and quietly caps a request whose prompt +
max_tokens is longer (finish reason "length", the answer cut early). So the engine is sized from
the run itself:

    model_len_needed = longest prompt (tokens, as the model sees it) + the largest max_tokens

- the longest prompt: over every train and eval prompt, rendered as the trainer renders it
  (system prompt, instruction, the chat template when the tokenizer has one, BOS per
  `encode_prompt`), and, when curriculum.guidance is on, each train prompt with its hint too (a
  Guide-GRPO re-roll conditions on the hinted prompt);
- the largest max_tokens: rollout.max_tokens, or with curriculum.budget the largest budget any
  step can get (the larger of start and end, per distribution too) + slack, and eval.max_tokens;
- multi-turn tool use adds nothing: `rollout.max_tokens` bounds the whole trajectory, tool
  outputs included, and each continuation's prompt is the original prompt + the answer so far
  with the rest of the budget as its max_tokens (rlcurr/rollout/multiturn.py), so prompt +
  max_tokens bounds every turn.

A run that needs more than the model's `max_position_embeddings` is refused (`UserError`, one
line). The transformers engine has no fixed context and is not sized (rope models run past
max_position_embeddings there; nothing is refused for it).
Left out: rope scaling (a config.json whose rope_scaling extends the context, e.g. YaRN, is
checked against its max_position_embeddings alone), and prompts longer than the pools' (none:
the trainer only sends pool prompts, with or without their hint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from rlcurr.errors import UserError
from rlcurr.prompting import format_env_prompt, has_chat_template


def model_len_needed(longest_prompt_tokens: int, max_tokens: int) -> int:
    """Tokens the longest sequence of a run holds: its longest prompt + the largest max_tokens any
    request asks for (multi-turn included, see the module docstring)."""
    return longest_prompt_tokens + max_tokens


def check_model_len(longest_prompt_tokens: int, max_tokens: int, max_position_embeddings: int | None,
                    max_tokens_setting: str = "rollout.max_tokens") -> int:
    """`model_len_needed`, or a one-line `UserError` when it exceeds `max_position_embeddings`
    (None: the model does not say; nothing to check). `max_tokens_setting` names the recipe field
    `max_tokens` comes from, for the message."""
    needed = model_len_needed(longest_prompt_tokens, max_tokens)
    if max_position_embeddings is not None and needed > max_position_embeddings:
        raise UserError(f"{max_tokens_setting} ({max_tokens}) + the longest prompt ({longest_prompt_tokens} tokens) "
                        f"= {needed} tokens exceeds the model's max_position_embeddings ({max_position_embeddings}); "
                        f"lower {max_tokens_setting} or use shorter prompts")
    return needed


def largest_max_tokens(cfg: Any) -> tuple[int, str]:
    """The largest max_tokens any generation request of the run gets, and the recipe field that
    sets it: rollout.max_tokens (training without a budget), curriculum.budget (its largest
    start/end + slack) or eval.max_tokens (evaluation)."""
    budget = cfg.curriculum.budget
    if budget is None:
        train = (cfg.rollout.max_tokens, "rollout.max_tokens")
    else:
        ranges = [(budget.start, budget.end)] + [(r.start, r.end) for r in (budget.per_distribution or {}).values()]
        train = (max(max(r) for r in ranges) + budget.slack, "curriculum.budget (largest start/end + slack)")
    evaluation = (cfg.eval.max_tokens, "eval.max_tokens") if cfg.eval.max_tokens else (cfg.rollout.max_tokens,
                                                                                        "rollout.max_tokens")
    return max(train, evaluation, key=lambda pair: pair[0])


def max_position_embeddings(model_dir: str | Path) -> int | None:
    """The model's `max_position_embeddings` from its config.json (GPT-2 style `n_positions`
    otherwise); None when it gives neither."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config = config.get("text_config", config)  # multimodal configs keep the language model's inside
    value = config.get("max_position_embeddings", config.get("n_positions"))
    return None if value is None else int(value)


def longest_prompt_tokens(tokenizer: Any, env_cfg: Any, env: Any, hints: bool) -> int:
    """Token count of the longest prompt the trainer can send: every train and eval prompt of
    `env`, rendered like `Trainer.encode`, and with `hints` each train prompt with its hint too."""
    texts: list[str] = []
    for d in env.distributions():
        train = env.train_prompts(d)
        for p in [*train, *env.eval_prompts(d)]:
            texts.append(format_env_prompt(tokenizer, env_cfg, p.question))
        if hints:
            texts += [format_env_prompt(tokenizer, env_cfg, p.question, hint=p.hint) for p in train if p.hint]
    return max(_lengths(tokenizer, texts), default=0)


def _lengths(tokenizer: Any, texts: list[str], chunk: int = 1024) -> Iterable[int]:
    """Token counts as `encode_prompt` gives them, tokenised in batches (pools can be large)."""
    special = not has_chat_template(tokenizer)
    for i in range(0, len(texts), chunk):
        yield from map(len, tokenizer(texts[i : i + chunk], add_special_tokens=special)["input_ids"])


def rollout_model_len(cfg: Any, env: Any, tokenizer: Any, model_dir: str | Path) -> int | None:
    """vLLM's max_model_len for this run (`check_model_len` over its prompts and max_tokens:
    refused when the model is too short); None for the transformers engine, which is not sized."""
    if cfg.rollout.engine != "vllm":
        return None
    max_tokens, setting = largest_max_tokens(cfg)
    longest = longest_prompt_tokens(tokenizer, cfg.env, env, hints=cfg.curriculum.guidance is not None)
    return check_model_len(longest, max_tokens, max_position_embeddings(model_dir), setting)
