"""`rlcurr profile RECIPE`: how hard each train prompt is for the policy training starts from.
This module holds the profile's files and what training reads of them (the trainer imports it);
the command that rolls out and writes them is rlcurr/profile_command.py.

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
