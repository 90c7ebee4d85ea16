"""Tiny arithmetic scorers built locally, so that the model-reward recipes run with nothing
downloaded: a sequence classifier (`build_reward_model`) and a yes/no judge (`build_judge`).

Why: recipes/rm_quickstart.yaml and judge_quickstart.yaml must train from a clean checkout, and a
reward model has to come from somewhere. `params.build` of `reward_model` / `judge` builds one here
into $RLCURR_CACHE/reward_models/ (keyed by a hash of the build spec and template, like the warm
models of rlcurr.learner.prepare), once.

Data: every "a+b=" question with `digits`-digit operands (all 100 for digits 1, the quickstart's
add1 distribution; else a seeded sample), each with answers drawn half right and half wrong. The
label of each answer is the exact-match reward's (rlcurr.rewards.builtin.exact_match), never set
by hand, so a scorer that learns them agrees with the environment's verifier.
- the classifier (data version 2, `classifier_examples`): right = the sum, often wrapped in
  whitespace exact_match strips (spaces, tabs, newlines, CR, VT, FF); wrong = another number a sum
  could be or one off by 1-3 (also whitespace-wrapped), and malformed text of the kinds a policy
  drifts to under GRPO: characters of the tokenizer's alphabet (letters, punctuation) mixed with
  digits ("J9", "5f10"), extra text before / after the right sum ("x10", "10ab", "1+10"), several
  numbers ("1 9 10"), the right digits with junk between or around them ("1x0", "1 0"), reversed,
  cut or repeated digits, empty or whitespace-only answers. Version 1 (in `examples`, still the
  judge's data) had few malformed answers and none with letters; GRPO on its classifier learned
  to write letters the classifier scored ~1.0 (docs/results.md, "Rewards computed by models").
- the judge: `examples` (version 1 data), unchanged.
What neither sees are the policy's own answers, which is what `reward/rm_agreement` checks
during training.

- the reward model: the quickstart family's Qwen2 (character tokenizer, rlcurr.learner.models)
  with a 2-label sequence-classification head, cross-entropy on (question + answer) for `steps`
  steps; P(label 1) = P(right) is its reward;
- the judge: the same causal LM, SFT-warmed (rlcurr.learner.sft) to write "yes" / "no" after the
  reward's own template rendered with the question and the answer.
Each writes build.json next to the weights: its spec and its accuracy on 2000 fresh examples.
Only addition is built: this is a demonstration device, not a reward model for real data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rlcurr.errors import UserError

DEFAULTS = {"digits": 1, "steps": 3000, "lr": 2.0e-3, "batch_size": 128, "hidden_size": 96, "num_layers": 3,
            "num_heads": 2, "intermediate_size": 288, "seed": 0}
VERSION = 1  # the judge's: bump when its data or training changes (cached builds are keyed by it)
CLASSIFIER_VERSION = 2  # the classifier's; 2: `classifier_examples` (v1 was `examples`, hacked by GRPO)


def build_spec(build: Any, reward: str) -> dict:
    """`params.build`: true (the defaults) or a mapping overriding some of DEFAULTS."""
    if build is True:
        return dict(DEFAULTS)
    if not isinstance(build, dict) or not set(build) <= set(DEFAULTS):
        raise UserError(f"reward {reward!r}: params.build: true or a mapping of {sorted(DEFAULTS)} (got {build!r})")
    spec = {**DEFAULTS, **build}
    for k, v in spec.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 if k == "lr" else \
            isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if k == "seed" else v >= 1)
        if not ok or (k == "digits" and v > 4):
            raise UserError(f"reward {reward!r}: params.build.{k}: {v!r} is not allowed")
    return spec


def questions(digits: int, seed: int) -> list[tuple[str, str]]:
    """(question, answer) for every a+b with `digits`-digit operands (a seeded 2000 of them past 1 digit)."""
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1
    if digits == 1:
        pairs = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
    else:
        rng = random.Random(seed)
        pairs = [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(2000)]
    return [(f"{a}+{b}=", str(a + b)) for a, b in pairs]


def wrong_answer(rng: random.Random, right: str, top: int) -> str:
    """A wrong answer to a question whose sum is `right` (sums run 0..top). Mostly plausible
    numbers, which is what a policy that knows the format gets wrong; some malformed text."""
    n = int(right)
    kind = rng.randrange(10)
    if kind < 5:  # any other number a sum could be
        return str(rng.choice([m for m in range(top + 1) if m != n]))
    if kind < 7:
        return str(max(0, n + rng.choice([-3, -2, -1, 1, 2, 3]))) if n > 3 else str(n + rng.randint(1, 3))
    if kind == 7:
        return right + rng.choice(["0", "1", "+", "=", "\n1+2=", "\n3"])
    if kind == 8:
        return right[::-1] if len(right) > 1 and right[::-1] != right else right[:-1] + rng.choice("0123456789")
    return "".join(rng.choice("0123456789+=\n ") for _ in range(rng.randint(0, 4)))


def examples(digits: int, count: int, seed: int) -> list[tuple[str, str, str, int]]:
    """(question, answer, reference, label): half right, half wrong, labelled by exact_match."""
    from rlcurr.rewards.builtin import exact_match

    rng = random.Random(seed)
    pool = questions(digits, seed)
    top = 2 * (10 ** digits - 1)
    out = []
    for i in range(count):
        q, ref = rng.choice(pool)
        if i % 2 == 0:
            a = rng.choice(["", "", "", " "]) + ref + rng.choice(["", "", "\n", " "])
        else:
            a = wrong_answer(rng, ref, top)
        label = int(exact_match([q], [a], answer=[ref])[0] == 1.0)
        out.append((q, a, ref, label))
    return out


WHITESPACE = " \t\n\r\x0b\x0c"  # what str.strip() (so exact_match) removes, all in the tokenizer's alphabet


def _alphabet() -> tuple[str, str]:
    """(non-digit non-space characters, whitespace) of the tiny models' character tokenizer."""
    from rlcurr.learner.models import CHARSET

    return "".join(c for c in CHARSET if not c.isdigit() and not c.isspace()), \
        "".join(c for c in CHARSET if c.isspace())


