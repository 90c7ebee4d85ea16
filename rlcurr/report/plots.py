"""`rlcurr inspect --plot`: one PNG with 3-5 panels (sampling probabilities, eval accuracy, train
reward, and the token budget and hint rates when the run has them)."""

from __future__ import annotations

from pathlib import Path

from rlcurr.report.summary import budget_values, hint_stats, rate
from rlcurr.rundata import RunData, config_brief, eval_rows, num


def plot_run(run: RunData, path: str | Path) -> Path:
    """Write a PNG with 3-5 panels: sampling probabilities, eval accuracy, train reward, budget, hints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = run.distributions
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {d: cmap(i % cmap.N) for i, d in enumerate(names)}
    panels = {"probs": _plot_probs, "eval": _plot_eval, "reward": _plot_reward}
    if any(r.budget is not None for r in run.curriculum):
        panels["budget"] = _plot_budget
    if any(isinstance(r.hints, dict) for r in run.curriculum):
        panels["hints"] = _plot_hints
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    fig.suptitle(f"{run.config.get('name') or run.run_dir.name} — {run.status}", fontsize=13)
    xs_all = [max(r["step"], 0) for r in run.metrics] + [r.step for r in run.curriculum] or [0]
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
    pts = [(x_of(r), num(r.get(key))) for r in rows]
    return [(x, y) for x, y in pts if y is not None]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _plot_probs(ax, run: RunData, colour) -> None:
    cur, names = run.curriculum, run.distributions
    if cur:
        ys = [[num((r.distributions.get(d) or {}).get("prob")) or 0.0 for r in cur] for d in names]
        ax.stackplot([r.step for r in cur], *ys, labels=names, colors=[colour[d] for d in names], alpha=0.85)
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
        dv, pv = budget_values(r.budget)
        steps.append(r.step)
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
        st = hint_stats(r.hints, names, "step")
        steps.append(r.step)
        tot_r = tot_k = 0.0
        for d in names:
            s = st.get(d, {})
            rr = rate(s.get("rerolled", 0), s.get("groups", 0))
            reroll[d].append(np.nan if rr is None else rr)
            tot_r += s.get("rerolled", 0)
            tot_k += s.get("kept", 0)
        kr = rate(tot_k, tot_r)
        keep_rate.append(np.nan if kr is None else kr)
    for d in names:
        if np.isfinite(np.asarray(reroll[d], dtype=float)).any():
            ax.plot(steps, reroll[d], color=colour[d], lw=1.2, label=f"{d}: rerolled / groups")
    ax.plot(steps, keep_rate, color="black", lw=2, ls="--", label="all: kept / rerolled")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("hint guidance per step")
    ax.set_ylabel("rate")
