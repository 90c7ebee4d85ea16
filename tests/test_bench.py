"""The benches' own arithmetic: what they count must be right before their ratios mean anything."""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import gpu_learner_mfu as mfu  # noqa: E402


def test_first_reach_is_the_first_evaluation_at_or_above_the_target():
    from bench import curriculum as CB

    # (answers generated before that evaluation, learnable-mean accuracy)
    curve = [{"answers": a, "accuracy_mean": m} for a, m in
             [(0, 0.10), (2560, 0.12), (5120, 0.16), (7680, 0.14), (10240, 0.20)]]
    assert CB.first_reach(curve, 0.15, "answers") == 5120     # first crossing, the later dip does not matter
    assert CB.first_reach(curve, 0.20, "answers") == 10240    # "reaches" includes equality
    assert CB.first_reach(curve, 0.21, "answers") is None     # never: reported as not reached, never imputed


def test_mean_std_skips_missing_values():
    assert C.mean_std([1.0, None, 3.0]) == (2.0, 2 ** 0.5)   # stdev of {1, 3} = sqrt(((1-2)^2 + (3-2)^2) / 1)
    assert C.mean_std([4.0]) == (4.0, 0.0)


def test_qwen2_half_billion_shape_and_flops_formula():
    # Qwen2-0.5B: embeddings 151936*896 (tied) + 24 layers x [q 896*896+896, k,v 2*(896*128+128),
    # o 896*896, MLP 3*896*4864, 2 norms 2*896] + final norm 896 = 494,032,768 parameters.
    s = mfu.Shape()
    per_layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896
    assert 151936 * 896 + 24 * per_layer + 896 == 494_032_768
    with torch.device("meta"):  # shapes only, no memory
        model = mfu.Decoder(s)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
    six_n, attn = mfu.flops_per_token(s, 494_032_768, seq=2048)
    assert six_n == 6 * 494_032_768
    assert attn == 12 * 24 * 14 * 64 * 2048    # 12 * L * H * d_head * S


def test_mfu_script_runs_on_cpu():
    r = mfu.main(["--cpu-smoke"])
    assert r["tokens_per_s"] > 0 and r["params"] > 0 and "mfu" not in r   # no peak known for a CPU


def test_rlcurr_learner_bench_smoke_counts_one_pass_and_shared_prompts(tmp_path, monkeypatch):
    from bench import gpu_learner_rlcurr as rl

    monkeypatch.setattr(C, "RESULTS", tmp_path)  # a smoke run must write nothing
    r = rl.main(["--cpu-smoke"])
    assert list(tmp_path.iterdir()) == []
    # Smoke shape (mfu.SMOKE): D=64, L=2, H=4 heads of d_head=16, 2 kv heads (32 dims), MLP 128, V=1000, tied.
    # Per layer: q 64*64+64 = 4160, k+v 2*(64*32+32) = 4160, o 64*64 = 4096, MLP 3*64*128 = 24576,
    # 2 norms 128 -> 37120; N = 1000*64 + 2*37120 + 64 = 138304, N_body = N - V*D = 74304.
    # Batch: 2 prompts x 2 answers, prompt 8 + answer 16 (S = 24): model tokens 2*8 + 4*16 = 80
    # (each prompt once), answer tokens 64; attention 12*L*H*d_head*S = 12*2*4*16*24 = 36864 per token.
    # FLOPs/step = 80 * (6*74304 + 36864) + 64 * 6*1000*64 = 38,615,040 + 24,576,000 = 63,191,040.
    f = r["flops"]
    assert f["params"] == r["rlcurr"]["params"] == 138_304
    assert f["flops_per_step"] == 63_191_040 and f["flops_per_model_token"] == 63_191_040 / 80
    for seen in r["rlcurr"]["inputs_per_step"]:
        # old logprobs reused: one forward (with gradients) per micro-batch of one group, none without;
        # each group's answers follow one copy of its prompt: 2 x (8 + 2*16) = 80 tokens, no padding
        assert seen == {"real_tokens": 80, "slots": 80, "grad_forwards": 2, "no_grad_forwards": 0}
    figures = r["rlcurr"]["figures"]
    assert figures["batch_tokens_per_s"]["median"] > 0 and figures["through_model_tokens_per_s"]["median"] > 0
    assert r["plain_torch"]["figures"]["tokens_per_s"]["median"] > 0 and r["rlcurr"]["skipped_answers_frac"] == 0
    assert math.isfinite(r["rlcurr"]["loss"]) and r["rlcurr"]["grad_norm"] > 0
    assert r["mfu_ratio"] is None and r["memory_estimate"]["total_gib"] > 0   # no peak known for a CPU


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_constant_values():
    lo, hi = C.bootstrap_ci([0.5, 0.6, 0.7, 0.8, 0.9])
    assert 0.5 <= lo < 0.7 < hi <= 0.9           # mean 0.7 inside, never beyond the extremes
    assert C.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)  # exact in binary: no rounding in the means
    assert all(math.isnan(x) for x in C.bootstrap_ci([]))


