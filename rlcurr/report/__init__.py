"""`rlcurr inspect RUN_DIR`: summarise a run directory (config.yaml, metrics.jsonl, curriculum.jsonl;
docs/run-directory.md).

(The package is `report`, not `inspect`, so that it does not shadow the standard library's inspect.)

    rlcurr inspect runs/quickstart                 rich tables in the terminal
    rlcurr inspect runs/quickstart --json          the same as one JSON object on stdout
    rlcurr inspect runs/quickstart --plot run.png  a figure (sampling probabilities, eval accuracy,
                                                   train reward, budget, hint rates)
    rlcurr inspect runs/quickstart --steps 10:40   only steps 10..40 (inclusive; either side optional)
    rlcurr inspect runs/a runs/b --compare         several runs side by side (rlcurr/compare.py; with
                                                   --json, --plot, --steps as above)

Works on a finished run, a run still going, or a crashed one (a cut-off last line is skipped).
One module per job, each importing only downwards:

    rlcurr.rundata         loading a run directory (shared with rlcurr.compare)
    rlcurr.display         number and table formatting (shared with rlcurr.compare)
    report.summary         the figures as data (summary_json, prompts_json)
    report.tables          the terminal tables (print_summary, print_prompts)
    report.plots           the figure (plot_run)
    report.command         the command line (cmd_inspect, add_inspect_parser), which calls rlcurr.compare
"""

from __future__ import annotations

from rlcurr.report.command import add_inspect_parser, cmd_compare, cmd_inspect
from rlcurr.report.plots import plot_run
from rlcurr.report.summary import alerts_summary, greso_summary, prompts_json, snapshot_steps, summary_json
from rlcurr.report.tables import print_prompts, print_summary
from rlcurr.rundata import RUN_FILES, RunData, config_brief, eval_rows, load_run, parse_steps

__all__ = ["RUN_FILES", "RunData", "add_inspect_parser", "alerts_summary", "cmd_compare", "cmd_inspect",
           "config_brief", "eval_rows", "greso_summary", "load_run", "parse_steps", "plot_run", "print_prompts",
           "print_summary", "prompts_json", "snapshot_steps", "summary_json"]
