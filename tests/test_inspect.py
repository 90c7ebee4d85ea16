"""rlcurr.report (the `rlcurr inspect` command) on synthetic run directories written here (no training)."""

import json
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402

from rlcurr.errors import UserError  # noqa: E402
from rlcurr.report import (  # noqa: E402
    add_inspect_parser,
    load_run,
    parse_steps,
    plot_run,
    print_summary,
    summary_json,
)

DISTS = ["add1", "add2", "noise"]


def write_run(path, steps=40, written=None, truncate=False, budget=True, hints=True):
    """A run of `steps` steps of which `written` were logged; optionally a cut-off last line."""
    written = steps if written is None else written
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"name": "synthetic", "seed": 0, "model": {"tiny": {"arch": "qwen2", "hidden_size": 128, "num_layers": 4}},
           "env": {"name": "arith", "distributions": DISTS}, "rollout": {"n": 8},
           "learner": {"lr": 2e-4}, "algo": {"name": "grpo"},
           "curriculum": {"sampler": "ucb"}, "trainer": {"steps": steps, "prompts_per_step": 16}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(0)
    metrics = [{"step": -1, **{f"eval/accuracy/{d}": 0.1 for d in DISTS}, "eval/accuracy_mean": 0.1}]
    cur = []
    totals = {d: {"groups": 0, "failed": 0, "rerolled": 0, "kept": 0, "solved": 0, "skipped_no_hint": 0,
                  "skipped_cap": 0} for d in DISTS}
    for t in range(written):
        frac = t / max(1, steps - 1)
        probs = np.array([1 - frac + 0.1, frac + 0.1, 0.2])
        probs /= probs.sum()
        m = {"step": t, "reward/mean": float(0.2 + 0.6 * frac + 0.05 * rng.standard_normal()),
             "reward/std": 0.3, "loss": float(rng.standard_normal()), "response_length/mean": 5.0,
             "time/step": 1.5, "tokens": 1000}
        for i, d in enumerate(DISTS):
            m[f"reward/{d}"] = float(np.clip(frac * (1 - 0.3 * i) + 0.1 * rng.standard_normal(), 0, 1))
        if (t + 1) % 10 == 0 or t == steps - 1:
            for i, d in enumerate(DISTS):
                m[f"eval/accuracy/{d}"] = float(min(1.0, 0.1 + frac * (0.9 - 0.3 * i)))
            m["eval/accuracy_mean"] = float(np.mean([m[f"eval/accuracy/{d}"] for d in DISTS[:2]]))
        metrics.append(m)
        step_stats = {}
        for d in DISTS:
            s = {"groups": 5, "failed": int(rng.integers(0, 4)), "kept": 0, "solved": 0,
                 "skipped_no_hint": 0, "skipped_cap": 0}
            s["rerolled"] = s["failed"]
            s["kept"] = int(rng.integers(0, s["rerolled"] + 1))
            s["solved"] = s["kept"]
            step_stats[d] = s
            for k, v in s.items():
                totals[d][k] += v
        rate = lambda s: dict(s, solved_rate=(s["solved"] / s["rerolled"]) if s["rerolled"] else None)  # noqa: E731
        cur.append({
            "step": t, "sampler": "ucb",
            "distributions": {d: {"prob": float(p), "score": float(p * 2), "count": 16 * (t + 1), "step_count": 16,
                                  "mean_reward": m[f"reward/{d}"], "mean_abs_adv": 0.3, "planned": 5}
                              for d, p in zip(DISTS, probs)},
            "budget": {"default": 64 - t, "slack": 1.0,
                       "per_distribution": {d: 64 - t + 4 * i for i, d in enumerate(DISTS)}} if budget else None,
            "hints": {"step": {d: rate(s) for d, s in step_stats.items()},
                      "total": {d: rate(s) for d, s in totals.items()}} if hints else None,
            "filter": None, "d3s": None})
    with open(path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)
    with open(path / "curriculum.jsonl", "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in cur)
    if truncate:
        for name, last in (("metrics.jsonl", metrics), ("curriculum.jsonl", cur)):
            with open(path / name, "a") as f:
                f.write(json.dumps({**last[-1], "step": written})[:57])  # a line cut off by a crash
    return path


def test_finished_run(tmp_path):
    run = load_run(write_run(tmp_path / "run"), None)
    assert run.finished and run.last_step == 39 and run.status == "finished"
    assert run.distributions == DISTS
    s = summary_json(run)
    assert s["status"] == "finished"
    assert s["config"] == {"name": "synthetic", "env": "arith", "sampler": "ucb", "model": "tiny qwen2 h128 L4",
                           "algo": "grpo", "steps": 40, "n": 8, "lr": 2e-4, "prompts_per_step": 16}
    steps = [x["step"] for x in s["snapshots"]]
    assert steps[0] == 0 and steps[-1] == 39 and len(steps) == 5
    last = s["snapshots"][-1]
    assert last["eval_step"] == 39 and last["distributions"]["add1"]["eval_accuracy"] == pytest.approx(1.0)
    assert s["snapshots"][0]["eval_step"] == -1  # before RL until the first in-training eval
    assert [e["step"] for e in s["evals"]] == [-1, 9, 19, 29, 39]
    assert s["budget"]["first"]["default"] == 64 and s["budget"]["min"] == 64 - 39
    assert set(s["hints"]["total"]) == set(DISTS)
    json.dumps(s)  # JSON-able
    con = Console(record=True, width=160)
    print_summary(run, con)
    text = con.export_text()
    assert "finished" in text and "add2" in text and "token budget" in text and "hint guidance" in text


def test_many_distributions_print_one_row_each(tmp_path, monkeypatch):
    import rlcurr.report.tables as insp

    monkeypatch.setattr(insp, "WIDE", 2)  # the 3-distribution run now counts as "many"
    run = load_run(write_run(tmp_path / "run"), None)
    con = Console(record=True, width=100)
    print_summary(run, con)
    lines = con.export_text().splitlines()
    steps = [s["step"] for s in summary_json(run)["snapshots"]]
    assert any(all(f"step {t}" in line for t in steps) for line in lines)  # steps are the columns
    for d in DISTS:  # each distribution is a row (snapshots, evaluations, hints), figures on its line
        rows = [line for line in lines if line.strip("│ ").startswith(d)]
        assert len(rows) == 3, (d, rows)
        assert rows[0].count("p 0.") == len(steps)
        assert len(re.findall(r"\d\.\d\d", rows[1])) == len(summary_json(run)["evals"])


def test_crashed_run_truncated_line(tmp_path):
    run = load_run(write_run(tmp_path / "run", steps=40, written=17, truncate=True), None)
    assert not run.finished and run.last_step == 16
    assert run.skipped_lines == {"metrics.jsonl": 1, "curriculum.jsonl": 1}
    assert "unfinished at step 16/39" in run.status
    s = summary_json(run)
    assert s["status"] == "unfinished" and s["snapshots"][-1]["step"] == 16
    con = Console(record=True, width=160)
    print_summary(run, con)
    assert "skipped unparseable" in con.export_text()


def test_steps_narrow(tmp_path):
    d = write_run(tmp_path / "run")
    run = load_run(d, (10, 20))
    assert {r["step"] for r in run.metrics} == set(range(10, 21))
    assert {r.step for r in run.curriculum} == set(range(10, 21))
    assert run.finished  # status judged on the whole file
    s = summary_json(run)
    assert s["snapshots"][0]["step"] == 10 and s["snapshots"][-1]["step"] == 20
    assert [e["step"] for e in s["evals"]] == [19]
    assert {r["step"] for r in load_run(d, (None, 5)).metrics} == set(range(-1, 6))
    assert {r["step"] for r in load_run(d, (35, None)).metrics} == set(range(35, 40))


def test_parse_steps():
    assert parse_steps("3:7") == (3, 7)
    assert parse_steps(":7") == (None, 7)
    assert parse_steps("3:") == (3, None)
    assert parse_steps("-1:0") == (-1, 0)
    assert parse_steps("5") == (5, 5)
    assert parse_steps(None) is None
    for bad in ("a:b", "1:2:3", "7:3"):
        with pytest.raises(UserError):
            parse_steps(bad)


def test_missing(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_run(tmp_path / "nope", None)
    d = write_run(tmp_path / "run")
    (d / "curriculum.jsonl").unlink()
    with pytest.raises(UserError, match="curriculum.jsonl"):
        load_run(d, None)


def _check_png(path):
    assert path.stat().st_size > 20_000
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 500
    assert float(np.var(img[..., :3])) > 0.005  # not blank


def test_plot(tmp_path):
    run = load_run(write_run(tmp_path / "run"), None)
    out = plot_run(run, tmp_path / "fig.png")
    _check_png(out)
    bare = load_run(write_run(tmp_path / "bare", written=12, truncate=True, budget=False, hints=False), None)
    _check_png(plot_run(bare, tmp_path / "bare.png"))


def test_cli(tmp_path, capsys):
    import argparse

    d = write_run(tmp_path / "run")
    parser = argparse.ArgumentParser()
    add_inspect_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["inspect", str(d), "--json", "--steps", "5:", "--plot", str(tmp_path / "p.png")])
    args.fn(args)
    s = json.loads(capsys.readouterr().out)
    assert s["steps_filter"] == [5, None] and s["snapshots"][0]["step"] == 5
    assert (tmp_path / "p.png").stat().st_size > 20_000
    args = parser.parse_args(["inspect", str(d)])
    args.fn(args)
    assert "synthetic" in capsys.readouterr().out
    assert not math.isnan(s["time_per_step_mean"])


def test_the_report_module_does_not_shadow_the_standard_library():
    import importlib
    import inspect as stdlib_inspect
    from pathlib import Path

    import rlcurr

    assert not (Path(rlcurr.__file__).parent / "inspect.py").exists()
    assert hasattr(stdlib_inspect, "signature")
    assert importlib.import_module("rlcurr.report").add_inspect_parser is add_inspect_parser


# ---------------------------------------------------------------- --prompts, GRESO, alerts

def write_prompt_run(path, steps=8):
    """Rows with the controller's issue-14 keys: prompts summary, greso, alerts (hand-made numbers)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"name": "prompts", "env": {"name": "chain", "distributions": ["a", "b"]},
           "curriculum": {"sampler": "uniform", "greso": {}}, "trainer": {"steps": steps}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics, cur = [], []
    for t in range(steps):
        metrics.append({"step": t, "reward/mean": 0.5})
        # a: t + 1 prompts seen, all in the lowest bin until step 3, then one moves to the top bin per step
        top = max(0, t - 3)
        prompts = {"a": {"seen": t + 1, "pass_hist": [t + 1 - top, 0, 0, 0, top], "zero_var_share": 0.5,
                         "hardest": [["a0", 0.0]], "easiest": [["a9", 1.0 if top else 0.0]]},
                   "b": {"seen": 1, "pass_hist": [0, 0, 1, 0, 0], "zero_var_share": None,
                         "hardest": [["b0", 0.5]], "easiest": [["b0", 0.5]]}}
        alerts = []
        if t >= 5:
            alerts.append({"kind": "starve", "distribution": "b", "steps": t - 2, "prob": 0.05})
        if t == 3:
            alerts.append({"kind": "forget", "distribution": "a", "accuracy": 0.4, "step": 3, "best": 0.6,
                           "best_step": 1, "drop": 0.2})
        cur.append({"step": t, "sampler": "uniform",
                    "distributions": {d: {"prob": 0.5, "score": 1.0, "count": 8 * (t + 1), "step_count": 8,
                                          "mean_reward": 0.5, "mean_abs_adv": 0.3, "planned": 4} for d in "ab"},
                    "budget": None, "hints": None, "filter": None, "d3s": None, "prompts": prompts,
                    "greso": {"p_easy": 0.5 - 0.01 * (t + 1), "p_hard": 0.5 + 0.01 * (t + 1), "skipped": t,
                              "skipped_by_distribution": {"a": t}}, "alerts": alerts})
    with open(path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)
    with open(path / "curriculum.jsonl", "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in cur)
    return path


def test_prompts_over_time_alerts_and_greso(tmp_path):
    from rlcurr.report import print_prompts, prompts_json

    run = load_run(write_prompt_run(tmp_path / "run"), None)
    p = prompts_json(run, ranges=4)
    # 8 rows in 4 ranges of 2: [0,1] [2,3] [4,5] [6,7]; each shows the row at its end (steps 1, 3, 5, 7):
    # a at step 1: seen 2, top 0 -> [2,0,0,0,0]; step 3: [4,..,0]; step 5: top 2 -> [4,0,0,0,2]; step 7: [4,0,0,0,4]
    assert p["ranges"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    a = p["distributions"]["a"]
    assert [r["pass_hist"] for r in a["over_time"]] == [[2, 0, 0, 0, 0], [4, 0, 0, 0, 0], [4, 0, 0, 0, 2],
                                                         [4, 0, 0, 0, 4]]
    assert [r["seen"] for r in a["over_time"]] == [2, 4, 6, 8]
    assert a["hardest"] == [["a0", 0.0]] and a["easiest"] == [["a9", 1.0]]
    assert p["distributions"]["b"]["over_time"][0]["zero_var_share"] is None

    s = summary_json(run)
    # GRESO: last row step 7: p_easy 0.5 - 0.08 = 0.42, p_hard 0.58; skipped 0 + 1 + ... + 7 = 28
    assert s["greso"] == {"p_easy": pytest.approx(0.42), "p_hard": pytest.approx(0.58), "at_step": 7,
                          "skipped_total": 28}
    # alerts: starve b in rows 5, 6, 7 (active at the last row); forget a in row 3 only
    by = {(x["kind"], x["distribution"]): x for x in s["alerts"]}
    assert (by[("starve", "b")]["first_step"], by[("starve", "b")]["last_step"], by[("starve", "b")]["rows"],
            by[("starve", "b")]["active"]) == (5, 7, 3, True)
    assert by[("forget", "a")]["rows"] == 1 and by[("forget", "a")]["active"] is False

    con = Console(record=True, width=160)
    print_summary(run, con)
    print_prompts(run, con)
    out = con.export_text()
    assert "curriculum alerts" in out and "starving b" in out and "forgetting a" in out
    assert "GRESO: p_easy 0.420, p_hard 0.580" in out and "28 prompts skipped" in out
    assert "6-7" in out and "hardest: a0 0.00" in out and "easiest: a9 1.00" in out


def test_cli_prompts_flag_and_old_runs(tmp_path, capsys):
    import argparse

    d = write_prompt_run(tmp_path / "run")
    parser = argparse.ArgumentParser()
    add_inspect_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["inspect", str(d), "--prompts", "--json", "--steps", "4:"])
    args.fn(args)
    s = json.loads(capsys.readouterr().out)
    assert s["prompts"]["ranges"] == [[4, 4], [5, 5], [6, 6], [7, 7]]
    args = parser.parse_args(["inspect", str(d), "--prompts"])
    args.fn(args)
    assert "a: prompts by pass-rate EMA" in capsys.readouterr().out
    # a run written before per-prompt memory existed: no prompts key, no alerts, no greso
    old = write_run(tmp_path / "old", steps=5)
    args = parser.parse_args(["inspect", str(old), "--prompts"])
    args.fn(args)
    assert "no per-prompt statistics" in capsys.readouterr().out
    s = summary_json(load_run(old, None))
    assert s["alerts"] == [] and s["greso"] is None


def test_prompts_from_controller_records(tmp_path):
    """curriculum.jsonl rows written from a real controller's record() feed `--prompts`."""
    from rlcurr.curriculum.config import CurriculumConfig
    from rlcurr.curriculum.controller import CurriculumController
    from rlcurr.report import prompts_json
    from rlcurr.types import Completion, Prompt, ScoredGroup

    c = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
    pools = {d: [Prompt(uid=f"{d}{i}", distribution=d, question="q", answer="1") for i in range(4)] for d in "ab"}
    ctrl = CurriculumController(CurriculumConfig(greso={}), pools, prompts_per_step=4, n=4, temperature=1.0,
                                top_p=1.0, max_tokens=8, total_steps=6, seed=0)
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"name": "ctrl", "trainer": {"steps": 6}}))
    rows = []
    for t in range(6):
        plan = ctrl.plan(t)
        ctrl.observe(t, [ScoredGroup(prompt=it.prompt, prompt_ids=[1], completions=[c] * 4,
                                     rewards=[1.0] * 4 if it.prompt.uid.endswith("0") else [1.0, 0.0, 0.0, 0.0],
                                     reward_parts={}, max_tokens=8) for it in plan.items])
        rows.append(ctrl.record(t))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": t}) + "\n" for t in range(6)))
    (d / "curriculum.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = prompts_json(load_run(d, None))
    assert p["at_step"] == 5 and set(p["distributions"]) == {"a", "b"}
    seen = {u for u in ctrl.memory.rec}
    assert sum(p["distributions"][x]["over_time"][-1]["seen"] for x in "ab") == len(seen)
    # a0 / b0 always all-correct (pass rate 1), the others 0.25: the easiest prompt is a0 or b0 when seen
    for x in "ab":
        if f"{x}0" in seen:
            assert p["distributions"][x]["easiest"][0] == [f"{x}0", 1.0]


def test_curriculum_rows_are_read_as_typed_rows_and_a_malformed_one_is_skipped(tmp_path):
    """load_run reads curriculum.jsonl through CurriculumRow.from_json: rows carry attributes,
    and a line whose `distributions` is not a mapping counts as skipped instead of breaking
    `inspect` later."""
    from rlcurr.curriculum.row import CurriculumRow

    d = write_run(tmp_path / "run", steps=5)
    with open(d / "curriculum.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "distributions": [0.5, 0.5]}) + "\n")
    run = load_run(d, None)
    assert all(isinstance(r, CurriculumRow) for r in run.curriculum)
    assert [r.step for r in run.curriculum] == [0, 1, 2, 3, 4]
    assert run.skipped_lines["curriculum.jsonl"] == 1
    assert set(run.curriculum[-1].probabilities()) == set(run.distributions)
    summary_json(run)  # the summary reads the typed rows