def _pad(rng: random.Random, text: str, space: str) -> str:
    """`text` wrapped in 0-2 whitespace characters each side (a space or newline most often)."""
    def side():
        return "".join(rng.choice("  \n" + space) for _ in range(rng.choice([0, 0, 1, 1, 2])))
    return side() + text + side()


def malformed_answer(rng: random.Random, right: str, top: int, chars: str, space: str) -> str:
    """Text around, instead of or mixed with the sum `right`: what a policy rewarded by a classifier
    writes once it leaves the format (mostly wrong under exact match; labelled by it anyway)."""
    digits = "0123456789"
    junk = lambda k: "".join(rng.choice(chars) for _ in range(k))  # noqa: E731
    number = lambda: str(rng.randint(0, top))  # noqa: E731
    kind = rng.randrange(8)
    if kind == 0:  # letters / punctuation mixed with digits: "J9", "5f10", "a1b"
        n = rng.randint(1, 6)
        text = [rng.choice(digits) if rng.random() < 0.5 else rng.choice(chars) for _ in range(n)]
        if all(c.isdigit() for c in text):
            text[rng.randrange(n)] = rng.choice(chars)
        return "".join(text)
    if kind == 1:  # junk before the right sum: "x10", "J 10", "3+10"
        return rng.choice([junk(rng.randint(1, 3)), number(), number() + rng.choice("+=-")]) + \
            rng.choice(["", "", " ", "\n"]) + right
    if kind == 2:  # junk after the right sum: "10ab", "10 x", "10=3"
        return right + rng.choice(["", "", " ", "\n"]) + \
            rng.choice([junk(rng.randint(1, 3)), number(), rng.choice("+=-") + number()])
    if kind == 3:  # several numbers, the right one sometimes among them: "1 9 10"
        nums = [number() for _ in range(rng.randint(2, 3))]
        if rng.random() < 0.5:
            nums[rng.randrange(len(nums))] = right
        return rng.choice([" ", " ", "\n", ",", "+", ", "]).join(nums)
    if kind == 4:  # the right digits with junk between or around them: "1x0", "1 0", "x5y"
        if len(right) > 1 and rng.random() < 0.7:
            i = rng.randint(1, len(right) - 1)
            return right[:i] + rng.choice([junk(1), junk(2), rng.choice(space)]) + right[i:]
        return junk(rng.randint(1, 2)) + right + junk(rng.randint(1, 2))
    if kind == 5:  # empty or whitespace only
        return "".join(rng.choice(space) for _ in range(rng.choice([0, 0, 1, 2, 3])))
    if kind == 6:  # reversed, cut or repeated digits: "01", "1", "1010", "55"
        return rng.choice([right[::-1] + right[::-1][:1], right[:-1] or right + right, right + right,
                           right + right[-1], right[0] + right])
    return junk(rng.randint(1, 6))  # no digit at all


