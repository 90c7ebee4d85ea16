"""`rlcurr profile RECIPE`, the command: roll out the starting policy over the train pools with the
trainer's own workers, write the profile, print and plot its summary. What is measured, the
files and the estimate: rlcurr/profile.py (which the trainer imports; this module imports the
trainer, so the arrows point one way)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from rlcurr.errors import UserError

from rlcurr.profile import HISTOGRAM_FILE, KIND, PROFILE_FILE, SUMMARY_FILE, DEFAULT_SAMPLES, summarize


# ---------------------------------------------------------------- rolling out


def profile_policy(trainer, pools: dict[str, Sequence], samples: int,
                   on_batch=lambda k: None) -> tuple[list[dict], dict[str, int], int]:
    """Roll out `samples` answers to every prompt of `pools` with the trainer's rollout workers
    (started: `Trainer.place_actors` / `start_rollout_pool`) and score them with its rewards.
    Returns (profile.jsonl rows in pool order, tokens generated per distribution, prompts left
    unscored). `on_batch(k)` is called after each batch of k prompts."""
    from rlcurr.types import BatchPlan

    cfg = trainer.cfg
    # the plan items training's first step would give (its EAD temperatures), at the full max_tokens
    items = trainer.controller.planned_items(0, [p for prompts in pools.values() for p in prompts],
                                             max_tokens=cfg.rollout.max_tokens)
    batch_size = cfg.trainer.prompts_per_step
    records: list[dict] = []
    tokens: dict[str, int] = {d: 0 for d in pools}
    unscored = 0
    for i in range(0, len(items), batch_size):
        plan = BatchPlan(step=0, items=items[i:i + batch_size], n=samples, temperature=cfg.rollout.temperature,
                         top_p=cfg.rollout.top_p)
        rolled = trainer.rollout(plan)
        for r in rolled:
            tokens[r.planned.prompt.distribution] += sum(c.num_generated for c in r.completions)
        for g in trainer.score(0, rolled):
            if g.n == 0:  # every answer's reward failed (reward.on_error: none)
                unscored += 1
                continue
            records.append({"uid": g.prompt.uid, "distribution": g.prompt.distribution,
                            "passes": sum(g.correct), "answers": g.n})
        on_batch(len(plan.items))
    return records, tokens, unscored


def select_pools(env, prompts: int | None) -> dict[str, Sequence]:
    """Every distribution's train pool, or its first `prompts` prompts."""
    pools = {d: env.train_prompts(d) for d in env.distributions()}
    return pools if prompts is None else {d: ps[:prompts] for d, ps in pools.items()}


# ---------------------------------------------------------------- output directory


def is_profile_directory(path: Path) -> bool:
    """Whether `path` holds a profile this command wrote (its summary says so)."""
    try:
        return json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty `out` unless --overwrite, and never delete one that is not
    a profile directory."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"profile directory {out} already exists; pass --overwrite or choose another --out")
    if not is_profile_directory(out):
        raise UserError(f"--overwrite: {out} is not a profile directory (no {SUMMARY_FILE} written by rlcurr "
                        f"profile in it); refusing to delete it. Choose another --out")


