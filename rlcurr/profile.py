"""`rlcurr profile RECIPE`: how hard each train prompt is for the policy training starts from.

What is measured. The recipe's starting policy -- the model the trainer prepares (`model.path`, or
the tiny model after its SFT warm-up, from the same cache), loaded by the trainer's own rollout
workers -- answers every train prompt of every distribution G times (`--samples`, default 8; with
`--prompts N` only the first N prompts of each pool, in pool order). Prompts are encoded, rolled
out and scored by the trainer's own code (`Trainer.rollout` with a BatchPlan of the recipe's
rollout.temperature, top_p and max_tokens, then `Trainer.score`), in batches of
trainer.prompts_per_step (with curriculum.ead: at step 0's per-position temperatures). An answer
passes when the environment's verifier (its first default reward) scores it > 0:
`ScoredGroup.correct`, the rule of held-out accuracy. Under
`reward.on_error: none` an answer whose reward failed is left out, as in training, so a prompt
may count fewer than G answers; a prompt left with none is not written (counted as unscored).

Written to the output directory (default `<run dir>_profile`, `--out`), all at once at the end
(a temporary directory renamed; nothing is left behind on an error or Ctrl-C):
  profile.jsonl          one line per prompt: uid, distribution, passes, answers
  profile_summary.json   the settings, and per distribution and overall: prompts, answers,
                         tokens generated, the passes histogram (0..G), the shares at 0/G, at
                         G/G and in between, and the expected zero-variance share at rollout.n
  profile_histogram.png  per distribution, the number of prompts at each passes value 0..G

Expected zero-variance share at rollout.n. With a prompt's estimated pass rate p = passes /
answers, a group of n answers all fail or all pass with probability p^n + (1 - p)^n; the share
is its mean over the prompts. This plug-in estimate is biased for small G: p^n is convex, so
the noise in p = passes / G raises it on average (a prompt with true p = 0.5 profiled at G = 4
is 0/4 or 4/4 one time in eight, and then counts as certainly dead). With G >= n the unbiased
estimate is (C(passes, n) + C(answers - passes, n)) / C(answers, n); it is not used here.

The profile is a prior for training (`curriculum.prompts.prior`): `load_profile` reads it back,
`filter_pools` applies `curriculum.prompts.keep_pass`, and the trainer seeds the curriculum with
it and logs its answer count at step -1 (`profile/answers`, see Trainer.apply_prior).

Left out: the curriculum's token budget (every prompt gets rollout.max_tokens), guidance hints,
DAPO / SPEED filtering, held-out (eval) prompts, and the learner (none is started: with LoRA the
learner's merged starting weights equal the prepared model, the adapters starting at zero). The
Ray placement is the training run's, so the learner's GPUs are reserved, unused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

from rlcurr.errors import UserError
from rlcurr.paths import read_utf8

PROFILE_FILE = "profile.jsonl"
SUMMARY_FILE = "profile_summary.json"
HISTOGRAM_FILE = "profile_histogram.png"
PRIOR_FILE = "prior.json"  # in a run directory: the prior a run started from (Trainer.apply_prior)
KIND = "rlcurr profile"  # profile_summary.json's "kind": what --overwrite may delete
DEFAULT_SAMPLES = 8

Prior = dict[str, tuple[str, int, int]]  # prompt uid -> (distribution, passes, answers)


# ---------------------------------------------------------------- reading a profile back (pure)


def profile_file(path: str | Path) -> Path:
    """`path` itself, or the profile.jsonl in a directory; UserError when there is none."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / PROFILE_FILE).is_file():
            raise UserError(f"curriculum.prompts.prior: {path} is a directory without a {PROFILE_FILE} "
                            f"(write one with `rlcurr profile RECIPE`)")
        return path / PROFILE_FILE
    if not path.exists():
        raise UserError(f"curriculum.prompts.prior: profile not found: {path}")
    return path


def load_profile(path: str | Path) -> Prior:
    """A profile.jsonl (or the directory holding one) as {uid: (distribution, passes, answers)}.
    Every way it can be wrong is one UserError naming the file (and the line): missing, a
    directory without one, unreadable, not UTF-8, a line that is not a JSON object with a string
    uid and distribution and integers 0 <= passes <= answers, answers >= 1, a uid listed twice,
    or no line at all. Blank lines are skipped."""
    file = profile_file(path)
    where = f"curriculum.prompts.prior: {file}"
    text = read_utf8(file, where)
    prior: Prior = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}:{number}: not valid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}:{number}: each line must be a JSON object with uid, distribution, "
                            f"passes, answers (got a {type(row).__name__})")
        missing = [k for k in ("uid", "distribution", "passes", "answers") if k not in row]
        if missing:
            raise UserError(f"{where}:{number}: missing {', '.join(repr(k) for k in missing)}")
        uid, dist, passes, answers = row["uid"], row["distribution"], row["passes"], row["answers"]
        if not isinstance(uid, str) or not isinstance(dist, str):
            raise UserError(f"{where}:{number}: uid and distribution must be strings")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (passes, answers)):
            raise UserError(f"{where}:{number}: passes and answers must be integers")
        if answers < 1 or not 0 <= passes <= answers:
            raise UserError(f"{where}:{number}: need 0 <= passes <= answers and answers >= 1 "
                            f"(got passes {passes}, answers {answers})")
        if uid in prior:
            raise UserError(f"{where}:{number}: uid {uid!r} is listed twice (first on line {first_line[uid]})")
        prior[uid] = (dist, passes, answers)
        first_line[uid] = number
    if not prior:
        raise UserError(f"{where}: no profiled prompts in it")
    return prior


