"""`rlcurr inspect RUN_DIR`: summarise a run directory (config.yaml, metrics.jsonl, curriculum.jsonl).

(The module is `report`, not `inspect`, so that it does not shadow the standard library's inspect.)

    rlcurr inspect runs/quickstart                 rich tables in the terminal
    rlcurr inspect runs/quickstart --json          the same as one JSON object on stdout
    rlcurr inspect runs/quickstart --plot run.png  a figure (sampling probabilities, eval accuracy,
                                                   train reward, budget, hint rates)
    rlcurr inspect runs/quickstart --steps 10:40   only steps 10..40 (inclusive; either side optional)
    rlcurr inspect runs/a runs/b --compare         several runs side by side (rlcurr/compare.py; with
                                                   --json, --plot, --steps as above)

Works on a finished run, a run still going, or a crashed one (a cut-off last line is skipped).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcurr.checkpoint import iter_jsonl
from rlcurr.errors import UserError

RUN_FILES = ("config.yaml", "metrics.jsonl", "curriculum.jsonl")


# ---------------------------------------------------------------- loading

@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]      # lines of metrics.jsonl within `steps`, sorted by step
    curriculum: list[dict[str, Any]]   # lines of curriculum.jsonl within `steps`, sorted by step
    distributions: list[str]
    steps: tuple[int | None, int | None] | None = None
    last_step: int | None = None       # last training step logged (whole file, ignores `steps`)
    skipped_lines: dict[str, int] = field(default_factory=dict)  # unparseable lines per file

    @property
    def expected_steps(self) -> int | None:
        steps = (self.config.get("trainer") or {}).get("steps")
        return steps if isinstance(steps, int) else None

    @property
    def finished(self) -> bool:
        n = self.expected_steps
        return n is not None and self.last_step is not None and self.last_step >= n - 1

    @property
    def status_key(self) -> str:
        """"finished", "not_started" or "unfinished" (for JSON)."""
        if self.finished:
            return "finished"
        return "not_started" if self.last_step is None else "unfinished"

    @property
    def status(self) -> str:
        if self.finished:
            return "finished"
        if self.last_step is None:
            return f"not started (no training step logged): {self._liveness()}"
        n = self.expected_steps
        return (f"unfinished at step {self.last_step}/{(n - 1) if n else '?'}: "
                f"{self._liveness()}")

    def _liveness(self) -> str:
        import time

        try:
            age = time.time() - (self.run_dir / "metrics.jsonl").stat().st_mtime
        except OSError:
            return "still running or crashed"
        if age < 600:
            return f"probably still running (last write {age:.0f}s ago)"
        return f"crashed or stopped (last write {age / 60:.0f} min ago)"


def parse_steps(text: str | None) -> tuple[int | None, int | None] | None:
    """'A:B' -> (A, B) inclusive, 'A:' / ':B' open-ended, 'N' -> (N, N); None/'' -> None."""
    if text is None or text.strip() in ("", ":"):
        return None
    parts = text.split(":")
    try:
        if len(parts) == 1:
            n = int(parts[0])
            return (n, n)
        if len(parts) == 2:
            a = int(parts[0]) if parts[0].strip() else None
            b = int(parts[1]) if parts[1].strip() else None
            if a is not None and b is not None and a > b:
                raise UserError(f"--steps {text}: start {a} is after end {b}")
            return (a, b)
    except ValueError:
        pass
    raise UserError(f"--steps {text!r}: expected A:B with integers (inclusive; A: and :B also work)")


def _in_range(step: Any, steps) -> bool:
    if steps is None:
        return True
    a, b = steps
    return (a is None or step >= a) and (b is None or step <= b)


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for _, obj in iter_jsonl(path):
        if isinstance(obj, dict) and isinstance(obj.get("step"), int):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def load_run(run_dir: str | Path, steps: tuple[int | None, int | None] | None = None) -> RunData:
    """Read a run directory; `steps` keeps only lines with A <= step <= B (None: open side)."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise UserError(f"{run_dir} does not look like an rlcurr run: missing {', '.join(missing)}")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{run_dir / 'config.yaml'}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{run_dir / 'config.yaml'}: expected a mapping")
    metrics, bad_m = _read_jsonl(run_dir / "metrics.jsonl")
    curriculum, bad_c = _read_jsonl(run_dir / "curriculum.jsonl")
    train_steps = [r["step"] for r in metrics if r["step"] >= 0] + [r["step"] for r in curriculum]
    last_step = max(train_steps) if train_steps else None
    metrics = sorted((r for r in metrics if _in_range(r["step"], steps)), key=lambda r: r["step"])
    curriculum = sorted((r for r in curriculum if _in_range(r["step"], steps)), key=lambda r: r["step"])

    names: list[str] = []
    for r in curriculum:
        for d in (r.get("distributions") or {}):
            if d not in names:
                names.append(d)
    env_names = (config.get("env") or {}).get("distributions")
    for d in env_names if isinstance(env_names, list) else []:
        if isinstance(d, str) and d not in names:
            names.append(d)
    for r in metrics:
        for k in r:
            if k.startswith("eval/accuracy/") and k[len("eval/accuracy/"):] not in names:
                names.append(k[len("eval/accuracy/"):])
    return RunData(run_dir=run_dir, config=config, metrics=metrics, curriculum=curriculum, distributions=names,
                   steps=steps, last_step=last_step,
                   skipped_lines={"metrics.jsonl": bad_m, "curriculum.jsonl": bad_c})


