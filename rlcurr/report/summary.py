"""`rlcurr inspect`'s figures as plain data: `summary_json` (snapshots, evaluations, budget, hints,
filter, GRESO, alerts) and `prompts_json` (`--prompts`), read from a `RunData`; the tables and the
figure are drawn from these."""

from __future__ import annotations

from typing import Any

from rlcurr.curriculum.row import CurriculumRow
from rlcurr.rundata import RunData, config_brief, eval_rows, num


def _eval_at(run: RunData, step: int) -> dict[str, Any] | None:
    """The latest evaluation at or before `step`."""
    best = None
    for r in eval_rows(run):
        if r["step"] <= step:
            best = r
    return best


def snapshot_steps(run: RunData, middle: int = 3) -> list[int]:
    """First, `middle` evenly spaced and last training step (curriculum steps, else metrics steps)."""
    steps = sorted({r.step for r in run.curriculum} or {r["step"] for r in run.metrics if r["step"] >= 0})
    if len(steps) <= middle + 2:
        return steps
    idx = {0, len(steps) - 1}
    for i in range(1, middle + 1):
        idx.add(round(i * (len(steps) - 1) / (middle + 1)))
    return [steps[i] for i in sorted(idx)]


def budget_values(b: Any) -> tuple[float | None, dict[str, float]]:
    """A curriculum line's "budget": (default, {distribution: budget}), numbers only."""
    if isinstance(b, dict):
        per = {k: v for k, v in (b.get("per_distribution") or {}).items() if num(v) is not None}
        return num(b.get("default")), per
    return num(b), {}


def hint_stats(h: Any, names: list[str], which: str = "step") -> dict[str, dict[str, float]]:
    """Per distribution counters from a curriculum line's "hints" ({"step": {...}, "total": {...}})."""
    if not isinstance(h, dict):
        return {}
    src = h.get(which) if isinstance(h.get(which), dict) else h
    out = {}
    for d, s in src.items():
        if isinstance(s, dict):
            out[d] = {k: v for k, v in s.items() if num(v) is not None}
    return out


def rate(part: float, whole: float) -> float | None:
    """part / whole; None when whole is 0."""
    return part / whole if whole else None


def summary_json(run: RunData) -> dict[str, Any]:
    names = run.distributions
    by_step = {r["step"]: r for r in run.metrics}
    cur_by_step = {r.step: r for r in run.curriculum}
    snapshots = []
    for s in snapshot_steps(run):
        row = cur_by_step.get(s)
        cur = row.distributions if row is not None else {}
        m = by_step.get(s, {})
        ev = _eval_at(run, s)
        dists = {}
        for d in names:
            c = cur.get(d) or {}
            reward = num(m.get(f"reward/{d}"))
            if reward is None:
                reward = num(c.get("mean_reward"))
            dists[d] = {"prob": num(c.get("prob")), "score": num(c.get("score")), "count": c.get("count"),
                        "step_count": c.get("step_count"), "reward": reward,
                        "eval_accuracy": None if ev is None else num(ev.get(f"eval/accuracy/{d}"))}
        budget = row.budget if row is not None else None
        snapshots.append({"step": s, "reward_mean": num(m.get("reward/mean")), "loss": num(m.get("loss")),
                          "response_length": num(m.get("response_length/mean")),
                          "eval_step": None if ev is None else ev["step"],
                          "eval_accuracy_mean": None if ev is None else num(ev.get("eval/accuracy_mean")),
                          "budget": budget, "distributions": dists})
    evals = [{"step": r["step"], "accuracy_mean": num(r.get("eval/accuracy_mean")),
              **{d: num(r.get(f"eval/accuracy/{d}")) for d in names if f"eval/accuracy/{d}" in r}}
             for r in eval_rows(run)]
    last_cur = run.curriculum[-1] if run.curriculum else None
    hints = None
    if any(isinstance(r.hints, dict) for r in run.curriculum):
        total = hint_stats(last_cur.hints, names, "total")
        hints = {"at_step": last_cur.step, "total": {
            d: {**s, "reroll_rate": rate(s.get("rerolled", 0), s.get("groups", 0)),
                "keep_rate": rate(s.get("kept", 0), s.get("rerolled", 0))} for d, s in total.items()}}
    budget = None
    bsteps = [r for r in run.curriculum if r.budget is not None]
    if bsteps:
        vals = [budget_values(r.budget)[0] for r in bsteps]
        vals = [v for v in vals if v is not None]
        budget = {"first": bsteps[0].budget, "last": bsteps[-1].budget,
                  "min": min(vals) if vals else None, "max": max(vals) if vals else None}
    times = [num(r.get("time/step")) for r in run.metrics if r["step"] >= 0]
    times = [t for t in times if t is not None]
    lags = [r.lag for r in run.curriculum if isinstance(r.lag, (int, float))]
    return {
        "policy_lag": {"mean": sum(lags) / len(lags), "max": max(lags)} if lags and max(lags) > 0 else None,
        "run_dir": str(run.run_dir),
        "config": config_brief(run),
        "status": run.status_key,
        "status_text": run.status,
        "last_step": run.last_step,
        "expected_last_step": None if run.expected_steps is None else run.expected_steps - 1,
        "steps_filter": None if run.steps is None else list(run.steps),
        "steps_shown": [run.metrics[0]["step"], run.metrics[-1]["step"]] if run.metrics else None,
        "skipped_lines": run.skipped_lines,
        "distributions": names,
        "snapshots": snapshots,
        "evals": evals,
        "budget": budget,
        "hints": hints,
        "filter": None if last_cur is None else last_cur.filter,
        "d3s": None if last_cur is None or last_cur.d3s is None else last_cur.d3s.to_json(),
        "greso": greso_summary(run),
        "alerts": alerts_summary(run),
        "time_per_step_mean": sum(times) / len(times) if times else None,
    }