def classifier_examples(digits: int, count: int, seed: int) -> list[tuple[str, str, str, int]]:
    """The classifier's data (version 2): (question, answer, reference, label), half right (the
    sum with harmless whitespace) and half wrong (40 % plausible numbers, 60 % malformed text),
    each answer cut to the sum's length + 4 characters; every label is exact_match's (after the cut)."""
    from rlcurr.rewards.builtin import exact_match

    chars, space = _alphabet()
    rng = random.Random(seed)
    pool = questions(digits, seed)
    top = 2 * (10 ** digits - 1)
    longest = len(str(top)) + 4  # 6 for 1 digit: the quickstart policy's max_tokens; also keeps the build short
    qs, answers, refs = [], [], []
    for i in range(count):
        q, ref = rng.choice(pool)
        if i % 2 == 0:
            a = _pad(rng, ref, space) if rng.random() < 0.6 else ref
        elif rng.random() < 0.4:
            a = wrong_answer(rng, ref, top) if rng.random() < 0.5 else \
                str(rng.choice([m for m in range(top + 1) if m != int(ref)]))
            a = _pad(rng, a, space) if rng.random() < 0.3 else a
        else:
            a = malformed_answer(rng, ref, top, chars, space)
        qs.append(q), answers.append(a[:longest]), refs.append(ref)
    labels = exact_match(qs, answers, answer=refs)
    return [(q, a, ref, int(y == 1.0)) for q, a, ref, y in zip(qs, answers, refs, labels)]


def _tiny(spec: dict):
    """The fields rlcurr.learner.models.build_tiny_model reads (rlcurr.config.TinyModelConfig's;
    not imported: rlcurr.config reaches this module through the reward registry)."""
    from types import SimpleNamespace

    return SimpleNamespace(arch="qwen2", hidden_size=spec["hidden_size"], num_layers=spec["num_layers"],
                           num_heads=spec["num_heads"], num_kv_heads=spec["num_heads"],
                           intermediate_size=spec["intermediate_size"], max_position_embeddings=256)


def _cached(kind: str, spec: dict, extra: Any, build) -> Path:
    from rlcurr.learner.prepare import _cached as cached, _key, cache_root

    version = CLASSIFIER_VERSION if kind == "classifier" else VERSION
    return cached(cache_root() / "reward_models" / kind / _key(version, spec, extra), build)


def build_reward_model(build: Any) -> Path:
    """The tiny arithmetic classifier's directory (built into the cache the first time)."""
    spec = build_spec(build, "reward_model")
    return _cached("classifier", spec, None, lambda out: _train_classifier(spec, out))


def build_judge(build: Any, template: str) -> Path:
    """The tiny yes/no judge for `template`'s inputs (built into the cache the first time)."""
    spec = build_spec(build, "judge")
    return _cached("judge", spec, template, lambda out: _train_judge(spec, template, out))