# ---------------------------------------------------------------- derived series

def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def config_brief(run: RunData) -> dict[str, Any]:
    c = run.config
    model = c.get("model") or {}
    if model.get("path"):
        model_s = str(model["path"])
    elif model.get("tiny"):
        t = model["tiny"]
        model_s = f"tiny {t.get('arch', '?')} h{t.get('hidden_size', '?')} L{t.get('num_layers', '?')}"
    else:
        model_s = "?"
    if model.get("lora"):
        model_s += f" (LoRA r={model['lora'].get('r', '?')})"
    return {
        "name": c.get("name"),
        "env": (c.get("env") or {}).get("name"),
        "sampler": (c.get("curriculum") or {}).get("sampler", "uniform"),
        "model": model_s,
        "algo": (c.get("algo") or {}).get("name"),
        "steps": (c.get("trainer") or {}).get("steps"),
        "n": (c.get("rollout") or {}).get("n"),
        "lr": (c.get("learner") or {}).get("lr"),
        "prompts_per_step": (c.get("trainer") or {}).get("prompts_per_step"),
    }


def eval_rows(run: RunData) -> list[dict[str, Any]]:
    return [r for r in run.metrics if "eval/accuracy_mean" in r or any(k.startswith("eval/accuracy/") for k in r)]


def _eval_at(run: RunData, step: int) -> dict[str, Any] | None:
    """The latest evaluation at or before `step`."""
    best = None
    for r in eval_rows(run):
        if r["step"] <= step:
            best = r
    return best


def snapshot_steps(run: RunData, middle: int = 3) -> list[int]:
    """First, `middle` evenly spaced and last training step (curriculum steps, else metrics steps)."""
    steps = sorted({r["step"] for r in run.curriculum} or {r["step"] for r in run.metrics if r["step"] >= 0})
    if len(steps) <= middle + 2:
        return steps
    idx = {0, len(steps) - 1}
    for i in range(1, middle + 1):
        idx.add(round(i * (len(steps) - 1) / (middle + 1)))
    return [steps[i] for i in sorted(idx)]


def _budget_values(b: Any) -> tuple[float | None, dict[str, float]]:
    if isinstance(b, dict):
        per = {k: v for k, v in (b.get("per_distribution") or {}).items() if _num(v) is not None}
        return _num(b.get("default")), per
    return _num(b), {}


def _hint_stats(h: Any, names: list[str], which: str = "step") -> dict[str, dict[str, float]]:
    """Per distribution counters from a curriculum line's "hints" ({"step": {...}, "total": {...}})."""
    if not isinstance(h, dict):
        return {}
    src = h.get(which) if isinstance(h.get(which), dict) else h
    out = {}
    for d, s in src.items():
        if isinstance(s, dict):
            out[d] = {k: v for k, v in s.items() if _num(v) is not None}
    return out


