"""Distribution samplers: hand-derived UCB (DUMP) and SEC numbers, the floor, ALP-GMM pieces
(the GaussianMixture fits need scikit-learn and are skipped without it)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcurr.curriculum.config import ALPGMMConfig, SECConfig, UCBConfig
from rlcurr.curriculum.samplers import (
    SEC,
    UCB,
    ALPGMMSampler,
    ALPGMMTeacher,
    DistStats,
    FixedWeights,
    Uniform,
    apply_floor,
    sklearn_available,
)

needs_sklearn = pytest.mark.skipif(not sklearn_available(), reason="ALP-GMM fits need scikit-learn (pyproject dependency)")


def stats(*groups_adv, rewards=None):
    """DistStats from per-group advantage lists (rewards default to 0s, or given per group)."""
    rewards = rewards or [[0.0] * len(a) for a in groups_adv]
    return DistStats(rewards_G=[list(r) for r in rewards], advantages_G=[list(a) for a in groups_adv])


# ------------------------------------------------- UCB (docs/curriculum.md, "UCB sampling (DUMP)")


def test_ucb_starts_uniform():
    s = UCB(["a", "b", "c"])
    # nothing observed: mu_j = 0, n_j = 0, N = 0 -> UCB_j = 0 + c sqrt(2 ln 1 / 1) = 0 for all j
    assert s.probabilities() == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_ucb_hand_derived_scores_and_softmax():
    s = UCB(["A", "B"], UCBConfig(c=1.0, tau=0.1))
    # one group each: A's advantages [1, -1] -> window |a| = [1, 1]; B's [0, 0] -> window [0, 0]
    s.observe({"A": stats([1.0, -1.0]), "B": stats([0.0, 0.0])})
    # mu_A = 1, mu_B = 0; n_A = n_B = 2, N = 4
    # bonus = sqrt(2 ln(5) / 3) = sqrt(2 * 1.6094379 / 3) = sqrt(1.0729586) = 1.0358371
    bonus = math.sqrt(2 * math.log(5) / 3)
    assert bonus == pytest.approx(1.0358371, abs=1e-7)
    assert s.scores()["A"] == pytest.approx(1 + bonus)
    assert s.scores()["B"] == pytest.approx(bonus)
    # softmax(UCB / 0.1): the scores differ by exactly 1 -> p_A = 1 / (1 + e^-10) = 0.9999546
    p = s.probabilities()
    assert p["A"] == pytest.approx(1 / (1 + math.exp(-10)))
    assert p["A"] == pytest.approx(0.9999546, abs=1e-7)
    assert p["A"] + p["B"] == pytest.approx(1.0)
    rep = s.report()
    assert rep["A"]["count"] == 2 and rep["A"]["mean_abs_adv"] == 1.0 and rep["B"]["mean_abs_adv"] == 0.0


def test_ucb_exploration_bonus_favours_rarely_drawn():
    s = UCB(["A", "B"], UCBConfig(c=1.0, tau=1.0))
    # equal mean |a| = 0.5 but A seen 8 answers, B 2: N = 10
    s.observe({"A": stats([0.5] * 8), "B": stats([0.5, -0.5])})
    # UCB_A = 0.5 + sqrt(2 ln 11 / 9) = 0.5 + 0.7304; UCB_B = 0.5 + sqrt(2 ln 11 / 3) = 0.5 + 1.2651
    assert s.scores()["A"] == pytest.approx(0.5 + math.sqrt(2 * math.log(11) / 9))
    assert s.scores()["B"] == pytest.approx(0.5 + math.sqrt(2 * math.log(11) / 3))
    assert s.probabilities()["B"] > s.probabilities()["A"]


def test_ucb_window_is_fifo_and_count_is_not_windowed():
    s = UCB(["A"], UCBConfig(window=3))
    s.observe({"A": stats([1.0, 1.0])})
    s.observe({"A": stats([0.0, 0.0, -3.0])})
    # window keeps the last 3 |a|: [0, 0, 3] -> mu = 1; n_A counts all 5 answers
    assert list(s.window["A"]) == [0.0, 0.0, 3.0]
    assert s.mu("A") == pytest.approx(1.0)
    assert s.count["A"] == 5


# ------------------------------------------------- SEC (docs/curriculum.md, "SEC")


def test_sec_td0_with_decay_of_arms_not_drawn():
    s = SEC(["A", "B"], SECConfig(alpha=0.5, tau=1.0))
    assert s.probabilities() == pytest.approx({"A": 0.5, "B": 0.5})  # Q starts at 0
    # step 1: A drawn, two groups with rewards [1, 0]: GRPO A = +-0.5 / (0.5 + 1e-6) -> r_A = 1 / (1 + 2e-6);
    # B not drawn, r_B = 0. (The advantages passed in are ignored: SEC uses GRPO |A| of the rewards.)
    s.observe({"A": stats([9.0, -9.0], [9.0, -9.0], rewards=[[1.0, 0.0], [0.0, 1.0]])})
    # Q_A = 0.5 * 1 + 0.5 * 0 = 0.5; Q_B = 0.5 * 0 + 0.5 * 0 = 0
    assert s.q == pytest.approx({"A": 0.5, "B": 0.0}, rel=1e-5)  # eps: 0.5 / (1 + 2e-6)
    # step 2: B drawn with rewards [0.9, 0.1]: GRPO |A| = 0.4 / (0.4 + 1e-6) = 1 - 2.5e-6; A not drawn: its Q decays
    s.observe({"B": stats([0.8, -0.8], rewards=[[0.9, 0.1]])})
    # Q_A = 0.5 * 0 + 0.5 * 0.5 = 0.25; Q_B = 0.5 * 1 + 0.5 * 0 = 0.5
    assert s.q == pytest.approx({"A": 0.25, "B": 0.5}, rel=1e-5)
    # p = softmax([0.25, 0.5] / 1): p_A = 1 / (1 + e^0.25) = 1 / 2.2840254 = 0.4378235
    assert s.probabilities()["A"] == pytest.approx(1 / (1 + math.exp(0.25)), abs=1e-6)
    assert s.probabilities()["A"] == pytest.approx(0.4378235, abs=1e-6)
    # step 3: B drawn, rewards all equal: |A| = 0 whatever advantages came in
    s.observe({"B": stats([0.8, -0.8], rewards=[[1.0, 1.0]])})
    # Q_A = 0.5 * 0.25 = 0.125; Q_B = 0.5 * 0 + 0.5 * 0.5 = 0.25
    assert s.q == pytest.approx({"A": 0.125, "B": 0.25}, rel=1e-5)
    assert s.without_replacement


# ----------------------------------------------------------------------------- floor, weights, draws


def test_floor_formula_and_limit():
    s = UCB(["A", "B"], UCBConfig(tau=0.1), min_prob=0.1)
    s.observe({"A": stats([1.0, -1.0]), "B": stats([0.0, 0.0])})
    raw_A = 1 / (1 + math.exp(-10))
    # p' = floor + (1 - K floor) p = 0.1 + 0.8 p
    assert s.probabilities()["A"] == pytest.approx(0.1 + 0.8 * raw_A)
    assert s.probabilities()["B"] == pytest.approx(0.1 + 0.8 * (1 - raw_A))
    with pytest.raises(ValueError):
        Uniform(["a", "b", "c"], min_prob=0.4)  # 3 * 0.4 > 1
    assert apply_floor(np.array([1.0, 0.0]), 0.5).tolist() == [0.5, 0.5]  # K floor = 1: uniform


def test_fixed_weights():
    s = FixedWeights(["a", "b", "c"], {"a": 3.0, "b": 1.0})
    assert s.probabilities() == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})
    with pytest.raises(KeyError):
        FixedWeights(["a"], {"zzz": 1.0})


def test_draw_follows_probabilities():
    s = FixedWeights(["a", "b"], {"a": 0.8, "b": 0.2})
    names = s.draw(5000, np.random.default_rng(0))
    assert abs(names.count("a") / 5000 - 0.8) < 0.03


def test_report_mean_reward_is_last_step_only():
    s = Uniform(["a", "b"])
    s.observe({"a": stats([1.0, -1.0], rewards=[[1.0, 0.0]])})
    rep = s.report()
    assert rep["a"]["mean_reward"] == 0.5 and rep["b"]["mean_reward"] is None
    assert rep["a"]["count"] == 2 and rep["a"]["step_count"] == 2
    s.observe({"b": stats([0.0])})
    rep = s.report()
    assert rep["a"]["mean_reward"] is None and rep["a"]["count"] == 2 and rep["a"]["step_count"] == 0


@pytest.mark.parametrize("make", [
    lambda: Uniform(["a", "b"]),
    lambda: FixedWeights(["a", "b"], {"a": 1.0, "b": 2.0}),
    lambda: UCB(["a", "b"], UCBConfig(window=4)),
    lambda: SEC(["a", "b"]),
    pytest.param(lambda: ALPGMMSampler(["a", "b"], ALPGMMConfig(fit_every=10, max_components=3), seed=1),
                 marks=needs_sklearn),
])
def test_state_dict_json_round_trip(make):
    s = make()
    rng = np.random.default_rng(0)
    for _ in range(6):
        s.observe({"a": stats([1.0, -1.0], rewards=[[float(rng.integers(2)), 0.0]]), "b": stats([0.3, -0.3])})
    sd = json.loads(json.dumps(s.state_dict()))
    t = make()
    t.load_state_dict(sd)
    assert t.probabilities() == s.probabilities()
    assert t.report() == s.report()
    s.observe({"a": stats([0.5, -0.5], rewards=[[1.0, 0.0]])})
    t.observe({"a": stats([0.5, -0.5], rewards=[[1.0, 0.0]])})
    assert t.probabilities() == s.probabilities()


# ------------------------------------------------- ALP-GMM (docs/curriculum.md, "ALP-GMM")


def test_alp_is_abs_reward_difference_to_nearest_previous_task():
    t = ALPGMMTeacher(ALPGMMConfig(fit_every=100))
    # the first 6 episodes get ALP 0 (authors: ALP only once more than 5 are stored)
    alps = [t.update(np.array([0.0]), r) for r in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]
    assert alps == [0.0] * 6
    # a new task at 0.9: nearest previous task is 0.0 with latest reward 0.6 -> |0.1 - 0.6| = 0.5
    assert t.update(np.array([0.9]), 0.1) == pytest.approx(0.5)
    # task 0.8: nearest is now 0.9 (reward 0.1) -> |0.7 - 0.1| = 0.6
    assert t.update(np.array([0.8]), 0.7) == pytest.approx(0.6)


def test_alp_gmm_feeds_episodes_in_arrival_order(monkeypatch):
    """Groups reach the teacher in the order they were generated, not grouped by distribution."""
    import rlcurr.curriculum.samplers as samplers

    monkeypatch.setattr(samplers, "sklearn_available", lambda: True)  # no fit happens below
    s = ALPGMMSampler(["a", "b"], ALPGMMConfig(fit_every=100))  # points a = 0, b = 1; no fit yet
    # arrivals: a (mean 1), b (mean 0), a (mean 0.5), b (mean 1)
    s.observe({"a": DistStats(rewards_G=[[1.0, 1.0], [0.5, 0.5]], advantages_G=[[0, 0], [0, 0]], arrival_G=[0, 2]),
               "b": DistStats(rewards_G=[[0.0, 0.0], [1.0, 1.0]], advantages_G=[[0, 0], [0, 0]], arrival_G=[1, 3])})
    assert [row[0] for row in s.teacher.recent] == [0.0, 1.0, 0.0, 1.0]
    assert s.teacher.memory_rewards == [0.5, 1.0]  # latest reward per task point


@needs_sklearn
def test_teacher_fit_picks_components_by_aic():
    # two tight clusters in [task, ALP]: 100 episodes at task 0 with ALP ~0, 100 at task 1 with ALP ~0.5
    t = ALPGMMTeacher(ALPGMMConfig(fit_every=200, max_components=4), seed=1)
    rng = np.random.default_rng(0)
    for i in range(200):
        x = float(i % 2)
        t.recent.append([x + rng.normal(0, 0.01), 0.5 * x + rng.normal(0, 0.01)])
    t.fit()
    assert len(t.gmm.weights) == 2  # AIC: 2 components beat 3 and 4 on two clusters
    means = sorted(t.gmm.means.tolist())
    assert means[0] == pytest.approx([0, 0], abs=0.01) and means[1] == pytest.approx([1, 0.5], abs=0.01)
    # Gaussian choice by mean ALP: ~0 vs ~0.5 -> nearly all on the task-1 Gaussian
    assert t.gaussian_choice_probs().max() > 0.95
    sd = json.loads(json.dumps(t.state_dict()))  # JSON-able, and exact on reload
    u = ALPGMMTeacher(ALPGMMConfig(fit_every=200, max_components=4), seed=1)
    u.load_state_dict(sd)
    pts = np.array([[0.0], [1.0]])
    assert u.discrete_probabilities(pts).tolist() == t.discrete_probabilities(pts).tolist()


@needs_sklearn
def test_alp_gmm_sampler_prefers_the_distribution_with_learning_progress():
    s = ALPGMMSampler(["flat", "moving"], ALPGMMConfig(fit_every=40, explore=0.2), seed=0)
    assert s.probabilities() == pytest.approx({"flat": 0.5, "moving": 0.5})  # bootstrapping: uniform
    rng = np.random.default_rng(0)
    for _ in range(20):
        # "flat": every group has mean reward 0 -> ALP 0; "moving": group means jump around -> ALP > 0
        s.observe({"flat": stats([0.0, 0.0], [0.0, 0.0]),
                   "moving": stats([0.0, 0.0], [0.0, 0.0],
                                   rewards=[[float(rng.integers(2))] * 2, [float(rng.integers(2))] * 2])})
    assert s.teacher.gmm is not None
    p = s.probabilities()
    assert p["moving"] > 0.8 and p["flat"] >= 0.1  # explore keeps >= 0.2 / 2 on each
    assert s.scores()["flat"] == 0.0 and s.scores()["moving"] > 0.2


# ----------------------------------------------------------------------------- properties


windows = st.lists(st.lists(st.floats(-5, 5), min_size=0, max_size=20), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(windows, st.floats(0.0, 1.0), st.floats(0.01, 5.0), st.floats(0.0, 3.0))
def test_ucb_probabilities_sum_to_one_and_respect_floor(advs, floor_share, tau, c):
    names = [f"d{i}" for i in range(len(advs))]
    floor = floor_share / len(names)  # K floor <= 1
    s = UCB(names, UCBConfig(c=c, tau=tau), min_prob=floor)
    s.observe({n: stats(a) for n, a in zip(names, advs) if a})
    p = np.array(list(s.probabilities().values()))
    assert p.sum() == pytest.approx(1.0)
    assert (p >= floor - 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0, 3), min_size=1, max_size=5), min_size=2, max_size=6),
       st.floats(0.0, 1.0), st.floats(0.01, 1.0), st.floats(0.05, 5.0))
def test_sec_probabilities_sum_to_one_and_respect_floor(steps, floor_share, alpha, tau):
    names = ["a", "b"]
    floor = floor_share / 2
    s = SEC(names, SECConfig(alpha=alpha, tau=tau), min_prob=floor)
    for i, a in enumerate(steps):
        s.observe({names[i % 2]: stats(a)})
        p = np.array(list(s.probabilities().values()))
        assert p.sum() == pytest.approx(1.0)
        assert (p >= floor - 1e-12).all()
