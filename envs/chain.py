"""Chain: running sums with a labelled scratchpad -- the curriculum proving ground.

Why this task. A curriculum can only save compute on a testbed where (1) RL measurably improves a
small model within minutes on 2 CPU cores, (2) the distributions form a ladder -- some solved,
some in the learnable band, some out of reach -- and (3) learning one rung raises the next, so a
sampler that climbs wins and one that pays for solved or unreachable rungs loses. A chain of
identical steps gives all three: the answer writes a running sum mod `modulus` after each of k
labelled steps, then the last sum. Every step is the same operation, so what rung k teaches is
what rung k+1 needs, and rung k+1 adds one more step to get right.

    steps: stride (default)  question 37e=        start 3, stride 7, last label e: k = 5
                             answer   a3=3b0c7=7d4e1#1
    steps: digits            question a3b5c1d7=   the k digits to add, labelled
                             answer   a3=3b8c1=9d6#6
    "c7=7" is a verbose step (label, digit added, '=', sum); "b0" a terse one (label, sum)

The reward checks the whole trace (`trace_is_correct`): one wrong step fails the answer, so a
random policy scores about 0 on long rungs and accuracy falls with k.

What RL has to learn. Measured on a 0.9M-parameter model (the variants below): GRPO
does not teach the step itself within a CPU budget -- 40 steps left rung accuracy where
the warm-up put it. What RL does quickly is sharpen: remove mistakes from a policy that mostly
knows the step. So the warm-up imitates a teacher that slips: at step i of an SFT trace the sum is
wrong with probability `slip_rate * i` (later sums add on to the wrong one, as a real slip
propagates). The slips grow along the trace, as imitation of long reasoning degrades with length,
which makes the ladder; removing them at step i helps every rung of length >= i, which is the
transfer; and a rung whose answers almost never come out right gives GRPO nothing to learn from,
which is why the long rungs are out of reach until the shorter ones are cleaned up.

Variants tried while building it (0.9M-parameter Qwen2, hidden 128, 4 layers; SFT lr 3e-3, batch
64; sampled accuracy per rung, seed 100 -- none of this on the benches' seeds):
- `steps: digits` (the question lists every digit), mod 10, only the final digit rewarded: after
  300 SFT steps len01 0.98, len02 0.32, longer rungs at chance; 1500 steps on len01-04: len02 0.71,
  len03 0.12, unseen lengths garbage.
- digits, whole trace checked: mod 10, 600 SFT steps: every rung ~0; mod 5: 600 steps 0.97 /
  0.28 / 0.06 / 0 ...; 1200 steps 1.00 / 0.64 / 0.22 / 0.05 / 0 ...; mod 3, 600 steps: 1.00 / 0.22 /
  0.05. GRPO from the mod-5 1200-step model (lengths 1-8, 10; 16 prompts x 8 answers, 40 steps,
  lr 1e-4, 2e-4, 5e-4): learnable mean 0.230 -> 0.238, 0.229, 0.23 (no learning). With slips
  (0.04 i) on top, 1800 SFT steps still left len02 at 0.41: finding the digit after label i is what
  this model learns slowly.
- `steps: stride` (the default): the digit to add is always at question position 1. No slips,
  300 SFT steps: 0.98 / 0.59 / 0.23 / 0.24 / 0.08 / ... / 0; 600 steps: 1.00 / 1.00 / 0.95 / 0.97 /
  0.89 / 0.80 / 0.76 / 0.60 / 0.59 / 0.45 (the step is learnt; nothing left for RL). With slips
  0.04 i, 600 steps (recipes/chain_uniform.yaml), seed 0, 40 GRPO steps at lr 2e-4: learnable mean
  0.363 -> 0.633, every in-band rung +0.23 to +0.43, len10 0.02 -> 0.30, len12 0.00 -> 0.20.

Slack for the token budget (docs/curriculum.md, "Budget tightening"): each step of an SFT trace is
verbose with probability `verbose_prob`, so traces of the same question vary in length (2 to 4
characters a step) and a budget can push the policy to terse steps without changing what it
computes.

Distributions: `len01`, `len02`, ... (one per entry of `lengths`) and `noise`: a chain of
`noise_length` digits whose "answer" is a digit drawn independently of the question (an
unlearnable arm: 1/modulus chance success, so its groups are mixed and look informative to
|A|-based samplers); it is scored on the digit after the last '#' alone. The hint of a prompt is
the first half of its terse, correct trace (docs/curriculum.md, "Guide-GRPO").
"""