def write_profile(out: Path, records: list[dict], summary: dict) -> None:
    """All files into a temporary sibling of `out`, then renamed to `out` (an existing `out` has
    been checked by `check_output_dir`); the temporary directory never outlives an error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        with open(tmp / PROFILE_FILE, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        plot_histogram(summary, tmp / HISTOGRAM_FILE)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def plot_histogram(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = summary["samples"]
    dists = [d for d in summary["distributions"] if d != "all"]
    fig, axes = plt.subplots(len(dists), 1, figsize=(max(4.0, 0.45 * (samples + 1) + 2), 2.2 * len(dists) + 0.6),
                             squeeze=False, sharex=True)
    for ax, d in zip(axes[:, 0], dists):
        stats = summary["distributions"][d]
        ax.bar(range(samples + 1), stats["histogram"], color="tab:blue")
        ax.set_ylabel("prompts")
        ax.set_title(f"{d}: {stats['prompts']} prompts, dead {stats['dead']:.0%}", fontsize=9)
    axes[-1, 0].set_xticks(range(samples + 1))
    axes[-1, 0].set_xlabel(f"passes out of {samples}")
    fig.suptitle(f"{summary['recipe']}: starting policy, {samples} answers per prompt", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- command


def print_summary(summary: dict, console) -> None:
    from rich.table import Table

    G, n = summary["samples"], summary["rollout_n"]
    table = Table(title=f"profile: {summary['recipe']} (starting policy, G = {G} answers per prompt)",
                  caption=f"zero-var: expected share of zero-variance groups at rollout.n = {n}")
    rows = summary["distributions"]
    table.add_column("distribution", no_wrap=True, min_width=max(len(d) for d in rows))
    for col in ("prompts", f"0/{G}", f"{G}/{G}", "between", "zero-var", "answers", "tokens"):
        table.add_column(col, justify="right")
    for d, s in rows.items():
        if d == "all" and len(rows) == 2:  # one distribution: its row is the total
            continue
        style = "bold" if d == "all" else None
        table.add_row(d, str(s["prompts"]), f"{s['all_fail']:.1%}", f"{s['all_pass']:.1%}", f"{s['mixed']:.1%}",
                      f"{s['zero_variance_at_n']:.1%}", f"{s['answers']:,}", f"{s['tokens']:,}", style=style)
    console.print(table)
    total = rows["all"]
    console.print(f"dead (0/{G} or {G}/{G}): {total['dead']:.1%} of {total['prompts']} prompts; "
                  f"the profile cost {total['answers']:,} answers, {total['tokens']:,} tokens")
    if summary["unscored"]:
        console.print(f"unscored (every answer's reward failed): {summary['unscored']} prompts, not written")


def cmd_profile(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlcurr.config import load_config

    if args.samples < 2:
        raise UserError(f"--samples must be >= 2 (got {args.samples}): with one answer every prompt is 0/1 or 1/1")
    if args.prompts is not None and args.prompts < 1:
        raise UserError(f"--prompts must be >= 1 (got {args.prompts})")
    cfg = load_config(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path(f"{cfg.run_dir}_profile")
    check_output_dir(out, args.overwrite)
    from rlcurr.cluster import ray_of_this_call
    from rlcurr.trainer import Trainer  # heavy imports (torch, ray) only once the recipe is valid

    err = Console(stderr=True)
    with ray_of_this_call():
        trainer = Trainer(cfg, log=lambda s: err.print(s, markup=False, highlight=False))
        pools = select_pools(trainer.env, args.prompts)
        total = sum(len(ps) for ps in pools.values())
        t0 = time.perf_counter()
        try:
            trainer.join_cluster(owner=out)
            trainer.place_actors()
            trainer.start_rollout_pool(transfer=None, threads=None)  # no learner: no weight transfer to set up
            with Progress(TextColumn("profile"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
                          TimeElapsedColumn(), console=err) as bar:
                task = bar.add_task("profile", total=total)
                records, tokens, unscored = profile_policy(trainer, pools, args.samples,
                                                           on_batch=lambda k: bar.advance(task, k))
        finally:
            _release(trainer)
    summary = {"kind": KIND, "recipe": cfg.name, "model_dir": str(trainer.model_dir), "samples": args.samples,
               "prompts_per_distribution": args.prompts, "rollout_n": cfg.rollout.n,
               "temperature": cfg.rollout.temperature, "top_p": cfg.rollout.top_p,
               "max_tokens": cfg.rollout.max_tokens, "seconds": round(time.perf_counter() - t0, 2),
               "unscored": unscored, "distributions": summarize(records, tokens, args.samples, cfg.rollout.n)}
    write_profile(out, records, summary)
    console = Console()
    print_summary(summary, console if console.is_terminal else Console(width=120))  # a log: no squeezed columns
    print(f"profile written to {out}")
    return 0


def _release(trainer) -> None:
    """Stop the rollout workers and free their placement (a Ray the caller had running stays up)."""
    if getattr(trainer, "rollout_pool", None) is not None:
        trainer.rollout_pool.shutdown()
    group = getattr(getattr(trainer, "placement", None), "group", None)
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)


def add_profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="roll out the starting policy over the train prompts: pass counts per prompt, "
                                       "dead-prompt shares per distribution")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. model.warmup.steps=10 rollout.max_tokens=64")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="G",
                   help=f"answers per prompt (default {DEFAULT_SAMPLES})")
    p.add_argument("--prompts", type=int, default=None, metavar="N",
                   help="profile only the first N train prompts of each distribution (default: all)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the run directory + '_profile')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing profile directory")
    p.set_defaults(fn=cmd_profile)
