"""Per-step metrics computed from scored groups, and a phase timer."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

from rlcurr.types import ScoredGroup


class PhaseTimer:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def as_metrics(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        out["time/step"] = time.perf_counter() - self.start
        return out


def rollout_metrics(groups: list[ScoredGroup], dropped_groups: int = 0) -> dict[str, float]:
    if not groups:
        return {"groups": 0, "groups_dropped": dropped_groups}
    rewards = [r for g in groups for r in g.rewards]
    lengths = [len(c.token_ids) for g in groups for c in g.completions]
    out: dict[str, float] = {
        "reward/mean": statistics.fmean(rewards),
        "reward/std": statistics.pstdev(rewards),
        "response_length/mean": statistics.fmean(lengths),
        "response_length/max": max(lengths),
        "zero_variance_frac": sum(len(set(g.rewards)) == 1 for g in groups) / len(groups),
        "groups": len(groups),
        "groups_dropped": dropped_groups,
        "tokens": sum(lengths),
        "truncated_frac": sum(c.finish_reason == "length" for g in groups for c in g.completions) / len(lengths),
    }
    tool_answers = [c.tool_mask for g in groups for c in g.completions if c.tool_mask is not None]
    if tool_answers:  # multi-turn: tool calls answered per answer (each is one run of masked tokens)
        out["rollout/tool_calls_per_answer"] = sum(tool_calls(m) for m in tool_answers) / len(lengths)
        out["rollout/tool_tokens_frac"] = sum(sum(m) for m in tool_answers) / max(sum(lengths), 1)
    by_dist: dict[str, list[float]] = {}
    for g in groups:
        if not g.off_policy:
            by_dist.setdefault(g.prompt.distribution, []).extend(g.rewards)
    for d, rs in sorted(by_dist.items()):
        out[f"reward/{d}"] = statistics.fmean(rs)
    parts: dict[str, list[float]] = {}
    for g in groups:
        for name, vals in g.reward_parts.items():
            parts.setdefault(name, []).extend(v for v in vals if v is not None)
    for name, vals in parts.items():
        if vals:
            out[f"reward_fn/{name}"] = statistics.fmean(vals)
    return out


def tool_calls(tool_mask: list[bool]) -> int:
    """Tool outputs in a multi-turn answer: runs of True in its tool mask."""
    return sum(m and (i == 0 or not tool_mask[i - 1]) for i, m in enumerate(tool_mask))


def generation_metrics(generated: list[ScoredGroup]) -> dict[str, int]:
    """Every step, whatever the filters: the on-policy groups generated this step (all rounds; SPEED's
    screening-only groups and its completed groups; not guidance's hinted re-rolls, not groups that
    reward failures left without a signal) and how many had all rewards equal (zero variance)."""
    return {"rollout/groups_generated": len(generated),
            "rollout/zero_variance_groups": sum(len(set(g.rewards)) <= 1 for g in generated)}
