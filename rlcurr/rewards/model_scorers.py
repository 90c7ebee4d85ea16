"""The math of rewards computed by models, without Ray: `RewardModelScorer` (a sequence
classifier) and `JudgeScorer` (a generative model whose text is parsed into a number), plus the
pieces the reward functions of `rlcurr.rewards.model_rewards` check their params with.

RewardModelScorer: an `AutoModelForSequenceClassification` directory, weights frozen (eval mode,
no gradients), scoring ``prompt + completion``: with the RM tokenizer's chat template when it has
one (``[user: prompt, assistant: completion]``), else the two strings joined, encoded with the
tokenizer's own special-token convention. Batches of `batch_size` rows, right-padded; the model
reads its last non-pad token (transformers' rule for these heads). The score of one answer:

- ``num_labels == 1``: the head's logit (a Bradley-Terry style reward model);
- ``num_labels == 2``: P(label 1) = softmax(logits)[1] (a correct / incorrect classifier);
- any other head is refused when the reward is constructed.

JudgeScorer: a causal LM run by rlcurr's own transformers engine (`rlcurr.rollout.hf_engine.HFEngine`,
greedy by default), one answer per judged sample; the text it writes is returned raw, parsing is
the driver's (`parse_judgement`) so that an unparseable judgement is a reward failure there.

Left out: truncation of inputs longer than the model's context (a longer input is the model's
error), vLLM for the judge (the HF engine runs on CPU only), pairwise / listwise judging.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Any, Sequence

from rlcurr.errors import UserError

PARSE_RULES = ("number", "yes_no")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_YES = {"yes", "y", "true", "correct", "right"}
_NO = {"no", "n", "false", "incorrect", "wrong"}


class JudgeParseError(ValueError):
    """The judge's text does not parse under the reward's `parse` rule: a reward failure for that
    answer (the runner's `reward.on_error` decides: stop the run, or leave the answer out)."""


# ---------------------------------------------------------------- model directories


def read_model_config(path: str | Path, reward: str) -> dict:
    """config.json of a local HF model directory, or one UserError naming `params.path`."""
    import json

    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"reward {reward!r}: params.path: {p} does not exist")
    if not (p / "config.json").is_file():
        raise UserError(f"reward {reward!r}: params.path: {p} is not a Hugging Face model directory (no config.json)")
    try:
        return json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"reward {reward!r}: params.path: {p / 'config.json'} does not read as JSON ({e})") from None


def check_classifier_dir(path: str | Path, reward: str) -> int:
    """num_labels of a sequence-classification directory; one UserError naming params.path if it has
    no classification head (e.g. a causal LM) or a head with other than 1 or 2 labels."""
    cfg = read_model_config(path, reward)
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UserError(f"reward {reward!r}: params.path: {path} holds {', '.join(archs) or 'no architectures'}, "
                        f"not a sequence classifier (no classification head: save an "
                        f"AutoModelForSequenceClassification there)")
    labels = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2
    if labels not in (1, 2):
        raise UserError(f"reward {reward!r}: params.path: {path} has a head with {labels} labels; a reward model "
                        f"needs 1 (the logit is the reward) or 2 (P(label 1) is the reward)")
    return labels


def check_causal_lm_dir(path: str | Path, reward: str) -> None:
    cfg = read_model_config(path, reward)
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise UserError(f"reward {reward!r}: params.path: {path} holds {', '.join(archs) or 'no architectures'}, "
                        f"not a generative model (a judge needs an AutoModelForCausalLM directory)")


def check_dtype(dtype: str, reward: str) -> str:
    from rlcurr.learner.models import DTYPES

    if dtype not in DTYPES:
        raise UserError(f"reward {reward!r}: params.dtype: {dtype!r} is not one of {sorted(DTYPES)}")
    return dtype


# ---------------------------------------------------------------- judge templates and parse rules


