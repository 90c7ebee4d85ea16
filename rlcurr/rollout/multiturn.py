"""Multi-turn generation with tools: model turn -> tool call parsed -> tool output appended -> next turn.

An environment with a tool (`Environment.tool_stop` non-empty, see rlcurr/environment.py) ends a tool call
with one of its stop strings (e.g. "]" after "[37*24"). Each round, every answer that stopped on
a stop string is handed to `env.turn(prompt, trajectory)`, which parses the call and returns the
tool's output as text (or None: the answer ends there). `trajectory` ends exactly with the stop
string: a model turn ends with the token that completed it and its text is that token's whole
decoding (rlcurr.rollout.stop_strings), so with a merged token ("]=" completing "]") the turn's
text runs past the stop string; the tool reads the trajectory cut right after the string, while
the rest of the token ("=") stays in the answer, before the tool output, as the model wrote it.
The output's tokens are appended to the answer and the model continues from prompt + everything
so far, as a new request with the answer's remaining token budget. Up to `env.max_turns` model
turns per answer.

What the answer is afterwards (one `Completion` per answer, as single-turn):
- `token_ids`: model turns and tool outputs in order, exactly the ids the model was conditioned
  on (never re-tokenised from text), so the learner scores the same sequence;
- `tool_mask`: True at tool-output tokens (their `logprobs` are 0.0 placeholders); the learner
  leaves them out of the loss, the logprob-parity metric and importance weights;
- `text`: the whole trajectory (model text and tool outputs), what reward functions see;
- `rollout.max_tokens` bounds the whole trajectory, tool outputs included (the learner's answer
  length); a tool output that would not fit ends the answer with finish_reason "length".

Runs on the driver between engine calls, so it works with every engine (each continuation is a
fresh request: the engine re-reads the prefix; vLLM's prefix cache makes that cheap, the HF
engine recomputes it). Left out: tools that run asynchronously or in parallel, and chat-template
tool messages (the environment formats its tool output as plain text; a chat model's tool role
markup is the environment's job).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from rlcurr.rollout.stop_strings import through_stop
from rlcurr.types import Completion, GenRequest, Prompt


@dataclass
class Trajectory:
    """One answer being built: its request, and everything generated or inserted so far."""

    request: GenRequest
    prompt: Prompt
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tool_mask: list[bool] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # model turns and tool outputs, as text
    turns: int = 0
    finish_reason: str = "length"
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def call(self) -> str:
        """What the tool reads: the trajectory up to the end of the stop string that ended the last
        model turn, without the rest of the token that completed it."""
        return "".join(self.pieces[:-1]) + through_stop(self.pieces[-1], self.stop_reason)

    @property
    def room(self) -> int:
        return self.request.max_tokens - len(self.token_ids)

    def add_model_turn(self, c: Completion) -> None:
        self.token_ids += c.token_ids
        self.logprobs += c.logprobs
        self.tool_mask += [False] * len(c.token_ids)
        self.pieces.append(c.text)
        self.turns += 1
        self.finish_reason, self.stop_reason = c.finish_reason, c.stop_reason

    def add_tool_output(self, text: str, ids: list[int]) -> None:
        self.token_ids += ids
        self.logprobs += [0.0] * len(ids)
        self.tool_mask += [True] * len(ids)
        self.pieces.append(text)

    def next_request(self) -> GenRequest:
        r = self.request
        return dataclasses.replace(r, prompt_ids=list(r.prompt_ids) + self.token_ids, n=1, max_tokens=self.room,
                                   seed=None)

    def completion(self) -> Completion:
        return Completion(token_ids=self.token_ids, logprobs=self.logprobs, finish_reason=self.finish_reason,
                          text=self.text, stop_reason=self.stop_reason,
                          tool_mask=self.tool_mask if any(self.tool_mask) else None)


def generate_with_tools(generate: Callable[[list[GenRequest]], list[list[Completion]]], requests: list[GenRequest],
                        prompts: list[Prompt], env, tokenize: Callable[[str], list[int]]) -> list[list[Completion]]:
    """`generate` (one engine call per round, all live answers batched) run turn by turn; returns
    `requests[i].n` completions per request, as `generate` would. `env` supplies `tool_stop`,
    `max_turns` and `turn(prompt, trajectory_text)`; `tokenize` encodes tool output (no special tokens)."""
    requests = [dataclasses.replace(r, stop=tuple(env.tool_stop)) for r in requests]
    trajectories = [[Trajectory(r, p) for _ in range(r.n)] for r, p in zip(requests, prompts)]
    for row, completions in zip(trajectories, generate(requests)):
        for traj, c in zip(row, completions):
            traj.add_model_turn(c)
    live = [t for row in trajectories for t in row if _call_tool(t, env, tokenize)]
    while live:
        for traj, (c,) in zip(live, generate([t.next_request() for t in live])):
            traj.add_model_turn(c)
        live = [t for t in live if _call_tool(t, env, tokenize)]
    return [[t.completion() for t in row] for row in trajectories]


def _call_tool(traj: Trajectory, env, tokenize: Callable[[str], list[int]]) -> bool:
    """If the last model turn ended on a tool call and turns remain, run the tool and append its
    output; True when the answer should continue with another model turn."""
    if traj.stop_reason is None or traj.turns >= env.max_turns:
        return False
    output = env.turn(traj.prompt, traj.call)
    if output is None:
        return False
    ids = tokenize(output)
    if len(ids) >= traj.room:  # no room for the output and at least one more model token
        traj.finish_reason = "length"
        return False
    traj.add_tool_output(output, ids)
    traj.stop_reason = None
    return True