from bench import curriculum as CB  # noqa: E402


def _run(seed, points):
    """A summarised run: (answers spent, learnable mean) per evaluation."""
    curve = [{"step": i, "answers": a, "tokens": 10 * a, "seconds": a / 100, "accuracy_mean": m, "accuracy": {}}
             for i, (a, m) in enumerate(points)]
    return {"seed": seed, "curve": curve, "final_accuracy_mean": points[-1][1],
            "spent": {k: curve[-1][k] for k in ("answers", "tokens", "seconds")}}


def test_ratio_is_answers_to_reach_uniforms_final_value_on_the_same_seed():
    uniform = [_run(0, [(0, 0.2), (100, 0.3), (200, 0.4)]), _run(1, [(0, 0.2), (100, 0.5), (200, 0.5)])]
    # seed 0: target 0.4, uniform reaches it at 200, the arm at 100 -> 0.5.
    # seed 1: target 0.5, uniform at 100; the arm never gets there -> its whole run (200) / 100 = 2.0, marked.
    arm = [_run(0, [(0, 0.2), (100, 0.45), (200, 0.3)]), _run(1, [(0, 0.2), (100, 0.4), (200, 0.45)])]
    out = CB.to_target({"uniform": uniform, "ucb": arm}, "answers")
    assert [s["ratio"] for s in out["ucb"]["per_seed"]] == [0.5, 2.0]
    assert [s["reached"] for s in out["ucb"]["per_seed"]] == [True, False]
    assert out["ucb"]["ratio_mean"] == 1.25
    assert [s["ratio"] for s in out["uniform"]["per_seed"]] == [1.0, 1.0]
    assert CB.to_target({"uniform": uniform, "ucb": arm}, "tokens")["ucb"]["per_seed"][0]["ratio"] == 0.5


def test_precondition_needs_every_in_band_rung_to_gain():
    def summ(start, final):
        return {"start_accuracy": start, "final_accuracy": final}
    start = {"len01": 0.95, "len02": 0.5, "len03": 0.2, "len04": 0.0}
    ok = CB.precondition([summ(start, {"len01": 0.95, "len02": 0.7, "len03": 0.4, "len04": 0.0})])
    assert ok["solved"] == ["len01"] and ok["in_band"] == ["len02", "len03"] and ok["out_of_reach"] == ["len04"]
    assert ok["passed"]
    bad = CB.precondition([summ(start, {"len01": 0.95, "len02": 0.7, "len03": 0.3, "len04": 0.0})])
    assert not bad["passed"]  # len03 gained only 0.10


def test_gap_at_equal_answers_reads_the_arm_at_uniforms_evaluations():
    uniform = [_run(0, [(0, 0.2), (100, 0.3), (200, 0.4)])]
    same_pace = [_run(0, [(0, 0.2), (100, 0.35), (200, 0.4)])]   # gaps +0.05 at 100, 0 at 200 -> 0.025
    # evaluated at 0 and 150 only: at 100 it reads 0.2 + 0.2 * 100 / 150 = 0.3333 (gap +0.0333);
    # 200 lies beyond its run and is not counted
    other_pace = [_run(0, [(0, 0.2), (150, 0.4)])]
    gaps = CB.gap_at_equal_answers({"uniform": uniform, "a": same_pace, "b": other_pace})
    assert gaps["uniform"]["per_seed"] == [0.0]
    assert abs(gaps["a"]["per_seed"][0] - 0.025) < 1e-12
    assert abs(gaps["b"]["per_seed"][0] - 0.1 / 3) < 1e-12


from bench import selective as SB  # noqa: E402