def _train_classifier(spec: dict, out: Path) -> Path:
    """Trains with at most RLCURR_CPU_THREADS torch threads: a bench builds it before any trainer
    has set the cap, and two threads on cores others use spin (4x the CPU time per step)."""
    import torch

    from rlcurr.cluster import cpu_thread_cap

    threads, cap = torch.get_num_threads(), cpu_thread_cap()
    if cap is not None and cap < threads:
        torch.set_num_threads(cap)
    try:
        return _train_classifier_threads(spec, out)
    finally:
        torch.set_num_threads(threads)


def _train_classifier_threads(spec: dict, out: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    from rlcurr.learner.models import build_char_tokenizer

    tok = build_char_tokenizer()
    t = _tiny(spec)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                         num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                         num_key_value_heads=t.num_kv_heads, max_position_embeddings=t.max_position_embeddings,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         num_labels=2, id2label={0: "wrong", 1: "right"}, label2id={"wrong": 0, "right": 1},
                         torch_dtype="float32")
    torch.manual_seed(spec["seed"])
    model = AutoModelForSequenceClassification.from_config(config)
    data = classifier_examples(spec["digits"], 20000, spec["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=0.01)
    rng = random.Random(spec["seed"])
    warm = max(1, spec["steps"] // 20)
    model.train()
    for step in range(spec["steps"]):
        for g in opt.param_groups:
            g["lr"] = spec["lr"] * min(1.0, (step + 1) / warm)
        batch = [data[rng.randrange(len(data))] for _ in range(spec["batch_size"])]
        enc = tok([q + a for q, a, _, _ in batch], padding=True, return_tensors="pt")
        logits_BL = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits_BL, torch.tensor([y for *_, y in batch]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    held = classifier_examples(spec["digits"], 2000, spec["seed"] + 1)
    right = 0
    with torch.no_grad():
        for i in range(0, len(held), 256):
            chunk = held[i: i + 256]
            enc = tok([q + a for q, a, _, _ in chunk], padding=True, return_tensors="pt")
            pred = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.argmax(-1)
            right += sum(int(p) == y for p, (*_, y) in zip(pred.tolist(), chunk))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "build.json").write_text(json.dumps({"spec": spec, "data_version": CLASSIFIER_VERSION,
                                                "accuracy_fresh_examples": right / len(held)}) + "\n")
    return out


def _train_judge(spec: dict, template: str, out: Path) -> Path:
    import torch

    from rlcurr.learner.models import build_tiny_model, load_tokenizer
    from rlcurr.learner.sft import sft_warmup
    from rlcurr.prompting import encode_prompt
    from rlcurr.rewards.model_scorers import JudgeScorer, parse_judgement, render_judge_input

    base = build_tiny_model(_tiny(spec), out / "base", spec["seed"])
    tok = load_tokenizer(base)

    def encoded(q: str, a: str, ref: str) -> list[int]:
        return encode_prompt(tok, render_judge_input(template, q, a, {"answer": ref}))

    data = [(encoded(q, a, ref), tok("yes" if y else "no", add_special_tokens=False)["input_ids"], None)
            for q, a, ref, y in examples(spec["digits"], 20000, spec["seed"])]
    torch.manual_seed(spec["seed"])
    sft_warmup(base, out, data, steps=spec["steps"], lr=spec["lr"], batch_size=spec["batch_size"], seed=spec["seed"])
    import shutil

    shutil.rmtree(out / "base")
    held = examples(spec["digits"], 500, spec["seed"] + 1)
    judge = JudgeScorer(str(out), max_tokens=4)
    texts = judge.score_items([render_judge_input(template, q, a, {"answer": ref}) for q, a, ref, _ in held])
    right = 0
    for text, (*_, y) in zip(texts, held):
        try:
            right += parse_judgement(text, "yes_no") == y
        except ValueError:
            pass
    (out / "build.json").write_text(json.dumps({"spec": spec, "accuracy_fresh_examples": right / len(held)}) + "\n")
    return out
