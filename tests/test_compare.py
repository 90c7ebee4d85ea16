"""rlcurr.compare (`rlcurr inspect A B --compare`) on run directories written here by hand (no training)."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402

from rlcurr.cli import main  # noqa: E402
from rlcurr.compare import answers_curve, compare_json, print_compare, run_names  # noqa: E402
from rlcurr.rundata import load_run  # noqa: E402

DISTS = ["add1", "noise"]


def write_run(path, sampler, seed, answers, evals, probs, counter=True):
    """A finished run of len(answers) steps: `answers[t]` answers generated at step t, `evals` {step: learnable
    mean accuracy} (step -1 = before RL; noise stays at 0 and is not in the mean, as the trainer logs it),
    `probs[t]` = {distribution: sampling probability} of curriculum row t."""
    path.mkdir(parents=True)
    cfg = {"name": path.parent.name, "seed": seed, "env": {"name": "arith", "distributions": DISTS},
           "algo": {"name": "grpo"}, "curriculum": {"sampler": sampler}, "trainer": {"steps": len(answers)}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"step": -1}] + [{"step": t, "reward/mean": 0.1 * t} for t in range(len(answers))]
    for r in rows[1:]:
        if counter:
            r["rollout/answers_generated"] = answers[r["step"]]
    for r in rows:
        if r["step"] in evals:
            r.update({"eval/accuracy/add1": evals[r["step"]], "eval/accuracy/noise": 0.0,
                      "eval/accuracy_mean": evals[r["step"]]})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cur = [{"step": t, "sampler": sampler, "distributions": {d: {"prob": p[d]} for d in DISTS}}
           for t, p in enumerate(probs)]
    (path / "curriculum.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cur))
    return path


def two_runs(tmp_path):
    """Both directories are called `run` (names must still differ).

    fast (a/run): 100 answers per step, steps 0-3; accuracy -1: 0.2, 1: 0.5, 3: 0.6
        cumulative answers at its evaluations: -1: 0, 1: 200, 3: 400; final 0.6, first reached at step 3 (400)
    slow (b/run): 50 answers per step, steps 0-5; accuracy -1: 0.2, 2: 0.3, 5: 0.5
        cumulative: -1: 0, 2: 150, 5: 300; final 0.5, first reached at step 5 (300)
    """
    fast = write_run(tmp_path / "a" / "run", "ucb", 0, [100] * 4, {-1: 0.2, 1: 0.5, 3: 0.6},
                     [{"add1": 0.8, "noise": 0.2}] * 4)
    slow = write_run(tmp_path / "b" / "run", "uniform", 1, [50] * 6, {-1: 0.2, 2: 0.3, 5: 0.5},
                     [{"add1": 0.5, "noise": 0.5}] * 5 + [{"add1": 0.8, "noise": 0.2}])
    return fast, slow


def test_answers_to_reach_matrix(tmp_path):
    fast, slow = two_runs(tmp_path)
    c = compare_json([load_run(fast), load_run(slow)])
    assert [s["name"] for s in c["runs"]] == ["a/run", "b/run"]
    f, s = c["runs"]
    assert (f["answers_total"], s["answers_total"]) == (400, 300)
    assert f["final"] == {"step": 3, "accuracy_mean": 0.6, "accuracy": {"add1": 0.6, "noise": 0.0}}
    assert f["best"] == {"step": 3, "accuracy_mean": 0.6} and s["best"] == {"step": 5, "accuracy_mean": 0.5}
    assert (f["answers_to_own_final"], s["answers_to_own_final"]) == (400, 300)
    assert [(p["step"], p["answers"]) for p in answers_curve(load_run(slow))] == [(-1, 0), (2, 150), (5, 300)]
    assert f["config"] == {"sampler": "ucb", "algo": "grpo", "seed": 0, "steps": 4, "env": "arith"}
    assert f["status"] == "finished" and s["status"] == "finished"
    # slow's probabilities: add1 0.5 in five rows, 0.8 in the last: mean (5 * 0.5 + 0.8) / 6 = 0.55
    assert s["sampling_probs"]["add1"] == {"mean": pytest.approx(0.55), "last": 0.8}
    assert f["sampling_probs"]["noise"] == {"mean": pytest.approx(0.2), "last": 0.2}

    m = c["answers_to_reach"]
    # fast -> slow's final 0.5: fast's first evaluation >= 0.5 is step 1 (equal counts), 200 answers;
    #   slow needed 300 to first reach its own 0.5: ratio 200 / 300
    assert m["a/run"]["b/run"] == {"target": 0.5, "reached": True, "step": 1, "answers": 200, "lower_bound": False,
                                   "ratio": pytest.approx(2 / 3)}
    # slow -> fast's final 0.6: never (best 0.5); its whole run, 300 answers, is a lower bound; 300 / 400
    assert m["b/run"]["a/run"] == {"target": 0.6, "reached": False, "step": None, "answers": 300,
                                   "lower_bound": True, "ratio": 0.75}
    # the diagonal: each run against itself, ratio 1
    assert m["a/run"]["a/run"]["answers"] == 400 and m["a/run"]["a/run"]["ratio"] == 1.0
    assert m["b/run"]["b/run"]["step"] == 5 and m["b/run"]["b/run"]["ratio"] == 1.0
    assert c["warnings"] == []

    con = Console(record=True, width=160)
    print_compare([load_run(fast), load_run(slow)], con)
    text = con.export_text()
    assert "200 (0.67x)" in text and "not reached" in text and ">300 (>0.75x)" in text and "lower bound" in text
    assert "p 0.55 / 0.80" in text


def test_steps_filter_applies_to_every_run(tmp_path):
    fast, slow = two_runs(tmp_path)
    # steps -1..2: fast's final is 0.5 @1 (200 answers), slow's 0.3 @2 (150 answers)
    c = compare_json([load_run(fast, (None, 2)), load_run(slow, (None, 2))])
    f, s = c["runs"]
    assert (f["final"]["step"], f["answers_total"], s["final"]["step"], s["answers_total"]) == (1, 300, 2, 150)
    # fast reaches slow's 0.3 at step 1 (200) vs slow's own 150; slow never reaches 0.5 within 150 answers
    assert (c["answers_to_reach"]["a/run"]["b/run"]["answers"], c["answers_to_reach"]["a/run"]["b/run"]["ratio"]) == \
        (200, pytest.approx(200 / 150))
    assert c["answers_to_reach"]["b/run"]["a/run"]["lower_bound"] is True


def test_run_names(tmp_path):
    a, b = tmp_path / "x" / "run", tmp_path / "y" / "run"
    assert run_names([_stub(a), _stub(b)]) == ["x/run", "y/run"]
    assert run_names([_stub(a), _stub(tmp_path / "other")]) == ["run", "other"]
    assert run_names([_stub(a), _stub(a)]) == ["run", "run (2)"]


def _stub(path):
    from rlcurr.rundata import RunData

    return RunData(run_dir=path, config={}, metrics=[], curriculum=[], distributions=[])


def test_runs_without_answer_counts(tmp_path):
    fast, _ = two_runs(tmp_path)
    old = write_run(tmp_path / "old", "uniform", 0, [100] * 4, {-1: 0.2, 3: 0.5}, [{"add1": 1.0, "noise": 0.0}] * 4,
                    counter=False)
    c = compare_json([load_run(fast), load_run(old)])
    cell = c["answers_to_reach"]["old"]["run"]  # the names: last path parts, "run" and "old" differ
    assert c["runs"][1]["answers_total"] is None and cell["answers"] is None and cell["ratio"] is None
    assert c["answers_to_reach"]["run"]["old"]["step"] == 1  # steps are still read off
    assert any("no rollout/answers_generated" in w for w in c["warnings"])


def test_cli_compare_plot_and_json(tmp_path, capsys):
    fast, slow = two_runs(tmp_path)
    png = tmp_path / "out" / "cmp.png"
    assert main(["inspect", str(fast), str(slow), "--compare", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "a/run" in out and "b/run" in out and "figure written to" in out
    assert png.stat().st_size > 20_000
    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.std() > 0.05  # something drawn, not a blank canvas

    assert main(["inspect", str(fast), str(slow), "--compare", "--json", "--steps", ":3"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert [s["run_dir"] for s in c["runs"]] == [str(fast), str(slow)]
    assert set(c["answers_to_reach"]) == {"a/run", "b/run"}


@pytest.mark.parametrize("extra, message", [
    (["--compare"], "--compare needs at least two run directories"),
    (["SECOND"], "add --compare"),
    (["SECOND", "--compare", "--prompts"], "--prompts shows one run"),
    (["MISSING", "--compare"], "run directory not found: "),
])
def test_cli_errors(tmp_path, capsys, extra, message):
    fast, slow = two_runs(tmp_path)
    args = [{"SECOND": str(slow), "MISSING": str(tmp_path / "nope")}.get(a, a) for a in extra]
    assert main(["inspect", str(fast), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    if "MISSING" in extra:
        assert str(tmp_path / "nope") in err[0]


def test_not_a_run_dir_is_named(tmp_path, capsys):
    fast, _ = two_runs(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(fast), str(tmp_path / "empty"), "--compare"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'empty'} does not look like an rlcurr run: missing config.yaml, "
                   "metrics.jsonl, curriculum.jsonl"]
