"""Built-in reward functions, registered by name.

Each follows TRL's contract ``fn(prompts, completions, **columns) -> list[float | None]`` and
accepts completions either as strings or as TRL message lists (``[{"role": "assistant",
"content": ...}]``). Columns they read:

- ``exact_match``   answer          1.0 if the answer text equals the reference (after strip)
- ``last_line_match`` answer        1.0 if the answer text's last line equals the reference (tool
                    environments: a tool output ends with a newline, the final answer follows)
- ``math_verify``   answer          1.0 if math-verify finds the answer equivalent
- ``format``        --              1.0 for ``<think>...</think>`` then ``<answer>...</answer>``
- ``length_budget`` budget, num_tokens   0 within budget, -penalty * min(overshoot / budget,
                    penalty_cap) past it (params penalty, penalty_cap: curriculum.budget's)
- ``overlong_penalty`` num_tokens, budget   DAPO's soft overlong penalty (params L_max, L_buf)
- ``reasoning_gym`` rg_task, rg_entry, rg_params   the reasoning-gym task's own scorer

Parameters (``params`` of a recipe's ``rewards`` entry) are keyword arguments bound by
`rlcurr.rewards.registry.resolve_reward`.

"The answer text" of a completion is the content of its last ``<answer>...</answer>`` pair when
it has one, else the whole completion (tiny models answer bare, e.g. "46").

Nothing here keeps state that must be set up beforehand: reasoning-gym datasets used for scoring
are rebuilt on first use from the columns, so these functions run the same in a Ray worker.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from rlcurr.curriculum.budget import length_penalty
from rlcurr.rewards.table import register

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"^\s*<think>(?:(?!<think>).)*?</think>\s*<answer>(?:(?!<answer>).)*?</answer>\s*$", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of one completion, given as a string or as a TRL message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def answer_text(completion: Any) -> str:
    """Content of the last <answer>...</answer> pair, else the whole completion; stripped."""
    text = completion_text(completion)
    matches = _ANSWER_RE.findall(text)
    return (matches[-1] if matches else text).strip()


def _per_sample(values: Any, n: int, name: str) -> list:
    """A column as a list of length n (a missing column -> all None)."""
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


@register("exact_match")
def exact_match(prompts, completions, answer=None, **kwargs) -> list[float | None]:
    answers = _per_sample(answer, len(completions), "answer")
    return [
        None if ref is None else float(answer_text(c) == str(ref).strip())
        for c, ref in zip(completions, answers)
    ]


@register("last_line_match")
def last_line_match(prompts, completions, answer=None, **kwargs) -> list[float | None]:
    answers = _per_sample(answer, len(completions), "answer")
    return [
        None if ref is None else float(answer_text(c).rsplit("\n", 1)[-1].strip() == str(ref).strip())
        for c, ref in zip(completions, answers)
    ]


@register("math_verify")
def math_verify(prompts, completions, answer=None, **kwargs) -> list[float | None]:
    """math-verify equivalence. Unparseable reference -> None (not the model's fault); any
    failure while parsing or verifying the completion -> 0.0."""
    from math_verify import parse, verify

    # math-verify's own timeouts use signal.alarm, which only works in the main thread; the
    # runner calls rewards in a worker thread and enforces its own timeout instead.
    for logger in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    answers = _per_sample(answer, len(completions), "answer")
    gold_cache: dict[str, Any] = {}  # a group's n completions share one reference
    scores: list[float | None] = []
    for c, ref in zip(completions, answers):
        if ref is None:
            scores.append(None)
            continue
        ref = str(ref)
        if ref not in gold_cache:
            gold_cache[ref] = _parse_math(parse, ref)
        gold = gold_cache[ref]
        if not gold:
            scores.append(None)
            continue
        try:
            text = completion_text(c)
            tagged = _ANSWER_RE.findall(text)
            pred = _parse_math(parse, tagged[-1].strip()) if tagged else parse(text, parsing_timeout=None)
            scores.append(float(bool(pred) and verify(gold, pred, timeout_seconds=None)))
        except Exception:
            scores.append(0.0)
    return scores


def _parse_math(parse, text: str) -> list:
    """Parse a bare answer. Bare LaTeX needs $...$: math-verify reads '9\\pi' as 9 otherwise."""
    tries = [f"${text}$", text] if "\\" in text and "$" not in text else [text]
    try:
        for t in tries:
            parsed = parse(t, parsing_timeout=None)
            if parsed:
                return parsed
    except Exception:
        pass
    return []


@register("format")
def format_reward(prompts, completions, **kwargs) -> list[float]:
    return [float(bool(_FORMAT_RE.match(completion_text(c)))) for c in completions]


@register("length_budget")
def length_budget(prompts, completions, budget=None, num_tokens=None, penalty: float = 1.0,
                  penalty_cap: float = 1.0, **kwargs) -> list[float | None]:
    """0 within `budget` tokens; past it -penalty * min((num_tokens - budget) / budget, penalty_cap)
    (`rlcurr.curriculum.budget.length_penalty`). `penalty` / `penalty_cap` are bound from
    curriculum.budget.penalty / penalty_cap by the config; the recipe's reward weight multiplies
    the result again.

    None where there is no budget (column absent or None for that sample). A budget without a
    `num_tokens` column is a wiring mistake and raises.
    """
    n = len(completions)
    budgets = _per_sample(budget, n, "budget")
    if all(b is None for b in budgets):
        return [None] * n
    if num_tokens is None:
        raise ValueError("length_budget needs a 'num_tokens' column (completion lengths in tokens)")
    lengths = _per_sample(num_tokens, n, "num_tokens")
    scores: list[float | None] = []
    for b, length in zip(budgets, lengths):
        if b is None or length is None:
            scores.append(None)
        else:
            scores.append(length_penalty(int(length), int(b), weight=float(penalty), cap=float(penalty_cap)))
    return scores


@register("overlong_penalty")
def overlong_penalty(prompts, completions, num_tokens=None, budget=None, L_max: int | None = None,
                     L_buf: int | None = None, **kwargs) -> list[float | None]:
    """DAPO's soft overlong punishment (verl's DAPO reward manager; docs/extending.md, "Built-in rewards"):
    min(-(len - (L_max - L_buf)) / L_buf, 0): 0 up to L_max - L_buf tokens, then linear down to -1
    at L_max.

    L_max: the `L_max` param, else each answer's `budget` column (the token budget, without
    slack); the config fills L_max = rollout.max_tokens when there is no curriculum.budget. An
    answer with neither scores None. Answers can run past L_max only with budget slack; there the
    formula goes on below -1 (not clipped, as the formula; verl has no such answers). verl's
    penalty_factor is the reward's weight in the recipe.
    """
    if L_buf is None or L_buf <= 0:
        raise ValueError(f"overlong_penalty needs a positive L_buf param (got {L_buf!r})")
    n = len(completions)
    if num_tokens is None:
        raise ValueError("overlong_penalty needs a 'num_tokens' column (completion lengths in tokens)")
    lengths = _per_sample(num_tokens, n, "num_tokens")
    budgets = _per_sample(budget, n, "budget")
    scores: list[float | None] = []
    for length, b in zip(lengths, budgets):
        l_max = L_max if L_max is not None else b
        if l_max is None or length is None:
            scores.append(None)
        else:
            scores.append(min(-(int(length) - (int(l_max) - L_buf)) / L_buf, 0.0))
    return scores


# ---------------------------------------------------------------- reasoning-gym

_RG_DATASETS: dict[tuple[str, str], Any] = {}  # (task, params json) -> dataset, filled on demand


def rg_scorer_dataset(task: str, params: dict | None):
    """A reasoning-gym dataset configured like the one that generated the entry (some scorers
    read their config), built once per process. Generation is lazy, so this is cheap."""
    params = dict(params or {})
    key = (task, json.dumps(params, sort_keys=True, default=str))
    if key not in _RG_DATASETS:
        import reasoning_gym

        _RG_DATASETS[key] = reasoning_gym.create_dataset(task, seed=0, size=1, **params)
    return _RG_DATASETS[key]


@register("reasoning_gym")
def reasoning_gym_reward(prompts, completions, rg_task, rg_entry, rg_params=None, **kwargs) -> list[float | None]:
    n = len(completions)
    tasks = _per_sample(rg_task, n, "rg_task")
    entries = _per_sample(rg_entry, n, "rg_entry")
    params = _per_sample(rg_params, n, "rg_params")
    scores: list[float | None] = []
    for c, task, entry, p in zip(completions, tasks, entries, params):
        if task is None or entry is None:
            scores.append(None)
            continue
        score = rg_scorer_dataset(task, p).score_answer(answer_text(c), entry)
        scores.append(float(score) if score is not None and not math.isnan(score) else 0.0)
    return scores