def alerts_summary(run: RunData) -> list[dict[str, Any]]:
    """Curriculum alerts grouped by (kind, distribution): steps first/last raised, how many
    rows raised it, whether the last row still does, and the latest alert itself."""
    out: dict[tuple, dict[str, Any]] = {}
    last_step = run.curriculum[-1].step if run.curriculum else None
    for r in run.curriculum:
        for a in r.alerts:
            if not isinstance(a, dict):
                continue
            key = (a.get("kind"), a.get("distribution"))
            e = out.setdefault(key, {"kind": key[0], "distribution": key[1], "first_step": r.step, "rows": 0})
            e.update(last_step=r.step, rows=e["rows"] + 1, latest=a)
    for e in out.values():
        e["active"] = e["last_step"] == last_step
    return list(out.values())


def greso_summary(run: RunData) -> dict[str, Any] | None:
    """GRESO over the rows shown: latest p_easy / p_hard and prompts skipped in total."""
    rows = [r for r in run.curriculum if isinstance(r.greso, dict)]
    if not rows:
        return None
    last = rows[-1].greso
    return {"p_easy": num(last.get("p_easy")), "p_hard": num(last.get("p_hard")), "at_step": rows[-1].step,
            "skipped_total": sum(int(r.greso.get("skipped") or 0) for r in rows)}


def prompts_json(run: RunData, ranges: int = 4) -> dict[str, Any]:
    """`inspect --prompts` from curriculum.jsonl alone: per distribution, the pass-rate histogram of the
    prompts seen so far at the end of each of up to `ranges` equal step ranges, and the hardest /
    easiest prompts of the last row. Runs with curriculum.learnability add, per distribution and range,
    `learnability`: prompts picked in the range and the mean of their posterior pass rates at pick
    time, prompts with a posterior and the histogram of posterior means at the range's end; and at the
    top level the rule and the counts of a seeded prior (None without learnability)."""
    rows = [r for r in run.curriculum if isinstance(r.prompts, dict)]
    if not rows:
        return {"ranges": [], "distributions": {}}
    k = min(ranges, len(rows))
    spans = [rows[len(rows) * i // k: len(rows) * (i + 1) // k] for i in range(k)]
    names = list(run.distributions) + [d for d in rows[-1].prompts if d not in run.distributions]
    learn_rows = [r for r in rows if isinstance(r.learnability, dict)]
    out = {}
    for d in names:
        per = []
        for span in spans:
            x = span[-1].prompts.get(d) or {}
            per.append({"steps": [span[0].step, span[-1].step], "seen": x.get("seen"),
                        "pass_hist": x.get("pass_hist"), "zero_var_share": num(x.get("zero_var_share"))})
        x = rows[-1].prompts.get(d) or {}
        out[d] = {"over_time": per, "hardest": x.get("hardest") or [], "easiest": x.get("easiest") or [],
                  "learnability": [_learn_span(span, d) for span in spans] if learn_rows else None}
    learn = None
    if learn_rows:
        last = learn_rows[-1].learnability
        learn = {"rule": last.get("rule"), "prior": last.get("prior")}
    return {"ranges": [[s[0].step, s[-1].step] for s in spans], "at_step": rows[-1].step,
            "learnability": learn, "distributions": out}


def _learn_span(span: list[CurriculumRow], d: str) -> dict[str, Any]:
    """One distribution's learnability columns over the rows of one step range (see prompts_json)."""
    xs = [(r.learnability.get("distributions") or {}).get(d) or {} for r in span
          if isinstance(r.learnability, dict)]
    picked = [(int(x.get("picked") or 0), num(x.get("picked_mean"))) for x in xs]
    n = sum(c for c, m in picked if m is not None)
    last = xs[-1] if xs else {}
    return {"steps": [span[0].step, span[-1].step], "picked": sum(c for c, _ in picked),
            "picked_mean": sum(c * m for c, m in picked if m is not None) / n if n else None,
            "tracked": last.get("tracked"), "mean_hist": last.get("mean_hist")}