def prior_for(pools: dict[str, Sequence], prior: Prior) -> Prior:
    """The entries of `prior` for prompts in `pools` (same uid and distribution)."""
    return {p.uid: prior[p.uid] for d, prompts in pools.items() for p in prompts
            if p.uid in prior and prior[p.uid][0] == d}


def filter_pools(pools: dict[str, Sequence], prior: Prior,
                 band: tuple[float, float]) -> tuple[dict[str, list], list[str]]:
    """(pools without the prompts whose profiled pass rate passes / answers lies outside
    band = [lo, hi], the uids dropped). A prompt the profile does not list (or lists under another
    distribution) is kept. A distribution that had prompts and has none left is a UserError
    naming it."""
    lo, hi = band
    kept: dict[str, list] = {}
    dropped: list[str] = []
    for d, prompts in pools.items():
        kept[d] = []
        for p in prompts:
            entry = prior.get(p.uid)
            if entry is not None and entry[0] == d and not lo <= entry[1] / entry[2] <= hi:
                dropped.append(p.uid)
            else:
                kept[d].append(p)
    empty = [d for d in pools if len(pools[d]) and not kept[d]]
    if empty:
        raise UserError(f"curriculum.prompts.keep_pass [{lo:g}, {hi:g}] leaves no train prompt in distribution(s) "
                        f"{', '.join(empty)}: every one was profiled outside the band; widen keep_pass")
    return kept, dropped


# ---------------------------------------------------------------- summary (pure)


def zero_variance_share(rates: Iterable[float], n: int) -> float:
    """Mean over prompts of p^n + (1 - p)^n: the expected share of groups of n answers that all
    fail or all pass, each prompt at its pass rate p (plug-in: see the module docstring)."""
    rates = list(rates)
    return sum(p**n + (1 - p) ** n for p in rates) / len(rates) if rates else float("nan")


def summarize(records: list[dict], tokens: dict[str, int], samples: int, n: int) -> dict:
    """Per distribution (in order of first appearance) and overall ("all"): prompts, answers,
    tokens, histogram of passes (index 0..samples), shares all-fail (0/G), all-pass (G/G),
    mixed, and the expected zero-variance share at n answers. `records` are profile.jsonl rows."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["distribution"], []).append(r)
    out = {d: _stats(rows, tokens.get(d, 0), samples, n) for d, rows in groups.items()}
    out["all"] = _stats(records, sum(tokens.values()), samples, n)
    return out


def _stats(rows: list[dict], tokens: int, samples: int, n: int) -> dict:
    k = len(rows)
    fail = sum(r["passes"] == 0 for r in rows)
    ok = sum(r["passes"] == r["answers"] for r in rows)
    hist = [0] * (samples + 1)
    for r in rows:
        hist[r["passes"]] += 1
    share = (lambda x: x / k) if k else (lambda x: float("nan"))
    return {"prompts": k, "answers": sum(r["answers"] for r in rows), "tokens": tokens, "histogram": hist,
            "all_fail": share(fail), "all_pass": share(ok), "mixed": share(k - fail - ok),
            "dead": share(fail + ok),
            "zero_variance_at_n": zero_variance_share((r["passes"] / r["answers"] for r in rows), n)}


# ---------------------------------------------------------------- rolling out


def profile_policy(trainer, pools: dict[str, Sequence], samples: int,
                   on_batch=lambda k: None) -> tuple[list[dict], dict[str, int], int]:
    """Roll out `samples` answers to every prompt of `pools` with the trainer's rollout workers
    (started: `Trainer.place_actors` / `start_rollout_pool`) and score them with its rewards.
    Returns (profile.jsonl rows in pool order, tokens generated per distribution, prompts left
    unscored). `on_batch(k)` is called after each batch of k prompts."""
    from rlcurr.types import BatchPlan, PlannedPrompt

    cfg = trainer.cfg
    items = [PlannedPrompt(p, cfg.rollout.max_tokens) for prompts in pools.values() for p in prompts]
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
    from rlcurr.trainer import Trainer  # heavy imports (torch, ray) only once the recipe is valid

    err = Console(stderr=True)
    trainer = Trainer(cfg, log=lambda s: err.print(s, markup=False, highlight=False))
    pools = select_pools(trainer.env, args.prompts)
    total = sum(len(ps) for ps in pools.values())
    t0 = time.perf_counter()
    try:
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
    """Stop the rollout workers and free their placement (a Ray this process shares stays up)."""
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