from __future__ import annotations

import random
import re
import string
from typing import Literal

from pydantic import Field, field_validator

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.rewards.builtin import completion_text
from rlcurr.types import Prompt

LABELS = string.ascii_lowercase
NOISE = "noise"


def rung_name(length: int) -> str:
    return f"len{length:02d}"


class ChainConfig(EnvConfigBase):
    name: Literal["chain"] = "chain"
    lengths: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 10, 12],
                               description="one distribution (rung) per chain length")
    noise: bool = Field(True, description="add the unlearnable 'noise' distribution")
    noise_length: int = Field(3, ge=1, le=len(LABELS))
    modulus: int = Field(10, ge=2, le=10, description="digits are 0..modulus-1, sums are mod this")
    verbose_prob: float = Field(0.5, ge=0, le=1, description="share of verbose steps in SFT traces")
    steps: Literal["digits", "stride"] = Field(
        "stride", description="digits: the question lists the k digits to add; stride: the question gives a "
        "start digit, a stride and the last label, and every step adds the stride")
    slip_rate: float = Field(0.0, ge=0, le=0.5, description="SFT traces: chance of a wrong sum at step i is "
                             "slip_rate * i (capped at 0.9); later sums follow the wrong one")
    train_size: int = Field(4000, ge=1, description="train pool size per distribution")

    @field_validator("lengths")
    @classmethod
    def _valid_lengths(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one chain length is needed")
        bad = [k for k in v if not 1 <= k <= len(LABELS)]
        if bad:
            raise ValueError(f"chain lengths must be between 1 and {len(LABELS)} (got {bad})")
        if len(set(v)) != len(v):
            raise ValueError(f"chain lengths must be distinct (got {v})")
        return v

    def build(self, seed: int) -> "ChainEnv":
        return ChainEnv(self, seed)


def running_sums(digits: list[int], modulus: int) -> list[int]:
    sums, s = [], 0
    for d in digits:
        s = (s + d) % modulus
        sums.append(s)
    return sums


def trace(digits: list[int], verbose: list[bool], modulus: int, sums: list[int] | None = None) -> str:
    """The scratchpad and final answer, e.g. digits [3, 5], verbose [True, False], modulus 10 -> 'a3=3b8#8'.
    `sums` replaces the running sums (a trace with slips)."""
    sums = sums if sums is not None else running_sums(digits, modulus)
    steps = [f"{LABELS[i]}{d}={s}" if v else f"{LABELS[i]}{s}" for i, (d, s, v) in enumerate(zip(digits, sums, verbose))]
    return "".join(steps) + f"#{sums[-1]}"


_STEP = re.compile(r"([a-z])(?:(\d)=)?(\d)")


def trace_is_correct(text: str, digits: str, modulus: int) -> bool:
    """Every step present, in label order, each (verbose or terse) with the right digit and sum,
    then '#' and the final sum: nothing else."""
    body, sep, final = text.strip().rpartition("#")
    if not sep:
        return False
    steps = _STEP.findall(body)
    if "".join(a + (b + "=" if b else "") + c for a, b, c in steps) != body:
        return False  # stray characters between steps
    sums = running_sums([int(d) for d in digits], modulus)
    if len(steps) != len(sums) or final != str(sums[-1]):
        return False
    return all(label == LABELS[i] and (not digit or digit == digits[i]) and s == str(sums[i])
               for i, (label, digit, s) in enumerate(steps))


def slipped_sums(digits: list[int], modulus: int, slip_rate: float, rng: random.Random) -> list[int]:
    """Running sums with slips: at step i (1-based) the sum is wrong (another digit, uniformly) with
    probability min(0.9, slip_rate * i), and the steps after it add on to the wrong sum."""
    sums, s = [], 0
    for i, d in enumerate(digits, start=1):
        s = (s + d) % modulus
        if rng.random() < min(0.9, slip_rate * i):
            s = (s + rng.randrange(1, modulus)) % modulus
        sums.append(s)
    return sums


def question(digits: list[int], steps: str) -> str:
    """digits [3, 5, 1] -> 'a3b5c1=' ("digits"); digits [3, 7, 7, 7] -> '37d=' ("stride": start 3,
    stride 7, last label d)."""
    if steps == "stride":
        return f"{digits[0]}{digits[1] if len(digits) > 1 else 0}{LABELS[len(digits) - 1]}="
    return "".join(f"{LABELS[i]}{d}" for i, d in enumerate(digits)) + "="


def draw_digits(rng: random.Random, length: int, modulus: int, steps: str) -> list[int]:
    if steps == "stride":
        return [rng.randrange(modulus)] + [rng.randrange(1, modulus)] * (length - 1)
    return [rng.randrange(modulus) for _ in range(length)]


def question_space(length: int, modulus: int, steps: str) -> int:
    """How many distinct questions a rung has."""
    if steps == "stride":
        return modulus * (modulus - 1) if length > 1 else modulus
    return modulus**length


def final_answer(text: str) -> str | None:
    """The digit after the last '#', or None when there is none."""
    head, sep, tail = text.rpartition("#")
    return tail.strip() if sep else None


def chain_answer(prompts, completions, answer=None, digits=None, modulus=None, **kwargs) -> list[float | None]:
    """1.0 for a completely correct trace and final sum (`trace_is_correct`). A prompt without
    `digits` (the noise arm) is scored on the digit after the last '#' alone."""
    n = len(completions)
    answers, digits, moduli = (list(x) if x is not None else [None] * n for x in (answer, digits, modulus))
    out = []
    for c, ref, ds, m in zip(completions, answers, digits, moduli):
        text = completion_text(c)
        if ref is None:
            out.append(None)
        elif ds is None:
            out.append(float(final_answer(text) == str(ref)))
        else:
            out.append(float(trace_is_correct(text, ds, m)))
    return out


class ChainEnv(PoolEnvironment):
    default_rewards = ("envs.chain:chain_answer",)

    def __init__(self, cfg: ChainConfig, seed: int):
        self.cfg = cfg
        self.unlearnable = (NOISE,) if cfg.noise else ()
        self._train: dict[str, list[Prompt]] = {}
        self._eval: dict[str, list[Prompt]] = {}
        self._sft: dict[str, list[tuple[Prompt, str]]] = {}
        for k in cfg.lengths:
            self._build(rung_name(k), k, seed, noise=False)
        if cfg.noise:
            self._build(NOISE, cfg.noise_length, seed, noise=True)

    def _build(self, dist: str, length: int, seed: int, noise: bool) -> None:
        rng = random.Random(f"chain-{seed}-{dist}")
        eval_items = [self._item(rng, dist, length, "eval", i, noise) for i in range(self.cfg.eval_size)]
        held_out = {p.question for p, _ in eval_items}
        train_items = []
        # A small question space (short chains, or any "stride" rung: modulus * (modulus - 1)
        # questions) cannot hold a disjoint eval set: the pool then repeats the eval questions, and
        # held-out accuracy is accuracy on fresh samples, not on unseen questions.
        space = question_space(length, self.cfg.modulus, self.cfg.steps)
        exclude = held_out if space > 4 * (self.cfg.eval_size + self.cfg.train_size) else set()
        while len(train_items) < self.cfg.train_size:
            item = self._item(rng, dist, length, "train", len(train_items), noise)
            if item[0].question not in exclude:
                train_items.append(item)
        self._eval[dist] = [p for p, _ in eval_items]
        self._train[dist] = [p for p, _ in train_items]
        self._sft[dist] = train_items

    def _item(self, rng: random.Random, dist: str, length: int, split: str, i: int,
              noise: bool) -> tuple[Prompt, str]:
        m = self.cfg.modulus
        digits = draw_digits(rng, length, m, "digits" if noise else self.cfg.steps)
        verbose = [rng.random() < self.cfg.verbose_prob for _ in range(length)]
        sums = slipped_sums(digits, m, self.cfg.slip_rate, rng) if self.cfg.slip_rate else None
        target = trace(digits, verbose, m, sums)
        answer = str(rng.randrange(m)) if noise else str(running_sums(digits, m)[-1])
        hint = trace(digits, [False] * length, m)[: 2 * max(1, length // 2)]
        columns = {"answer": answer} if noise else {"answer": answer, "digits": "".join(map(str, digits)), "modulus": m}
        prompt = Prompt(uid=f"{dist}/{split}/{i}", distribution=dist, question=question(digits, "digits" if noise else self.cfg.steps), answer=answer,
                        hint=hint, columns=columns)
        return prompt, target


    def sft_examples(self, distribution: str) -> list[tuple[Prompt, str]]:
        """(prompt, trace) pairs; traces mix verbose and terse steps (the budget's slack)."""
        return self._sft[distribution]
