"""Arithmetic with a calculator tool: the multi-turn example (rlcurr/rollout/multiturn.py).

A prompt is an expression, e.g. "37*24+15=". The model may call the calculator by writing the
expression in brackets; the closing "]" ends its turn, the tool appends the value and a newline,
and the model writes its final answer on the last line:

    37*24+15=        prompt
    [37*24+15]       model turn 1 (a tool call; "]" is the stop string)
    903\n            tool output (never trained on)
    903              model turn 2, then EOS

The reward (`last_line_match`) compares the answer's last line with the value, so an answer
without a tool call is right only if the model computed it itself, which a tiny model cannot for
these sizes. The SFT warm-up (model.warmup) shows the call format on the train pool, with the tool
output as context only; with `sft_tool_fraction` < 1 the other warm-up examples answer directly,
so the warmed model calls the tool only sometimes and RL has to learn to call it.

Distributions: add3 (3-digit + 3-digit), mul2 (2-digit x 2-digit), muladd (2-digit x 2-digit +
2-digit): longer expressions to copy into the call. Train and eval questions are disjoint.
The calculator evaluates + - * and parentheses over integers (Python's ast, nothing else is
executed); anything else gets "?" back.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from typing import Literal

from pydantic import Field, field_validator

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.types import Prompt

KNOWN = ("add3", "mul2", "muladd")
OPEN, CLOSE = "[", "]"


class CalcConfig(EnvConfigBase):
    name: Literal["calc"] = "calc"
    distributions: list[str] = Field(default_factory=lambda: list(KNOWN))
    train_size: int = Field(2000, ge=1, description="train pool size per distribution")
    max_turns: int = Field(2, ge=1, description="model turns per answer (tool calls + the final answer)")
    sft_tool_fraction: float = Field(1.0, ge=0, le=1, description=(
        "share of SFT warm-up examples that call the calculator; the others answer directly (a guess "
        "the tiny model cannot get right), so RL has to learn when to call the tool"))

    @field_validator("distributions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [d for d in v if d not in KNOWN]
        if unknown or not v:
            raise ValueError(f"unknown calc distribution(s) {unknown}; choose from {list(KNOWN)}")
        return v

    def build(self, seed: int) -> "CalcEnv":
        return CalcEnv(self, seed)


def _expression(rng: random.Random, dist: str) -> str:
    two = lambda: rng.randint(10, 99)  # noqa: E731
    if dist == "add3":
        return f"{rng.randint(100, 999)}+{rng.randint(100, 999)}"
    if dist == "mul2":
        return f"{two()}*{two()}"
    return f"{two()}*{two()}+{two()}"


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def calculate(expression: str) -> int | None:
    """Value of an integer + - * expression with parentheses; None for anything else."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError("not allowed")

    try:
        result = value(tree.body)
    except (ValueError, RecursionError):
        return None
    return result if abs(result) < 10**12 else None


def tool_output(trajectory: str) -> str:
    """The calculator's reply to the last bracketed call in `trajectory`: its value and a newline."""
    call = re.search(r"\[([^\[\]]*)\]$", trajectory)
    result = None if call is None else calculate(call.group(1))
    return f"{'?' if result is None else result}\n"


class CalcEnv(PoolEnvironment):
    default_rewards = ("last_line_match",)
    tool_stop = (CLOSE,)

    def __init__(self, cfg: CalcConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.max_turns = cfg.max_turns
        self._train: dict[str, list[Prompt]] = {}
        self._eval: dict[str, list[Prompt]] = {}
        for dist in cfg.distributions:
            rng = random.Random(f"calc-{seed}-{dist}")
            self._eval[dist] = self._draw(rng, dist, cfg.eval_size, "eval", exclude=set())
            self._train[dist] = self._draw(rng, dist, cfg.train_size, "train", {p.question for p in self._eval[dist]})

    @staticmethod
    def _draw(rng: random.Random, dist: str, size: int, split: str, exclude: set[str]) -> list[Prompt]:
        prompts, seen = [], set(exclude)
        for _ in range(size * 50):
            if len(prompts) == size:
                break
            expr = _expression(rng, dist)
            if f"{expr}=" in seen:
                continue
            seen.add(f"{expr}=")
            answer = str(calculate(expr))
            prompts.append(Prompt(uid=f"{dist}/{split}/{len(prompts)}", distribution=dist, question=f"{expr}=",
                                  answer=answer, hint=f"{OPEN}{expr}{CLOSE}", columns={"answer": answer}))
        return prompts


    def turn(self, prompt: Prompt, trajectory: str) -> str | None:
        return tool_output(trajectory)

    def sft_examples(self, distribution: str) -> list[tuple[Prompt, list[tuple[str, bool]]]]:
        """With the tool (a `sft_tool_fraction` share, chosen by the seed): the call, the tool's
        output (context, not a target), the final answer. Without: the final answer alone."""
        rng = random.Random(f"calc-sft-{self.seed}-{distribution}")
        out = []
        for p in self.train_prompts(distribution):
            call = f"{OPEN}{p.question[:-1]}{CLOSE}"
            with_tool = rng.random() < self.cfg.sft_tool_fraction
            out.append((p, [(call, False), (tool_output(call), True), (p.answer, False)] if with_tool
                        else [(p.answer, False)]))
        return out
