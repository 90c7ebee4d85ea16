"""Skills: four distinct digit-string skills with dead prompts -- a proving ground that looks like real RL data.

Why this task. Published RL runs (GRESO: over 90 % of a step's zero-variance prompts were
zero-variance the step before; Polaris: J-shaped pass rates, many prompts at 8/8) show prompts
that stay solved or stay out of reach, across several skills. Here each skill is a distribution
whose train pool holds learnable prompts plus dead ones (easy-dead: solved 8/8; hard-dead: 0/8),
the dead share being a knob; a prompt's difficulty is a property of the prompt (its size), so its
pass rate persists from one profile to the next.

    skill  question   answer (answer_symbols: digits)   answer (all_own, the default)
    rev    R3141=     1413  reverse                      #&#%  (!#$%&*+/?@)
    inc    I3149=     4250  every digit + 1 mod 10       ecfa  (a-j)
    sort   S3141=     1134  digits in ascending order    llno  (k-t)
    max    M3141=     3344  running maximum              DDEE  (A-J)
    (also available: psum P31415= -> 4556, sums of neighbours mod 10; dup D314= -> 331144)

Reward: exact match of the stripped answer (the built-in `exact_match`).

Little transfer between skills. A first version wrote every answer in digits and its teacher
slipped to a uniformly drawn digit: training one skill alone then lifted the others by up to
+0.27 (sort -> max), because what GRPO removed (late-position slips into digits) was shared.
So each skill writes its answers in ten symbols of its own (the output rows of one skill are not
another's) and the teacher makes mistakes typical of the skill (`slips: typical`;
`typical_mistake`). With `answer_symbols: per_skill` rev kept the question's digits, and every
other skill trained alone pulled rev down (by up to 0.26: forgetting); `all_own` (the default)
gives rev its own symbols too. What is left is drift without an anchor (inc alone: max -0.14),
which the recipes' KL term (algo.kl_coef 0.2) holds within the seed spread. The transfer
matrices of every variant are in docs/results.md, "Realistic data: the skills proving ground".

The slipping teacher (envs/chain.py's lesson: GRPO on CPU removes mistakes from a policy that
mostly knows the skill; it does not teach one in minutes). The SFT warm-up imitates a teacher
whose answer digit i (1-based) is wrong with probability min(0.9, slip_rate * (i -
clean_positions)): sizes 1-2 are clean (easy-dead), the learnable sizes 4-7 come out right about
0.8 / 0.6 / 0.4 / 0.25 of the time, sizes 11-12 almost never (hard-dead at the start; training
that removes slips makes some of them solvable later). The warm-up set (`warmup_size` per skill,
sizes 1..12 uniformly, no eval question) does not depend on dead_share or labelled: every w and
both variants start from the same warmed model.

Pools. Per skill: `learnable_size` learnable prompts (sizes learn_lengths, the same prompts for
every dead_share), then n_dead = round(w / (1 - w) * learnable_size) dead prompts, half easy
(sizes easy_lengths), half hard (hard_lengths); dead prompts are the first n of their own streams,
so a larger w only adds prompts. Eval per skill: `eval_size` held-out learnable prompts (disjoint
from the pools and the warm-up), plus `hard_eval_size` held-out hard-dead prompts per skill that
carry distribution "hard_dead": the trainer's evaluate() groups by prompt distribution, so they
show as eval/accuracy/hard_dead, left out of eval/accuracy_mean (`unlearnable`). Hints: the first
half of the correct answer (Guide-GRPO). `labelled: false` puts every train prompt in one
distribution "mixed" (same uids, questions, order); eval prompts keep their skill, so the eval
keys are the same as labelled.

Measurements (pass rates by size, the dead share each w gives, persistence between profiles,
uniform's gain, every variant tried while building this) are in docs/results.md, "Realistic
data: the skills proving ground".
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from pydantic import Field, field_validator, model_validator

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.types import Prompt

HARD_DEAD = "hard_dead"  # eval-only group: held-out hard-dead prompts of every skill (unlearnable)
MIXED = "mixed"  # the single distribution of the unlabelled variant

#: skill -> the letter that starts its question
CODES = {"rev": "R", "inc": "I", "psum": "P", "sort": "S", "max": "M", "dup": "D"}
BANDS = ("easy", "learn", "hard")


def solve(skill: str, digits: str) -> str:
    """The correct answer of a skill on a digit string.

    rev   reverse                         '3141' -> '1413'
    inc   every digit + 1 mod 10          '3149' -> '4250'
    psum  sums of neighbours mod 10       '31415' -> '4556' (L+1 digits -> L)
    sort  digits in ascending order       '3141' -> '1134'
    max   running maximum                 '3141' -> '3344'
    dup   every digit twice               '314' -> '331144'
    """
    if skill == "rev":
        return digits[::-1]
    if skill == "inc":
        return "".join(str((int(c) + 1) % 10) for c in digits)
    if skill == "psum":
        return "".join(str((int(a) + int(b)) % 10) for a, b in zip(digits, digits[1:]))
    if skill == "sort":
        return "".join(sorted(digits))
    if skill == "max":
        out, m = [], -1
        for c in digits:
            m = max(m, int(c))
            out.append(str(m))
        return "".join(out)
    if skill == "dup":
        return "".join(c + c for c in digits)
    raise ValueError(f"unknown skill {skill!r}")


def question(skill: str, digits: str) -> str:
    return f"{CODES[skill]}{digits}="


def input_digits(skill: str, length: int) -> int:
    """Digits in the question of a prompt of size `length` (the answer has `length` digits,
    `2 * length` for dup)."""
    return length + 1 if skill == "psum" else length


#: skill -> the ten symbols its answers are written in (answer_symbols: per_skill); digits otherwise
SYMBOLS = {"rev": "0123456789", "inc": "abcdefghij", "sort": "klmnopqrst", "max": "ABCDEFGHIJ",
           "psum": "KLMNOPQRST", "dup": "uvwxyzUVWX"}
#: rev's symbols under answer_symbols: all_own (no skill then answers in the question's digits)
REV_OWN_SYMBOLS = "!#$%&*+/?@"


def written(skill: str, answer: str, symbols: str) -> str:
    """The answer as the skill writes it under `answer_symbols`: digit d -> SYMBOLS[skill][d]
    (per_skill; rev -> REV_OWN_SYMBOLS[d] under all_own), or the digits themselves."""
    if symbols == "digits":
        return answer
    table = REV_OWN_SYMBOLS if symbols == "all_own" and skill == "rev" else SYMBOLS[skill]
    return "".join(table[int(c)] for c in answer)


def slipped(answer: str, slip_rate: float, clean: int, rng: random.Random, wrong=None) -> str:
    """The teacher's answer (digits): position i (1-based) is replaced by another digit with
    probability min(0.9, slip_rate * (i - clean)) past the first `clean` positions. The wrong digit
    is `wrong(i - 1, rng)` (a mistake typical of the skill) when given and different from the
    right one, else a uniformly drawn other digit."""
    out = []
    for i, c in enumerate(answer, start=1):
        if i > clean and rng.random() < min(0.9, slip_rate * (i - clean)):
            typical = wrong(i - 1, rng) if wrong is not None else None
            c = typical if typical is not None and typical != c else str((int(c) + rng.randrange(1, 10)) % 10)
        out.append(c)
    return "".join(out)


def typical_mistake(skill: str, digits: str):
    """A mistake of `skill` at answer position j (0-based), or None (then a random digit):
    rev reads a neighbour of the right input digit, inc adds 0 or 2 instead of 1, sort writes a
    neighbour in the sorted order, max writes the input digit instead of the running maximum.
    Skill-specific slips keep what GRPO removes from one skill from being what the others need."""
    answer = solve(skill, digits)

    def neighbour(s: str, j: int, rng: random.Random) -> str | None:
        options = [s[k] for k in (j - 1, j + 1) if 0 <= k < len(s)]
        return rng.choice(options) if options else None

    if skill == "rev":
        return lambda j, rng: neighbour(digits, len(digits) - 1 - j, rng)
    if skill == "inc":
        return lambda j, rng: str((int(digits[j]) + rng.choice((0, 2))) % 10)
    if skill == "sort":
        return lambda j, rng: neighbour(answer, j, rng)
    if skill == "max":
        return lambda j, rng: digits[j]
    return None


class SkillsConfig(EnvConfigBase):
    name: Literal["skills"] = "skills"
    skills: list[str] = Field(default_factory=lambda: ["rev", "inc", "sort", "max"],
                              description=f"one distribution per skill; from {list(CODES)}")
    easy_lengths: list[int] = Field(default_factory=lambda: [1, 2], description="sizes of easy-dead prompts")
    learn_lengths: list[int] = Field(default_factory=lambda: [4, 5, 6, 7], description="sizes of learnable prompts")
    hard_lengths: list[int] = Field(default_factory=lambda: [11, 12], description="sizes of hard-dead prompts")
    warmup_lengths: list[int] | None = Field(None, description="sizes in the SFT warm-up set; default 1..max size")
    slip_rate: float = Field(0.08, ge=0, le=0.9, description="SFT teacher: answer position i slips with "
                             "probability min(0.9, slip_rate * (i - clean_positions))")
    clean_positions: int = Field(2, ge=0, description="answer positions the teacher never slips on")
    slips: Literal["random", "typical"] = Field("typical", description="the teacher's wrong digit: a uniformly "
                                                "drawn other digit, or a mistake typical of the skill")
    answer_symbols: Literal["digits", "per_skill", "all_own"] = Field(
        "all_own", description="answers written in digits; or each skill in its own ten symbols (SYMBOLS; rev "
        "keeps the digits); or all_own: rev too writes in its own symbols (REV_OWN_SYMBOLS)")
    learnable_size: int = Field(64, ge=1, description="learnable train prompts per skill (the same for every dead_share)")
    dead_share: float = Field(0.5, ge=0, lt=1, description="share of dead prompts in each skill's train pool: "
                              "n_dead = round(dead_share / (1 - dead_share) * learnable_size), on top of the learnable ones")
    easy_fraction: float = Field(0.5, ge=0, le=1, description="share of the dead prompts that are easy-dead")
    labelled: bool = Field(True, description="false: every train prompt in one distribution 'mixed'")
    hard_eval_size: int = Field(16, ge=0, description="held-out hard-dead prompts per skill (eval group 'hard_dead')")
    warmup_size: int = Field(3000, ge=1, description="SFT warm-up examples per skill (independent of dead_share)")

    @field_validator("skills")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in CODES]
        if unknown or not v or len(set(v)) != len(v):
            raise ValueError(f"skills must be distinct names from {list(CODES)} (got {v})")
        return v

    @model_validator(mode="after")
    def _bands(self) -> "SkillsConfig":
        bands = [self.easy_lengths, self.learn_lengths, self.hard_lengths]
        if any(not b or min(b) < 1 for b in bands):
            raise ValueError("easy_lengths, learn_lengths and hard_lengths must be non-empty lists of sizes >= 1")
        if not max(self.easy_lengths) < min(self.learn_lengths) <= max(self.learn_lengths) < min(self.hard_lengths):
            raise ValueError("sizes must grow from easy to learn to hard, without overlap")
        return self

    def build(self, seed: int) -> "SkillsEnv":
        return SkillsEnv(self, seed)

    def dead_count(self) -> tuple[int, int]:
        """(easy-dead, hard-dead) train prompts per skill."""
        w = self.dead_share
        n = round(w / (1 - w) * self.learnable_size)
        easy = round(n * self.easy_fraction)
        return easy, n - easy


class SkillsEnv(PoolEnvironment):
    default_rewards = ("exact_match",)
    unlearnable = (HARD_DEAD,)

    def __init__(self, cfg: SkillsConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._train: dict[str, list[Prompt]] = {}
        self._eval: dict[str, list[Prompt]] = {}
        self._sft: dict[str, list[tuple[Prompt, str]]] = {}
        n_easy, n_hard = cfg.dead_count()
        for skill in cfg.skills:
            # Eval sets first, each from its own stream: nothing below changes them.
            eval_learn = self._draw(skill, "learn", "eval", cfg.eval_size, cfg.learn_lengths, set())
            eval_hard = self._draw(skill, "hard", "eval", cfg.hard_eval_size, cfg.hard_lengths, set())
            held_out = {p.question for p in eval_learn + eval_hard}
            # Train prompts: the learnable ones do not depend on dead_share; the dead ones are the
            # first n of their own streams (a larger dead_share adds prompts, never swaps them).
            used = set(held_out)
            learn = self._draw(skill, "learn", "train", cfg.learnable_size, cfg.learn_lengths, used)
            easy = self._draw(skill, "easy", "train", n_easy, cfg.easy_lengths, used)
            hard = self._draw(skill, "hard", "train", n_hard, cfg.hard_lengths, used)
            self._train[skill] = learn + easy + hard
            self._eval[skill] = eval_learn + [dataclasses.replace(p, distribution=HARD_DEAD) for p in eval_hard]
            self._sft[skill] = self._warmup(skill, held_out)
        if not cfg.labelled:
            self._train = {MIXED: [dataclasses.replace(p, distribution=MIXED) for s in cfg.skills for p in self._train[s]]}
            self._eval = {MIXED: [p for s in cfg.skills for p in self._eval[s]]}
            self._sft = {MIXED: [x for s in cfg.skills for x in self._sft[s]]}

    def _draw(self, skill: str, band: str, split: str, size: int, lengths: list[int], used: set[str]) -> list[Prompt]:
        """`size` prompts of distinct questions not in `used` (which grows), sizes cycling through
        `lengths` (equally represented, unless a size has too few distinct questions)."""
        rng = random.Random(f"skills-{self.seed}-{skill}-{band}-{split}")
        out: list[Prompt] = []
        misses = attempt = 0
        while len(out) < size:
            length = lengths[attempt % len(lengths)]  # a size whose questions run out is skipped more
            attempt += 1
            digits = "".join(rng.choice("0123456789") for _ in range(input_digits(skill, length)))
            q = question(skill, digits)
            if q in used:
                misses += 1
                if misses > 100 * (size + 10):
                    raise ValueError(f"skills: cannot draw {size} distinct {band} prompts of sizes {lengths} for "
                                     f"{skill}; use larger sizes or fewer prompts")
                continue
            used.add(q)
            out.append(self._prompt(skill, band, split, len(out), digits, length))
        return out

    def _prompt(self, skill: str, band: str, split: str, i: int, digits: str, length: int) -> Prompt:
        answer = written(skill, solve(skill, digits), self.cfg.answer_symbols)
        return Prompt(uid=f"{skill}/{split}/{band}/{i}", distribution=skill, question=question(skill, digits),
                      answer=answer, hint=answer[: max(1, len(answer) // 2)],
                      columns={"answer": answer, "band": band, "size": length})

    def _warmup(self, skill: str, held_out: set[str]) -> list[tuple[Prompt, str]]:
        """SFT examples: sizes 1..max (or warmup_lengths) uniformly, targets from the slipping
        teacher; no eval question. Independent of dead_share and labelled."""
        cfg = self.cfg
        lengths = cfg.warmup_lengths or list(range(1, max(cfg.hard_lengths) + 1))
        rng = random.Random(f"skills-{self.seed}-{skill}-warmup")
        out = []
        while len(out) < cfg.warmup_size:
            length = rng.choice(lengths)
            digits = "".join(rng.choice("0123456789") for _ in range(input_digits(skill, length)))
            if question(skill, digits) in held_out:
                continue
            p = self._prompt(skill, "warmup", "warmup", len(out), digits, length)
            wrong = typical_mistake(skill, digits) if cfg.slips == "typical" else None
            teacher = slipped(solve(skill, digits), cfg.slip_rate, cfg.clean_positions, rng, wrong)
            out.append((p, written(skill, teacher, cfg.answer_symbols)))
        return out

    def sft_examples(self, distribution: str) -> list[tuple[Prompt, str]]:
        """(prompt, teacher answer) pairs; the teacher slips more at later answer positions."""
        return self._sft[distribution]