def test_zero_variance_groups_are_counted_up_to_each_evaluation():
    # evaluations before RL (step -1), after step 1 and after step 2; three steps of rollouts
    curve = [{"step": s} for s in (-1, 1, 2)]
    steps = [{"step": 0, "rollout/groups_generated": 24, "rollout/zero_variance_groups": 8},
             {"step": 1, "rollout/groups_generated": 20, "rollout/zero_variance_groups": 4},
             {"step": 2, "rollout/groups_generated": 16, "rollout/zero_variance_groups": 0}]
    assert SB.add_group_counts(curve, steps) == {"groups_generated": 60, "zero_variance_groups": 12}
    assert [p["zero_variance_groups"] for p in curve] == [0, 12, 12]     # 0; 8 + 4; 8 + 4 + 0
    assert [p["groups_generated"] for p in curve] == [0, 44, 60]         # 0; 24 + 20; 24 + 20 + 16
    unlogged = [{"step": -1}]
    assert SB.add_group_counts(unlogged, steps[:1] + [{"step": 1}]) is None and unlogged == [{"step": -1}]


def test_selective_ratios_are_against_dapo_on_the_same_seed():
    dapo = [_run(0, [(0, 0.2), (200, 0.3), (400, 0.4)]), _run(1, [(0, 0.2), (200, 0.5), (400, 0.5)])]
    greso = [_run(0, [(0, 0.2), (100, 0.4), (200, 0.4)]), _run(1, [(0, 0.2), (100, 0.3), (200, 0.3)])]
    # to target: seed 0 greso reaches 0.4 at 100, dapo at 400 -> 0.25; seed 1 never 0.5: 200 / 200 -> 1.0+
    out = SB.against_ref(CB.to_target, {"dapo": dapo, "dapo_greso": greso}, "answers")
    assert list(out) == ["dapo", "dapo_greso"]
    assert [s["ratio"] for s in out["dapo_greso"]["per_seed"]] == [0.25, 1.0]
    assert [s["reached"] for s in out["dapo_greso"]["per_seed"]] == [True, False]
    # whole run: 200 / 400 on both seeds
    assert SB.whole_run_ratios({"dapo": dapo, "dapo_greso": greso}, "answers")["dapo_greso"]["per_seed"] == [0.5, 0.5]


def test_goal_verdict_needs_the_whole_interval_on_one_side():
    assert SB.verdict(0.4, (0.3, 0.5), 0.5) == "met"          # upper end at the goal counts
    assert SB.verdict(0.6, (0.51, 0.7), 0.5) == "missed"
    assert SB.verdict(0.45, (0.3, 0.6), 0.5).startswith("undecided")
    assert SB.verdict(None, (float("nan"), float("nan")), 0.5).startswith("undecided")


def test_speed_trl_learner_flops_formula():
    from bench import speed_trl as S

    # 4 answers of 6 prompt + 10 answer tokens (S = 16) in 2 groups of n = 2 sharing a prompt:
    # 2 x 6 + 4 x 10 = 52 tokens through the model; half of them skipped: 26 trained tokens,
    # each 6 N + 12 L d S.
    f = S.learner_flops(n_params=1000, layers=2, hidden=8, answers=4, answer_tokens=40, prompt_len=6.0,
                        skipped_frac=0.5, n=2)
    assert f == 26 * (6 * 1000 + 12 * 2 * 8 * 16)


