"""Print a markdown table of the benches (docs/results.md) from bench/results/*.json: one row per figure,
with the hardware it was measured on and the exact command that reproduces it.

    python bench/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def pm(pair, digits: int = 3) -> str:
    m, s = pair
    return "n/a" if m is None or m != m else f"{m:.{digits}f} ± {s:.{digits}f}"


def hw(r: dict) -> str:
    if "device" in r and r["device"] != "cpu":
        return r["device"]
    h = r.get("hardware", {})
    return f"{h.get('cores', '?')} CPU cores ({h.get('cpu', '?')})"


def ci(mean, interval, digits: int = 2) -> str:
    lo, hi = interval
    return "n/a" if mean is None else f"{mean:.{digits}f} [95% CI {lo:.{digits}f}, {hi:.{digits}f}]"


def curriculum_rows(r: dict) -> list[list[str]]:
    pre = r["precondition"]
    gains = ", ".join(f"{d} {pre['uniform_gain'][d]:+.2f}" for d in pre["in_band"])
    rows = [[f"curriculum: precondition (uniform lifts every in-band rung by >= {pre['min_gain']})",
             f"{'passed' if pre['passed'] else 'FAILED'}: {gains}"]]
    for name, s in r["summary"].items():
        rows.append([f"curriculum: {name}: final learnable-mean accuracy; forgetting",
                     f"{pm(s['final_accuracy_mean'])}; {pm(s['forgetting'], 2)}"])
    for what, arms in r["to_target"].items():
        for name, t in arms.items():
            if name != "uniform":
                rows.append([f"curriculum: {what} to reach uniform's final accuracy, {name}/uniform "
                             f"(reached {t['reached']}/{len(t['per_seed'])} seeds)", ci(t["ratio_mean"], t["ratio_ci95"])])
    for name, g in r.get("gap_at_equal_answers", {}).items():
        if name != "uniform":
            rows.append([f"curriculum: {name} - uniform, learnable mean at equal answers", ci(g["mean"], g["ci95"], 3)])
    return rows


def budget_rows(r: dict) -> list[list[str]]:
    rows = [[f"budget: {name}: final learnable mean; answer tokens (last {r['settings']['tail']} steps)",
             f"{ci(s['final_accuracy_mean']['mean'], s['final_accuracy_mean']['ci95'], 3)}; "
             f"{ci(s['answer_tokens_tail']['mean'], s['answer_tokens_tail']['ci95'], 1)}"] for name, s in r["summary"].items()]
    rows += [[f"budget: {k}", ci(v["mean"], v["ci95"], 3)] for k, v in r["ratios"].items()]
    return rows


def guidance_rows(r: dict) -> list[list[str]]:
    return [[f"guidance ({r['settings']['dist']} from {r['start_accuracy']:.3f}): {k}", ci(v["mean"], v["ci95"], 3)]
            for k, v in r["ratios"].items()]


def speed_rows(r: dict) -> list[list[str]]:
    st = r["settings"]
    what = f"{st['params'] / 1e6:.0f}M model, {st['prompts']}x{st['n']} answers, {st['max_tokens']} tokens"
    rows = [[f"speed ({what}): {name} s/step, s/1k tokens", f"{s['s_per_step']:.2f}, {s['s_per_1k_tokens']:.2f}"]
            for name, s in r["systems"].items()]
    rows += [[f"speed: {k}", f"{v:.2f}"] for k, v in r["ratios"].items()]
    return rows


def mfu_rows(r: dict) -> list[list[str]]:
    rows = [[f"learner fwd+bwd+AdamW, {r['params'] / 1e6:.0f}M params, bf16, {r['batch']}x{r['seq']}: tokens/s",
             f"{r['tokens_per_s']:,.0f}"]]
    if "mfu" in r:
        rows.append(["learner MFU (6N + attention; 6N only)", f"{100 * r['mfu']:.1f}%; {100 * r['mfu_6N_only']:.1f}%"])
    return rows


def selective_rows(r: dict) -> list[list[str]]:
    rows = [[f"selective: {name}: final learnable mean; answers; zero-variance groups (whole run)",
             f"{pm(s['final_accuracy_mean'])}; {pm(s['answers_total'], 0)}; {pm(s['zero_variance_groups_total'], 0)}"]
            for name, s in r["summary"].items()]
    for what, arms in r["to_target"].items():
        for name, t in arms.items():
            if name != "dapo":
                rows.append([f"selective: {what} to reach dapo's final accuracy, {name}/dapo "
                             f"(reached {t['reached']}/{len(t['per_seed'])} seeds)", ci(t["ratio_mean"], t["ratio_ci95"])])
    rows += [[f"selective: goal dapo_greso/dapo {g['what']} ({g['when']}) <= {g['goal']}",
              f"{ci(g['mean'], g['ci95'])}: {g['verdict']}"] for g in r["goals"]]
    return rows


TABLES = {"curriculum": curriculum_rows, "budget": budget_rows, "guidance": guidance_rows, "speed_trl": speed_rows,
          "gpu_learner_mfu": mfu_rows,
          "selective": selective_rows}


def main() -> None:
    print("| figure | value | hardware | command |")
    print("|---|---|---|---|")
    for name, rows_of in TABLES.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            print(f"| {name} | not measured | | |", file=sys.stdout)
            continue
        r = json.loads(path.read_text())
        for fig, val in rows_of(r):
            print(f"| {fig} | {val} | {hw(r)} | `{r.get('command', '')}` |")


if __name__ == "__main__":
    main()
