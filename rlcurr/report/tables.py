"""`rlcurr inspect` in the terminal: `print_summary` (one rich table per section the run has data
for) and `print_prompts` (`--prompts`)."""

from __future__ import annotations

from typing import Any

from rlcurr.display import fmt, table
from rlcurr.report.summary import budget_values, prompts_json, snapshot_steps, summary_json
from rlcurr.rundata import RunData


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
        console.print(f"GRESO: p_easy {fmt(g['p_easy'])}, p_hard {fmt(g['p_hard'])} (step {g['at_step']}), "
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

    t = table("[yellow]curriculum alerts[/yellow]", "kind", ["distribution", "steps", "rows", "now", "latest"])
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
        console.print("[yellow]no per-prompt statistics in curriculum.jsonl (a run from before they were "
                      "logged)[/yellow]")
        return
    for d, x in p["distributions"].items():
        bins = max((len(r["pass_hist"] or []) for r in x["over_time"]), default=0)
        cols = [f"{i / bins:.1f}-{(i + 1) / bins:.1f}" for i in range(bins)] if bins else []
        t = table(f"{d}: prompts by pass-rate EMA (seen so far, at the end of each range)", "steps",
                  [*cols, "seen", "zero-var"])
        for r in x["over_time"]:
            hist = r["pass_hist"] or []
            t.add_row(f"{r['steps'][0]}-{r['steps'][1]}",
                      *[fmt(hist[i]) if i < len(hist) else "-" for i in range(bins)],
                      fmt(r["seen"]), fmt(r["zero_var_share"], 2))
        console.print(t)
        listed = lambda lst: ", ".join(f"{u} {fmt(v, 2)}" for u, v in lst) or "-"  # noqa: E731
        console.print(f"  hardest: {listed(x['hardest'])}\n  easiest: {listed(x['easiest'])}  (step {p['at_step']})")
        if x.get("learnability"):
            console.print(_learn_table(d, p["learnability"], x["learnability"]))
    prior = (p.get("learnability") or {}).get("prior")
    if prior:
        console.print(f"learnability prior: {prior.get('seeded')} prompts seeded from a profile, "
                      f"{prior.get('ignored')} ignored")


def _learn_table(d: str, learn: dict[str, Any], spans: list[dict[str, Any]]):
    bins = max((len(r["mean_hist"] or []) for r in spans), default=0)
    cols = [f"{i / bins:.1f}-{(i + 1) / bins:.1f}" for i in range(bins)] if bins else []
    t = table(f"{d}: learnability ({learn.get('rule')}), prompts by posterior mean pass rate", "steps",
              [*cols, "tracked", "picked", "picked mean"])
    for r in spans:
        hist = r["mean_hist"] or []
        t.add_row(f"{r['steps'][0]}-{r['steps'][1]}", *[fmt(hist[i]) if i < len(hist) else "-" for i in range(bins)],
                  fmt(r["tracked"]), fmt(r["picked"]), fmt(r["picked_mean"], 2))
    return t


def _config_table(c: dict[str, Any]):
    t = table("config", "key", ["value"], show_header=False)
    for k in ("name", "env", "sampler", "model", "algo", "steps", "n", "prompts_per_step", "lr"):
        t.add_row(k, fmt(c.get(k), 6) if isinstance(c.get(k), float) else fmt(c.get(k)))
    return t


WIDE = 5  # more distributions than this: one row per distribution instead of one column


def _snapshot_table(run: RunData, s: dict[str, Any]):
    if len(run.distributions) > WIDE:
        return _snapshot_table_by_distribution(run, s)
    t = table("per distribution (prob / score / count / train reward / eval accuracy)", "step",
              [*run.distributions, "reward mean", "eval mean"])
    for snap in s["snapshots"]:
        cells = []
        for d in run.distributions:
            x = snap["distributions"][d]
            cells.append(f"p {fmt(x['prob'], 2)}  s {fmt(x['score'], 2)}\n"
                         f"n {fmt(x['count'])}  r {fmt(x['reward'], 2)}\n"
                         f"acc {fmt(x['eval_accuracy'], 2)}")
        ev = fmt(snap["eval_accuracy_mean"], 3)
        if snap["eval_step"] is not None and snap["eval_step"] != snap["step"]:
            ev += f"\n(@{snap['eval_step']})"
        t.add_row(str(snap["step"]), *cells, fmt(snap["reward_mean"]), ev)
    return t


def _snapshot_table_by_distribution(run: RunData, s: dict[str, Any]):
    """The same figures transposed, so that a ladder of many rungs reads top to bottom."""
    snaps = s["snapshots"]
    t = table("per distribution (sampling prob / answers so far / latest eval accuracy), by step", "distribution",
              [f"step {snap['step']}" for snap in snaps])
    for d in run.distributions:
        t.add_row(d, *[f"p {fmt(x['prob'], 2)}\nn {fmt(x['count'])}\nacc {fmt(x['eval_accuracy'], 2)}"
                       for x in (snap["distributions"][d] for snap in snaps)])
    t.add_row("mean", *[f"r {fmt(snap['reward_mean'], 2)}\nacc {fmt(snap['eval_accuracy_mean'], 2)}" for snap in snaps])
    return t


def _eval_table(run: RunData, s: dict[str, Any]):
    if len(run.distributions) > WIDE:
        t = table("evaluations by distribution (step -1 = before RL)", "distribution",
                  [str(e["step"]) for e in s["evals"]])
        for d in [*run.distributions, "mean"]:
            t.add_row(d, *[fmt(e.get(d) if d != "mean" else e["accuracy_mean"], 2) for e in s["evals"]])
        return t
    t = table("evaluations (step -1 = before RL)", "step", [*run.distributions, "mean"])
    for e in s["evals"]:
        t.add_row(str(e["step"]), *[fmt(e.get(d)) for d in run.distributions], fmt(e["accuracy_mean"]))
    return t


def _budget_table(run: RunData):
    t = table("token budget", "step", ["default", *run.distributions])
    cur_by_step = {r.step: r for r in run.curriculum}
    for step in snapshot_steps(run):
        default, per = budget_values(cur_by_step[step].budget if step in cur_by_step else None)
        t.add_row(str(step), fmt(default, 0), *[fmt(per.get(d), 0) for d in run.distributions])
    return t


def _hint_table(s: dict[str, Any]):
    cols = ("groups", "failed", "rerolled", "kept", "solved", "skipped_no_hint", "skipped_cap")
    t = table(f"hint guidance (totals up to step {s['hints']['at_step']})", "distribution",
              [*cols, "reroll rate", "keep rate"])
    for d, x in s["hints"]["total"].items():
        t.add_row(d, *[fmt(x.get(col)) for col in cols], fmt(x["reroll_rate"], 2), fmt(x["keep_rate"], 2))
    return t
