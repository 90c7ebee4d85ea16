"""Behaviour of the samplers against the simulated student (no model, milliseconds per run)."""

import json

import numpy as np
import pytest

from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.curriculum.samplers import sklearn_available
from rlcurr.curriculum.student import SimulatedStudent, default_student, simulate

# A student that does not learn (lr = 0) keeps its success rates, so the ideal target is fixed:
# mean |A| of a GRPO group is 2 sqrt(p (1 - p)) -> ~0 for "mastered" and "unlearnable", largest
# for "coin" (p = 0.5) and "mid" (p = 0.3).
STATIC = SimulatedStudent(fixed={"mastered": 0.999, "coin": 0.5, "mid": 0.3, "unlearnable": 0.0}, lr=0.0)


def mean_probs(records, skip=20):
    names = records[0]["distributions"]
    return {d: float(np.mean([r["distributions"][d]["prob"] for r in records[skip:]])) for d in names}


@pytest.mark.parametrize("cfg", [
    CurriculumConfig(sampler="ucb"),
    CurriculumConfig(sampler="sec"),
    CurriculumConfig(sampler="sec", sec={"alpha": 0.5, "tau": 0.2}),  # the paper's 2-D puzzle setting
    pytest.param(CurriculumConfig(sampler="alp_gmm", alp_gmm={"fit_every": 128}),
                 marks=pytest.mark.skipif(not sklearn_available(), reason="ALP-GMM fits need scikit-learn")),
])
def test_adaptive_samplers_move_away_from_mastered_and_unlearnable(cfg):
    recs = simulate(cfg, STATIC, steps=120, prompts_per_step=32, n=8, seed=0)
    p = mean_probs(recs)
    for useful in ("coin", "mid"):
        for useless in ("mastered", "unlearnable"):
            assert p[useful] > p[useless], p
    assert p["mastered"] < 0.25 and p["unlearnable"] < 0.25  # below uniform (1 / 4)
    # the planned batches follow the probabilities
    planned = {d: sum(r["distributions"][d]["planned"] for r in recs[20:]) for d in p}
    assert planned["coin"] > planned["mastered"] and planned["coin"] > planned["unlearnable"]


def test_min_prob_floor_holds_at_every_step_and_probabilities_sum_to_one():
    floor = 0.05
    for sampler in ("ucb", "sec") + (("alp_gmm",) if sklearn_available() else ()):
        cfg = CurriculumConfig(sampler=sampler, min_prob=floor, alp_gmm={"fit_every": 64, "max_components": 4})
        recs = simulate(cfg, STATIC, steps=60, prompts_per_step=32, n=8, seed=1)
        for r in recs:
            probs = [v["prob"] for v in r["distributions"].values()]
            assert sum(probs) == pytest.approx(1.0)
            assert min(probs) >= floor - 1e-12
        # the floor binds: UCB's tau = 0.1 would otherwise push the useless ones far below it
        if sampler == "ucb":
            assert min(recs[-1]["distributions"]["mastered"]["prob"], recs[-1]["distributions"]["unlearnable"]["prob"]) \
                == pytest.approx(floor, abs=1e-3)


def test_ucb_learns_the_default_student_faster_than_uniform():
    # the learnable distributions only improve when trained at mixed outcomes; UCB spends the
    # batch there, uniform wastes 2/5 of it on mastered + unlearnable
    area = {}
    for sampler in ("uniform", "ucb"):
        runs = [simulate(CurriculumConfig(sampler=sampler), default_student(), steps=150, seed=s) for s in (0, 1)]
        area[sampler] = np.mean([np.mean([r["mean_success"] for r in recs]) for recs in runs])
    assert area["ucb"] > area["uniform"] + 0.02, area


def test_simulate_records_are_json_and_leave_the_student_alone():
    student = default_student()
    before = dict(student.skills)
    recs = simulate(CurriculumConfig(sampler="sec"), student, steps=5, prompts_per_step=4, n=2, seed=0)
    assert student.skills == before
    assert len(recs) == 5 and [r["step"] for r in recs] == list(range(5))
    json.dumps(recs)
    assert set(recs[0]["student"]) == {"mastered", "easy", "medium", "hard", "unlearnable"}
    assert recs[0]["student"]["unlearnable"] == 0.0