def load_template(template: str, reward: str) -> str:
    """`params.template`: a file holding the template, or the template itself (inline). Fields:
    ``{question}``, ``{completion}`` (required) and any prompt column; ``{{`` for a brace."""
    if not isinstance(template, str) or not template:
        raise UserError(f"reward {reward!r}: params.template: a template file or string is required")
    text = template
    if "{" not in template:
        p = Path(template).expanduser()
        if not p.is_file():
            raise UserError(f"reward {reward!r}: params.template: {template!r} is neither a file nor a template "
                            f"(an inline template has a {{completion}} field)")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"reward {reward!r}: params.template: cannot read {p}: {e}") from None
    fields = template_fields(text, reward)
    if "completion" not in fields:
        raise UserError(f"reward {reward!r}: params.template: no {{completion}} field (fields: {sorted(fields)})")
    return text


def template_fields(text: str, reward: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:  # a lone '{' or '}'
        raise UserError(f"reward {reward!r}: params.template: {e} (write {{{{ and }}}} for literal braces)") from None
    fields = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise UserError(f"reward {reward!r}: params.template: field {{{name}}} is not a name; use "
                            f"{{question}}, {{completion}} or a prompt column such as {{answer}}")
        fields.add(name)
    return fields


def compile_parse(parse: str, reward: str) -> str | re.Pattern:
    """`params.parse`: "number", "yes_no", or a regex with exactly one group (the number)."""
    if parse in PARSE_RULES:
        return parse
    try:
        pattern = re.compile(parse)
    except (re.error, TypeError) as e:
        raise UserError(f"reward {reward!r}: params.parse: {parse!r} is not number, yes_no or a valid regex ({e})") \
            from None
    if pattern.groups != 1:
        raise UserError(f"reward {reward!r}: params.parse: the regex {parse!r} has {pattern.groups} groups; "
                        f"it needs exactly one (the number)")
    return pattern


def parse_judgement(text: str, rule: str | re.Pattern) -> float:
    """The judge's score, or JudgeParseError.

    number: the first number in the text; yes_no: the first word (case and punctuation aside) is
    yes/true/correct/right -> 1.0, no/false/incorrect/wrong -> 0.0; a regex: its group, as a number."""
    if rule == "number":
        m = _NUMBER.search(text)
        if m is None:
            raise JudgeParseError(f"judge wrote {text!r}: no number in it")
        return _finite(float(m.group(0)), text)
    if rule == "yes_no":
        words = text.strip().split()
        word = words[0].strip(string.punctuation).lower() if words else ""
        if word in _YES:
            return 1.0
        if word in _NO:
            return 0.0
        raise JudgeParseError(f"judge wrote {text!r}: its first word is not yes or no")
    m = rule.search(text)
    if m is None or m.group(1) is None:
        raise JudgeParseError(f"judge wrote {text!r}: parse regex {rule.pattern!r} does not match")
    try:
        return _finite(float(m.group(1)), text)
    except ValueError:
        raise JudgeParseError(f"judge wrote {text!r}: the regex group {m.group(1)!r} is not a number") from None


def _finite(x: float, text: str) -> float:
    if not math.isfinite(x):
        raise JudgeParseError(f"judge wrote {text!r}: {x} is not a finite number")
    return x


def render_judge_input(template: str, question: str, completion: str, columns: dict[str, Any]) -> str:
    values = {**{k: "" if v is None else v for k, v in columns.items()}, "question": question, "completion": completion}
    try:
        return template.format_map(values)
    except KeyError as e:
        raise UserError(f"judge template field {{{e.args[0]}}} is neither question, completion nor a prompt column; "
                        f"columns: {sorted(columns)}") from None


# ---------------------------------------------------------------- normalisation


def check_normalize(normalize: Any, reward: str) -> Any:
    """none | running | {shift: a, scale: b} (score -> (score - a) / b)."""
    if normalize in (None, "none", "running"):
        return normalize or "none"
    if isinstance(normalize, dict) and set(normalize) <= {"shift", "scale"}:
        try:
            shift, scale = float(normalize.get("shift", 0.0)), float(normalize.get("scale", 1.0))
        except (TypeError, ValueError):
            scale = float("nan")
        if math.isfinite(scale) and scale != 0 and math.isfinite(shift):
            return {"shift": shift, "scale": scale}
    raise UserError(f"reward {reward!r}: params.normalize: {normalize!r}; use none, running or "
                    f"{{shift: a, scale: b}} with b != 0 (score -> (score - a) / b)")


class Normalizer:
    """none: as is. fixed {shift, scale}: (s - shift) / scale. running: (s - mean) / std over every
    score seen so far, this call's included (Welford; population std; std 1 while it is 0, i.e. for
    a first call of one score). The running statistics live on the driver and are checkpointed with
    the run (Trainer.save: `rewards` in the checkpoint's state), so a resumed run normalises as the
    uninterrupted one did."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def __call__(self, scores: Sequence[float]) -> list[float]:
        if self.spec == "none":
            return list(scores)
        if isinstance(self.spec, dict):
            return [(s - self.spec["shift"]) / self.spec["scale"] for s in scores]
        for s in scores:
            self.count += 1
            delta = s - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (s - self.mean)
        std = math.sqrt(self.m2 / self.count) if self.count else 0.0
        std = std if std > 1e-8 else 1.0
        return [(s - self.mean) / std for s in scores]

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# ---------------------------------------------------------------- the scorers


class RewardModelScorer:
    """Scores (prompt, completion) pairs with a frozen sequence classifier (module docstring)."""

    def __init__(self, path: str, dtype: str = "float32", batch_size: int = 32, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification

        from rlcurr.learner.models import DTYPES, load_tokenizer
        from rlcurr.prompting import has_chat_template

        self.tokenizer = load_tokenizer(path)
        self.chat = has_chat_template(self.tokenizer)
        self.device = device or "cpu"
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=DTYPES[dtype])
        self.model.eval().requires_grad_(False).to(self.device)
        if self.model.config.pad_token_id is None:  # batches need it: the head reads the last non-pad token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.num_labels = self.model.config.num_labels
        self.batch_size = batch_size
        self._torch = torch

    def text(self, prompt: str, completion: str) -> str:
        if self.chat:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return prompt + completion

    def score_items(self, items: Sequence[tuple[str, str]]) -> list[float]:
        """items: (prompt, completion) pairs -> one float each."""
        torch = self._torch
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                texts = [self.text(p, c) for p, c in items[start: start + self.batch_size]]
                enc = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=not self.chat)
                enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                logits_BL = self.model(**enc).logits.float()
                score_B = logits_BL[:, 0] if self.num_labels == 1 else torch.softmax(logits_BL, dim=-1)[:, 1]
                out += score_B.cpu().tolist()
        return out


class JudgeScorer:
    """Runs a judge model on rendered judge inputs; returns its raw text per input (greedy by default)."""

    def __init__(self, path: str, dtype: str = "float32", max_tokens: int = 8, temperature: float = 0.0,
                 batch_size: int = 32, seed: int = 0):
        from rlcurr.learner.models import load_tokenizer
        from rlcurr.prompting import has_chat_template
        from rlcurr.rollout.hf_engine import HFEngine

        self.engine = HFEngine(str(path), dtype=dtype, seed=seed, max_batch=batch_size)
        self.tokenizer = load_tokenizer(path)
        self.chat = has_chat_template(self.tokenizer)
        self.max_tokens, self.temperature = max_tokens, temperature

    def encode(self, text: str) -> list[int]:
        from rlcurr.prompting import encode_prompt

        if self.chat:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return encode_prompt(self.tokenizer, text)

    def score_items(self, items: Sequence[str]) -> list[str]:
        """items: rendered judge inputs -> the judge's text for each."""
        from rlcurr.types import GenRequest

        requests = [GenRequest(self.encode(t), 1, self.max_tokens, temperature=self.temperature) for t in items]
        return [cs[0].text for cs in self.engine.generate(requests)]


def make_scorer(kind: str, **kwargs) -> RewardModelScorer | JudgeScorer:
    if kind == "reward_model":
        return RewardModelScorer(**kwargs)
    if kind == "judge":
        return JudgeScorer(**kwargs)
    raise ValueError(f"unknown scorer kind {kind!r}")