def test_speed_trl_quick_runs_both_workloads_side_by_side(ray_session, tmp_path, monkeypatch):
    from bench import speed_trl as S

    monkeypatch.setattr(C, "RUNS", tmp_path)  # run directories out of the repo
    # TRL and the asynchronous rlcurr only (its run goes through the synchronous machinery too):
    # every rlcurr run starts its own Ray actors, and the test must stay well under a minute and a half.
    out = S.main(["--quick", "--systems", "trl,rlcurr-hf-async"])
    assert set(out["workloads"]) == {"mixed", "raw"}
    assert all(p["flops"] > 0 for p in out["peak"].values())
    for name, w in out["workloads"].items():
        assert set(w["systems"]) == {"trl", "rlcurr-hf-async"}
        for system in ("rlcurr-hf-async",):
            assert w["ratios"][f"{system}/trl s_per_step"] > 0 and w["ratios"][f"{system}/trl s_per_1k_tokens"] > 0
            r = w["systems"][system]
            assert r["learner_s"] > 0 and 0 <= r["outside_gen_learn_frac"] <= 1
            # mixed: a quick warm-up leaves most groups all-wrong, the skip may leave nothing to train
            assert r["learner_flops"]["achieved_flops"] > 0 if name == "raw" else r["learner_flops"]["achieved_flops"] >= 0
        for r in w["systems"].values():
            assert 0 <= r["reward_mean"] <= 1 and 0 <= r["zero_var_frac"] <= 1
        assert set(w["goals"]) == {f"{s}/trl s_per_step" for s in S.GOALS[name] if s in w["systems"]}
        ci = w["ratios_ci"]["rlcurr-hf-async/trl s_per_step"]  # one round under --quick
        assert ci["per_seed"] == [w["ratios"]["rlcurr-hf-async/trl s_per_step"]] and len(w["rounds"]) == 1
    raw = out["workloads"]["raw"]["systems"]["rlcurr-hf-async"]
    assert raw["skipped_answers_frac"] == 0          # raw: the skip is off
    assert raw["overrides"] == ["algo.skip_zero_advantage=false", "trainer.max_staleness=1"]
    assert out["workloads"]["mixed"]["systems"]["rlcurr-hf-async"]["overrides"] == ["trainer.max_staleness=1"]


def test_realistic_counts_the_profile_and_leaves_hard_dead_out_of_the_mean():
    """bench/realistic.py's reading of a run: the profile's answers (step -1 `profile/answers`)
    are spent before step 0, so every point of the curve carries them; the learnable mean is over
    the skills only, the hard-dead eval set is kept apart."""
    from bench import realistic as R

    def ev(step, rev, inc, dead):
        return {"step": step, "eval/accuracy/rev": rev, "eval/accuracy/inc": inc, "eval/accuracy/hard_dead": dead,
                "eval/accuracy_mean": (rev + inc) / 2}

    def st(step):
        return {"step": step, "rollout/answers_generated": 16, "rollout/tokens_generated": 50, "time/step": 1.0}

    # (an evaluation step's line holds its training metrics and its eval/ keys)
    metrics = [{**ev(-1, 0.2, 0.4, 0.0), "profile/answers": 100}, st(0), {**st(1), **ev(1, 0.5, 0.7, 0.1)}]
    run = C.Run(Path("."), metrics, [], 2.0, info={"seed": 3})
    s = R.summarise_run(run)
    # before RL: 0 training answers + 100 profile answers; after step 1: 2 x 16 + 100 = 132
    assert [p["answers"] for p in s["curve"]] == [100, 132]
    assert [p["tokens"] for p in s["curve"]] == [0, 100]
    assert s["final_accuracy_mean"] == (0.5 + 0.7) / 2 and set(s["final_accuracy"]) == {"rev", "inc"}
    assert s["hard_dead"] == [0.0, 0.1] and s["profile_answers"] == 100


def test_realistic_pass_rate_correlation_by_hand():
    """bench/realistic.py's persistence figure. Profiles a = (0, .5, 1, .5), b = (0, .25, 1, .75):
    means .5 and .5, deviations (-.5, 0, .5, 0) and (-.5, -.25, .5, .25): cov sum .5, variance sums
    .5 and .625, r = .5 / sqrt(.5 * .625) = 0.894. Within groups {u0, u1} and {u2, u3} the group
    means are subtracted first: a -> (-.25, .25, .25, -.25), b -> (-.125, .125, .125, -.125), r = 1;
    and a swap of b inside each group gives r = -1."""
    import pytest

    from bench import realistic as R

    uids = ["u0", "u1", "u2", "u3"]
    a = dict(zip(uids, [0, 0.5, 1, 0.5]))
    b = dict(zip(uids, [0, 0.25, 1, 0.75]))
    assert R.correlation(a, b, uids) == pytest.approx(0.5 / (0.5 * 0.625) ** 0.5)
    cell = {"u0": ("rev", 4), "u1": ("rev", 4), "u2": ("rev", 5), "u3": ("rev", 5)}
    assert R.correlation(a, b, uids, cell) == pytest.approx(1.0)
    swapped = dict(zip(uids, [0.25, 0, 0.75, 1]))
    assert R.correlation(a, swapped, uids, cell) == pytest.approx(-1.0)