def _rate(num: float, den: float) -> float | None:
    return num / den if den else None


def summary_json(run: RunData) -> dict[str, Any]:
    names = run.distributions
    by_step = {r["step"]: r for r in run.metrics}
    cur_by_step = {r["step"]: r for r in run.curriculum}
    snapshots = []
    for s in snapshot_steps(run):
        cur = (cur_by_step.get(s) or {}).get("distributions") or {}
        m = by_step.get(s, {})
        ev = _eval_at(run, s)
        dists = {}
        for d in names:
            c = cur.get(d) or {}
            reward = _num(m.get(f"reward/{d}"))
            if reward is None:
                reward = _num(c.get("mean_reward"))
            dists[d] = {"prob": _num(c.get("prob")), "score": _num(c.get("score")), "count": c.get("count"),
                        "step_count": c.get("step_count"), "reward": reward,
                        "eval_accuracy": None if ev is None else _num(ev.get(f"eval/accuracy/{d}"))}
        budget = (cur_by_step.get(s) or {}).get("budget")
        snapshots.append({"step": s, "reward_mean": _num(m.get("reward/mean")), "loss": _num(m.get("loss")),
                          "response_length": _num(m.get("response_length/mean")),
                          "eval_step": None if ev is None else ev["step"],
                          "eval_accuracy_mean": None if ev is None else _num(ev.get("eval/accuracy_mean")),
                          "budget": budget, "distributions": dists})
    evals = [{"step": r["step"], "accuracy_mean": _num(r.get("eval/accuracy_mean")),
              **{d: _num(r.get(f"eval/accuracy/{d}")) for d in names if f"eval/accuracy/{d}" in r}}
             for r in eval_rows(run)]
    last_cur = run.curriculum[-1] if run.curriculum else {}
    hints = None
    if any(isinstance(r.get("hints"), dict) for r in run.curriculum):
        total = _hint_stats(last_cur.get("hints"), names, "total")
        hints = {"at_step": last_cur.get("step"), "total": {
            d: {**s, "reroll_rate": _rate(s.get("rerolled", 0), s.get("groups", 0)),
                "keep_rate": _rate(s.get("kept", 0), s.get("rerolled", 0))} for d, s in total.items()}}
    budget = None
    bsteps = [r for r in run.curriculum if r.get("budget") is not None]
    if bsteps:
        vals = [_budget_values(r["budget"])[0] for r in bsteps]
        vals = [v for v in vals if v is not None]
        budget = {"first": bsteps[0]["budget"], "last": bsteps[-1]["budget"],
                  "min": min(vals) if vals else None, "max": max(vals) if vals else None}
    times = [_num(r.get("time/step")) for r in run.metrics if r["step"] >= 0]
    times = [t for t in times if t is not None]
    lags = [r["lag"] for r in run.curriculum if isinstance(r.get("lag"), (int, float))]
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
        "filter": last_cur.get("filter"),
        "d3s": last_cur.get("d3s"),
        "greso": greso_summary(run),
        "alerts": alerts_summary(run),
        "time_per_step_mean": sum(times) / len(times) if times else None,
    }


def alerts_summary(run: RunData) -> list[dict[str, Any]]:
    """Curriculum alerts (issue 14) grouped by (kind, distribution): steps first/last raised, how many
    rows raised it, whether the last row still does, and the latest alert itself."""
    out: dict[tuple, dict[str, Any]] = {}
    last_step = run.curriculum[-1]["step"] if run.curriculum else None
    for r in run.curriculum:
        for a in r.get("alerts") or []:
            if not isinstance(a, dict):
                continue
            key = (a.get("kind"), a.get("distribution"))
            e = out.setdefault(key, {"kind": key[0], "distribution": key[1], "first_step": r["step"], "rows": 0})
            e.update(last_step=r["step"], rows=e["rows"] + 1, latest=a)
    for e in out.values():
        e["active"] = e["last_step"] == last_step
    return list(out.values())


