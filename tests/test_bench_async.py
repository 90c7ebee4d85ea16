"""bench/async.py: the smoke runs k = 0, 1, 2 on both recipes and reports what the full
bench reports; its arithmetic against k0 is checked on hand-made runs."""

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

A = importlib.import_module("bench.async")  # `async` is a keyword: no `from bench import async`


def _run(seed, s_per_step, gain):
    return {"seed": seed, "s_per_step": s_per_step, "gain": gain, "final_accuracy_mean": 0.2 + gain,
            "outside_gen_learn_frac": 0.1, "rollout_s_per_step": 0.3, "learner_s_per_step": 0.2, "lag_max": 0}


def test_comparisons_are_per_seed_against_k0_and_the_spread_is_k0s():
    per_arm = {"k0": [_run(0, 1.0, 0.30), _run(1, 2.0, 0.10), _run(2, 1.0, 0.20)],
               "k1": [_run(0, 0.5, 0.25), _run(1, 1.0, 0.10), _run(2, 0.8, 0.15)],
               "k2": [_run(0, 0.5, 0.00), _run(1, 1.0, -0.10), _run(2, 0.5, 0.00)]}
    f = A.analyse_recipe(per_arm)
    assert f["seed_spread_k0_gain"] == pytest.approx(0.20)          # 0.30 - 0.10
    k1, k2 = f["arms"]["k1"], f["arms"]["k2"]
    assert k1["s_per_step_ratio_vs_k0"]["per_seed"] == pytest.approx([0.5, 0.5, 0.8])
    assert k1["gain_diff_vs_k0"]["per_seed"] == pytest.approx([-0.05, 0.0, -0.05])
    assert k1["within_seed_spread"]                                 # mean -0.033 >= -0.20
    assert k2["gain_diff_vs_k0"]["mean"] == pytest.approx(-0.233, abs=1e-3) and not k2["within_seed_spread"]
    assert f["arms"]["k0"]["gain_diff_vs_k0"]["per_seed"] == [0.0, 0.0, 0.0]


def test_eval_curve_counts_training_time_up_to_each_evaluation():
    metrics = [{"step": -1, "eval/accuracy_mean": 0.1}, {"step": 0, "time/step": 1.0},
               {"step": 1, "time/step": 2.0, "eval/accuracy_mean": 0.3}, {"step": 2, "time/step": 0.5},
               {"step": 3, "time/step": 0.5, "eval/accuracy_mean": 0.4}]
    curve = A.eval_curve(C.Run(Path("."), metrics, [], 0.0))
    assert [(p["step"], p["seconds"], p["accuracy_mean"]) for p in curve] == [(-1, 0.0, 0.1), (1, 3.0, 0.3), (3, 4.0, 0.4)]


def test_async_bench_quick_runs_k0_k1_k2_on_both_recipes(ray_session, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "RUNS", tmp_path)     # run directories out of the repo
    monkeypatch.setattr(C, "RESULTS", tmp_path)  # --quick writes no results; in case it ever did
    out = A.main(["--quick"])
    assert set(out["runs"]) == {"quickstart", "chain"}
    for recipe, per_arm in out["runs"].items():
        assert list(per_arm) == ["k0", "k1", "k2"]
        for name, runs in per_arm.items():
            k = int(name[1])
            for r in runs:
                assert r["steps"] == 4 and r["s_per_step"] > 0 and 0 <= r["outside_gen_learn_frac"] <= 1
                assert r["lag_max"] == k and r["curriculum_lag_max"] == k   # steps >= 3: k2 reaches lag 2
                assert r["curve"][0]["step"] == -1 and r["final_step"] == 3
                assert r["gain"] == pytest.approx(r["final_accuracy_mean"] - r["before_rl"])
        f = out["figures"][recipe]
        assert f["arms"]["k0"]["s_per_step_ratio_vs_k0"]["mean"] == pytest.approx(1.0)
        assert f["seed_spread_k0_gain"] == 0.0   # one seed
    assert set(out["verdicts"]) == {"quickstart k1", "quickstart k2", "chain k1", "chain k2"}
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.png"))
