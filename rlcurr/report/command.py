"""The `rlcurr inspect` command: one run (the tables, JSON and figure of this package), or several
side by side with --compare (rlcurr.compare)."""

from __future__ import annotations

import json

from rlcurr import compare
from rlcurr.errors import UserError
from rlcurr.report.plots import plot_run
from rlcurr.report.summary import prompts_json, summary_json
from rlcurr.report.tables import print_prompts, print_summary
from rlcurr.rundata import load_run, parse_steps


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