def greso_summary(run: RunData) -> dict[str, Any] | None:
    """GRESO over the rows shown: latest p_easy / p_hard and prompts skipped in total."""
    rows = [r for r in run.curriculum if isinstance(r.get("greso"), dict)]
    if not rows:
        return None
    last = rows[-1]["greso"]
    return {"p_easy": _num(last.get("p_easy")), "p_hard": _num(last.get("p_hard")), "at_step": rows[-1]["step"],
            "skipped_total": sum(int(r["greso"].get("skipped") or 0) for r in rows)}


def prompts_json(run: RunData, ranges: int = 4) -> dict[str, Any]:
    """`inspect --prompts` from curriculum.jsonl alone: per distribution, the pass-rate histogram of the
    prompts seen so far at the end of each of up to `ranges` equal step ranges, and the hardest /
    easiest prompts of the last row. Runs with curriculum.learnability add, per distribution and range,
    `learnability`: prompts picked in the range and the mean of their posterior pass rates at pick
    time, prompts with a posterior and the histogram of posterior means at the range's end; and at the
    top level the rule and the counts of a seeded prior (None without learnability)."""
    rows = [r for r in run.curriculum if isinstance(r.get("prompts"), dict)]
    if not rows:
        return {"ranges": [], "distributions": {}}
    k = min(ranges, len(rows))
    spans = [rows[len(rows) * i // k: len(rows) * (i + 1) // k] for i in range(k)]
    names = list(run.distributions) + [d for d in rows[-1]["prompts"] if d not in run.distributions]
    learn_rows = [r for r in rows if isinstance(r.get("learnability"), dict)]
    out = {}
    for d in names:
        per = []
        for span in spans:
            x = span[-1]["prompts"].get(d) or {}
            per.append({"steps": [span[0]["step"], span[-1]["step"]], "seen": x.get("seen"),
                        "pass_hist": x.get("pass_hist"), "zero_var_share": _num(x.get("zero_var_share"))})
        x = rows[-1]["prompts"].get(d) or {}
        out[d] = {"over_time": per, "hardest": x.get("hardest") or [], "easiest": x.get("easiest") or [],
                  "learnability": [_learn_span(span, d) for span in spans] if learn_rows else None}
    learn = None
    if learn_rows:
        last = learn_rows[-1]["learnability"]
        learn = {"rule": last.get("rule"), "prior": last.get("prior")}
    return {"ranges": [[s[0]["step"], s[-1]["step"]] for s in spans], "at_step": rows[-1]["step"],
            "learnability": learn, "distributions": out}


def _learn_span(span: list[dict[str, Any]], d: str) -> dict[str, Any]:
    """One distribution's learnability columns over the rows of one step range (see prompts_json)."""
    xs = [(r["learnability"].get("distributions") or {}).get(d) or {} for r in span
          if isinstance(r.get("learnability"), dict)]
    picked = [(int(x.get("picked") or 0), _num(x.get("picked_mean"))) for x in xs]
    n = sum(c for c, m in picked if m is not None)
    last = xs[-1] if xs else {}
    return {"steps": [span[0]["step"], span[-1]["step"]], "picked": sum(c for c, _ in picked),
            "picked_mean": sum(c * m for c, m in picked if m is not None) / n if n else None,
            "tracked": last.get("tracked"), "mean_hist": last.get("mean_hist")}


# ---------------------------------------------------------------- terminal

def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def print_summary(run: RunData, console=None) -> None:
    """Header, config, then one rich table per section that the run has data for."""
    from rich.console import Console

    console = console or Console()
    s = summary_json(run)
    style = "green" if run.finished else "yellow"
    console.print(f"[bold]{run.run_dir}[/bold]  [{style}]{run.status}[/{style}]")
    console.print(_config_table(s["config"]))
    if run.steps is not None:
        console.print(f"steps filter {run.steps[0] if run.steps[0] is not None else ''}:"
                      f"{run.steps[1] if run.steps[1] is not None else ''}")
    skipped = {k: v for k, v in run.skipped_lines.items() if v}
    if skipped:
        console.print(f"[yellow]skipped unparseable lines: {skipped}[/yellow]")
    console.print(_snapshot_table(run, s) if s["snapshots"] else "[yellow]no training steps in range[/yellow]")
    if s["evals"]:
        console.print(_eval_table(run, s))
    if s["budget"] is not None:
        console.print(_budget_table(run))
    if s["hints"] is not None:
        console.print(_hint_table(s))
    if isinstance(s["filter"], dict):
        f = s["filter"]
        console.print(f"dynamic sampling: rounds {f.get('rounds')}, kept {f.get('kept')}, dropped {f.get('dropped')}")
    if s["greso"] is not None:
        g = s["greso"]
        console.print(f"GRESO: p_easy {_f(g['p_easy'])}, p_hard {_f(g['p_hard'])} (step {g['at_step']}), "
                      f"{g['skipped_total']} prompts skipped")
    if s["alerts"]:
        console.print(_alerts_table(s["alerts"]))
    if s.get("policy_lag") is not None:  # asynchronous run (trainer.max_staleness)
        console.print(f"policy lag (steps between generating and training a batch): mean "
                      f"{s['policy_lag']['mean']:.2f}, max {s['policy_lag']['max']}")
    if s["time_per_step_mean"] is not None:
        console.print(f"mean time/step {s['time_per_step_mean']:.2f}s")


def _alerts_table(alerts: list[dict[str, Any]]):
    from rlcurr.curriculum.prompts import alert_text

    t = _table("[yellow]curriculum alerts[/yellow]", "kind", ["distribution", "steps", "rows", "now", "latest"])
    for a in alerts:
        t.add_row(str(a["kind"]), str(a["distribution"]), f"{a['first_step']}-{a['last_step']}", str(a["rows"]),
                  "yes" if a["active"] else "no", alert_text(a["latest"]))
    return t


def print_prompts(run: RunData, console=None, ranges: int = 4) -> None:
    """`inspect --prompts`: per distribution, pass-rate histogram by step range, hardest / easiest prompts."""
    from rich.console import Console

    console = console or Console()
    p = prompts_json(run, ranges)
    if not p["distributions"]:
        console.print("[yellow]no per-prompt statistics in curriculum.jsonl (runs before issue 14)[/yellow]")
        return
    for d, x in p["distributions"].items():
        bins = max((len(r["pass_hist"] or []) for r in x["over_time"]), default=0)
        cols = [f"{i / bins:.1f}-{(i + 1) / bins:.1f}" for i in range(bins)] if bins else []
        t = _table(f"{d}: prompts by pass-rate EMA (seen so far, at the end of each range)", "steps",
                   [*cols, "seen", "zero-var"])
        for r in x["over_time"]:
            hist = r["pass_hist"] or []
            t.add_row(f"{r['steps'][0]}-{r['steps'][1]}", *[_f(hist[i]) if i < len(hist) else "-" for i in range(bins)],
                      _f(r["seen"]), _f(r["zero_var_share"], 2))
        console.print(t)
        fmt = lambda lst: ", ".join(f"{u} {_f(v, 2)}" for u, v in lst) or "-"  # noqa: E731
        console.print(f"  hardest: {fmt(x['hardest'])}\n  easiest: {fmt(x['easiest'])}  (step {p['at_step']})")
        if x.get("learnability"):
            console.print(_learn_table(d, p["learnability"], x["learnability"]))
    prior = (p.get("learnability") or {}).get("prior")
    if prior:
        console.print(f"learnability prior: {prior.get('seeded')} prompts seeded from a profile, "
                      f"{prior.get('ignored')} ignored")


def _learn_table(d: str, learn: dict[str, Any], spans: list[dict[str, Any]]):
    bins = max((len(r["mean_hist"] or []) for r in spans), default=0)
    cols = [f"{i / bins:.1f}-{(i + 1) / bins:.1f}" for i in range(bins)] if bins else []
    t = _table(f"{d}: learnability ({learn.get('rule')}), prompts by posterior mean pass rate", "steps",
               [*cols, "tracked", "picked", "picked mean"])
    for r in spans:
        hist = r["mean_hist"] or []
        t.add_row(f"{r['steps'][0]}-{r['steps'][1]}", *[_f(hist[i]) if i < len(hist) else "-" for i in range(bins)],
                  _f(r["tracked"]), _f(r["picked"]), _f(r["picked_mean"], 2))
    return t


def _table(title: str, first: str, columns: list[str], show_header: bool = True):
    from rich.table import Table

    t = Table(title=title, show_header=show_header)
    t.add_column(first, justify="right")
    for col in columns:
        t.add_column(col, justify="right")
    return t


def _config_table(c: dict[str, Any]):
    t = _table("config", "key", ["value"], show_header=False)
    for k in ("name", "env", "sampler", "model", "algo", "steps", "n", "prompts_per_step", "lr"):
        t.add_row(k, _f(c.get(k), 6) if isinstance(c.get(k), float) else _f(c.get(k)))
    return t


WIDE = 5  # more distributions than this: one row per distribution instead of one column


def _snapshot_table(run: RunData, s: dict[str, Any]):
    if len(run.distributions) > WIDE:
        return _snapshot_table_by_distribution(run, s)
    t = _table("per distribution (prob / score / count / train reward / eval accuracy)", "step",
               [*run.distributions, "reward mean", "eval mean"])
    for snap in s["snapshots"]:
        cells = []
        for d in run.distributions:
            x = snap["distributions"][d]
            cells.append(f"p {_f(x['prob'], 2)}  s {_f(x['score'], 2)}\n"
                         f"n {_f(x['count'])}  r {_f(x['reward'], 2)}\n"
                         f"acc {_f(x['eval_accuracy'], 2)}")
        ev = _f(snap["eval_accuracy_mean"], 3)
        if snap["eval_step"] is not None and snap["eval_step"] != snap["step"]:
            ev += f"\n(@{snap['eval_step']})"
        t.add_row(str(snap["step"]), *cells, _f(snap["reward_mean"]), ev)
    return t


def _snapshot_table_by_distribution(run: RunData, s: dict[str, Any]):
    """The same figures transposed, so that a ladder of many rungs reads top to bottom."""
    snaps = s["snapshots"]
    t = _table("per distribution (sampling prob / answers so far / latest eval accuracy), by step", "distribution",
               [f"step {snap['step']}" for snap in snaps])
    for d in run.distributions:
        t.add_row(d, *[f"p {_f(x['prob'], 2)}\nn {_f(x['count'])}\nacc {_f(x['eval_accuracy'], 2)}"
                       for x in (snap["distributions"][d] for snap in snaps)])
    t.add_row("mean", *[f"r {_f(snap['reward_mean'], 2)}\nacc {_f(snap['eval_accuracy_mean'], 2)}" for snap in snaps])
    return t


def _eval_table(run: RunData, s: dict[str, Any]):
    if len(run.distributions) > WIDE:
        t = _table("evaluations by distribution (step -1 = before RL)", "distribution",
                   [str(e["step"]) for e in s["evals"]])
        for d in [*run.distributions, "mean"]:
            t.add_row(d, *[_f(e.get(d) if d != "mean" else e["accuracy_mean"], 2) for e in s["evals"]])
        return t
    t = _table("evaluations (step -1 = before RL)", "step", [*run.distributions, "mean"])
    for e in s["evals"]:
        t.add_row(str(e["step"]), *[_f(e.get(d)) for d in run.distributions], _f(e["accuracy_mean"]))
    return t


def _budget_table(run: RunData):
    t = _table("token budget", "step", ["default", *run.distributions])
    cur_by_step = {r["step"]: r for r in run.curriculum}
    for step in snapshot_steps(run):
        default, per = _budget_values((cur_by_step.get(step) or {}).get("budget"))
        t.add_row(str(step), _f(default, 0), *[_f(per.get(d), 0) for d in run.distributions])
    return t


def _hint_table(s: dict[str, Any]):
    cols = ("groups", "failed", "rerolled", "kept", "solved", "skipped_no_hint", "skipped_cap")
    t = _table(f"hint guidance (totals up to step {s['hints']['at_step']})", "distribution",
               [*cols, "reroll rate", "keep rate"])
    for d, x in s["hints"]["total"].items():
        t.add_row(d, *[_f(x.get(col)) for col in cols], _f(x["reroll_rate"], 2), _f(x["keep_rate"], 2))
    return t


# ---------------------------------------------------------------- figure

def plot_run(run: RunData, path: str | Path) -> Path:
    """Write a PNG with 3-5 panels: sampling probabilities, eval accuracy, train reward, budget, hints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = run.distributions
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {d: cmap(i % cmap.N) for i, d in enumerate(names)}
    panels = {"probs": _plot_probs, "eval": _plot_eval, "reward": _plot_reward}
    if any(r.get("budget") is not None for r in run.curriculum):
        panels["budget"] = _plot_budget
    if any(isinstance(r.get("hints"), dict) for r in run.curriculum):
        panels["hints"] = _plot_hints
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    fig.suptitle(f"{run.config.get('name') or run.run_dir.name} — {run.status}", fontsize=13)
    xs_all = [max(r["step"], 0) for r in run.metrics] + [r["step"] for r in run.curriculum] or [0]
    lo, hi = min(xs_all), max(xs_all)
    for ax, draw in zip(axes[:, 0], panels.values()):
        draw(ax, run, colour)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.set_xlim(lo - 0.5, max(hi, lo + 1) + 0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _points(rows: list[dict], x_of, key: str) -> list[tuple[float, float]]:
    pts = [(x_of(r), _num(r.get(key))) for r in rows]
    return [(x, y) for x, y in pts if y is not None]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _plot_probs(ax, run: RunData, colour) -> None:
    cur, names = run.curriculum, run.distributions
    if cur:
        ys = [[_num(((r.get("distributions") or {}).get(d) or {}).get("prob")) or 0.0 for r in cur] for d in names]
        ax.stackplot([r["step"] for r in cur], *ys, labels=names, colors=[colour[d] for d in names], alpha=0.85)
        ax.set_ylim(0, 1)
    else:
        _empty(ax, "no curriculum records")
    ax.set_title(f"sampling probability per distribution (sampler: {config_brief(run)['sampler']})")
    ax.set_ylabel("probability")


def _plot_eval(ax, run: RunData, colour) -> None:
    evs = eval_rows(run)
    x_of = lambda r: max(r["step"], 0)  # noqa: E731 — the evaluation before RL is drawn at step 0
    for d in run.distributions:
        if pts := _points(evs, x_of, f"eval/accuracy/{d}"):
            ax.plot(*zip(*pts), marker="o", ms=4, color=colour[d], label=d)
    if pts := _points(evs, x_of, "eval/accuracy_mean"):
        ax.plot(*zip(*pts), color="black", lw=2, ls="--", marker="s", ms=4, label="mean")
    if any(r["step"] < 0 for r in evs):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.annotate("before RL", (0, 1.0), xytext=(3, -12), textcoords="offset points", fontsize=8, color="grey")
    if evs:
        ax.set_ylim(-0.02, 1.05)
    else:
        _empty(ax, "no evaluations")
    ax.set_title("eval accuracy per distribution (the evaluation before RL is drawn at step 0)")
    ax.set_ylabel("accuracy")


def _plot_reward(ax, run: RunData, colour) -> None:
    import numpy as np

    train = [r for r in run.metrics if r["step"] >= 0]
    step_of = lambda r: r["step"]  # noqa: E731
    for d in run.distributions:
        if pts := _points(train, step_of, f"reward/{d}"):
            ax.plot(*zip(*pts), color=colour[d], lw=1, alpha=0.7, label=d)
    if pts := _points(train, step_of, "reward/mean"):
        x, y = map(np.asarray, zip(*pts))
        k = max(1, min(10, len(y) // 10))
        ax.plot(x, y, color="black", lw=1 if k > 1 else 2, alpha=0.35 if k > 1 else 1,
                label=None if k > 1 else "mean")
        if k > 1:
            ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), color="black", lw=2,
                    label=f"mean (moving avg {k})")
    if not train:
        _empty(ax, "no training steps")
    ax.set_title("train reward")
    ax.set_ylabel("reward")


def _plot_budget(ax, run: RunData, colour) -> None:
    import numpy as np

    names, steps, default, per = run.distributions, [], [], {d: [] for d in run.distributions}
    for r in run.curriculum:
        dv, pv = _budget_values(r.get("budget"))
        steps.append(r["step"])
        default.append(np.nan if dv is None else dv)
        for d in names:
            per[d].append(pv.get(d, np.nan))
    ax.plot(steps, default, color="black", lw=2, label="default")
    for d in names:
        arr = np.asarray(per[d], dtype=float)
        if np.isfinite(arr).any() and not np.allclose(arr, np.asarray(default, dtype=float), equal_nan=True):
            ax.plot(steps, arr, color=colour[d], lw=1.2, ls="--", label=d)
    ax.set_title("token budget (distributions not drawn follow the default)")
    ax.set_ylabel("tokens")


def _plot_hints(ax, run: RunData, colour) -> None:
    import numpy as np

    names, steps, keep_rate = run.distributions, [], []
    reroll = {d: [] for d in names}
    for r in run.curriculum:
        st = _hint_stats(r.get("hints"), names, "step")
        steps.append(r["step"])
        tot_r = tot_k = 0.0
        for d in names:
            s = st.get(d, {})
            rate = _rate(s.get("rerolled", 0), s.get("groups", 0))
            reroll[d].append(np.nan if rate is None else rate)
            tot_r += s.get("rerolled", 0)
            tot_k += s.get("kept", 0)
        kr = _rate(tot_k, tot_r)
        keep_rate.append(np.nan if kr is None else kr)
    for d in names:
        if np.isfinite(np.asarray(reroll[d], dtype=float)).any():
            ax.plot(steps, reroll[d], color=colour[d], lw=1.2, label=f"{d}: rerolled / groups")
    ax.plot(steps, keep_rate, color="black", lw=2, ls="--", label="all: kept / rerolled")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("hint guidance per step")
    ax.set_ylabel("rate")


# ---------------------------------------------------------------- CLI

def cmd_inspect(args) -> None:
    run_dirs = args.run_dirs
    if getattr(args, "compare", False):
        cmd_compare(args)
        return
    if len(run_dirs) > 1:
        raise UserError(f"{len(run_dirs)} run directories given: add --compare to see them side by side "
                        "(or inspect one at a time)")
    run = load_run(run_dirs[0], parse_steps(args.steps))
    if args.json:
        out = summary_json(run)
        if getattr(args, "prompts", False):
            out["prompts"] = prompts_json(run)
        print(json.dumps(out, indent=1))
    else:
        from rich.console import Console

        console = Console()
        print_summary(run, console)
        if getattr(args, "prompts", False):
            print_prompts(run, console)
    if args.plot:
        out = plot_run(run, args.plot)
        if not args.json:
            print(f"figure written to {out}")


def cmd_compare(args) -> None:
    """`inspect A B ... --compare`: the tables / JSON / figure of rlcurr.compare."""
    from rlcurr import compare

    if len(args.run_dirs) < 2:
        raise UserError("--compare needs at least two run directories (got one)")
    if getattr(args, "prompts", False):
        raise UserError("--prompts shows one run: inspect each run alone for its prompts (drop --compare)")
    steps = parse_steps(args.steps)  # before loading: a bad --steps is reported first
    runs = [load_run(d, steps) for d in args.run_dirs]
    if args.json:
        print(json.dumps(compare.compare_json(runs), indent=1))
    else:
        compare.print_compare(runs)
    if args.plot:
        out = compare.plot_compare(runs, args.plot)
        if not args.json:
            print(f"figure written to {out}")


def add_inspect_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="summarise a run directory, or compare several (--compare)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one run, or several with --compare")
    p.add_argument("--compare", action="store_true",
                   help="several runs side by side: accuracy against answers generated, sampling probabilities, "
                        "answers each run needed to reach the others' final accuracy")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="write a figure")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    p.add_argument("--steps", metavar="A:B", default=None,
                   help="inclusive step range (every run with --compare); either side optional")
    p.add_argument("--prompts", action="store_true",
                   help="per distribution: pass rates of its prompts over time, hardest / easiest prompts "
                        "(one run only)")
    p.set_defaults(fn=cmd_inspect)
