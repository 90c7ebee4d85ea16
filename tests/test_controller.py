"""CurriculumController: planning, budgets, config errors, records, exact resume."""

import json
import math

import numpy as np
import pytest

from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.samplers import sklearn_available
from rlcurr.errors import UserError
from rlcurr.types import Completion, Prompt, ScoredGroup

NAMES = ["easy", "mid", "hard"]


def pools(size=10):
    return {d: [Prompt(uid=f"{d}/{i}", distribution=d, question=f"{d}{i}", answer="1", hint="h")
                for i in range(size)] for d in NAMES}


def make(cfg=None, seed=0, size=10, **kw):
    args = dict(prompts_per_step=6, n=4, temperature=0.9, top_p=0.95, max_tokens=32, total_steps=11, seed=seed)
    args.update(kw)
    return CurriculumController(cfg or CurriculumConfig(), pools(size), **args)


SUCCESS = {"easy": 0.95, "mid": 0.5, "hard": 0.0}


def groups_for(plan, rng, with_adv=True):
    c = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
    out = []
    for item in plan.items:
        r = (rng.random(plan.n) < SUCCESS[item.prompt.distribution]).astype(float)
        adv = ((r - r.mean()) / (r.std() + 1e-6)).tolist() if with_adv else None
        out.append(ScoredGroup(prompt=item.prompt, prompt_ids=[1], completions=[c] * plan.n, rewards=r.tolist(),
                               reward_parts={}, max_tokens=item.max_tokens, advantages=adv))
    return out


def run(ctrl, steps, start=0, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(start, start + steps):
        plan = ctrl.plan(t)
        ctrl.observe(t, groups_for(plan, rng))


def test_plan_shape_and_sampling_params():
    plan = make().plan(0)
    assert plan.step == 0 and plan.n == 4 and plan.temperature == 0.9 and plan.top_p == 0.95
    assert len(plan.items) == 6
    assert all(it.max_tokens == 32 for it in plan.items)  # no budget: rollout max_tokens
    assert all(it.prompt.distribution in NAMES for it in plan.items)
    assert len(make().plan(0, num_prompts=3).items) == 3


def test_budget_sets_max_tokens_per_distribution():
    cfg = CurriculumConfig(budget={"shape": "linear", "start": 100, "end": 50, "slack": 8,
                                   "per_distribution": {"hard": {"start": 200, "end": 100}}})
    ctrl = make(cfg, prompts_per_step=60)
    plan = ctrl.plan(5)  # total_steps 11 -> progress 0.5
    for it in plan.items:
        assert it.max_tokens == (150 if it.prompt.distribution == "hard" else 75) + 8
    rec = ctrl.record(5)
    assert rec["budget"] == {"default": 75, "slack": 8, "per_distribution": {"easy": 75, "mid": 75, "hard": 150}}


def test_weights_sampler_follows_weights():
    ctrl = make(CurriculumConfig(sampler="weights", weights={"easy": 1.0, "hard": 3.0}), prompts_per_step=400)
    dists = [it.prompt.distribution for it in ctrl.plan(0).items]
    assert dists.count("mid") == 0
    assert abs(dists.count("hard") / 400 - 0.75) < 0.07


@pytest.mark.parametrize("cfg, match", [
    (dict(sampler="weights", weights={"easy": 1.0, "nope": 1.0}), r"curriculum.weights .*'nope'.*\['easy', 'mid', 'hard'\]"),
    (dict(budget={"per_distribution": {"zzz": {"start": 9, "end": 8}}}), "curriculum.budget.per_distribution"),
    (dict(min_prob=0.4), r"curriculum.min_prob=0.4 .* 3 distributions"),
    (dict(sampler="alp_gmm", alp_gmm={"params": {"easy": [0.0]}}), r"curriculum.alp_gmm.params .*missing \['mid', 'hard'\]"),
])
def test_config_errors_name_the_key_and_the_valid_names(cfg, match):
    with pytest.raises(UserError, match=match):
        make(CurriculumConfig(**cfg))


def test_weights_sampler_requires_weights():
    with pytest.raises(ValueError, match="curriculum.weights"):
        CurriculumConfig(sampler="weights")


def test_empty_pool_is_a_user_error():
    with pytest.raises(UserError, match="no training prompts"):
        CurriculumController(CurriculumConfig(), {"a": []}, prompts_per_step=1, n=1, temperature=1, top_p=1,
                             max_tokens=1, total_steps=1, seed=0)


def test_sec_takes_prompts_without_replacement():
    ctrl = make(CurriculumConfig(sampler="sec"), size=5, prompts_per_step=3)
    seen = {d: [] for d in NAMES}
    for t in range(20):
        for it in ctrl.plan(t).items:
            seen[it.prompt.distribution].append(it.prompt.uid)
    for uids in seen.values():
        for k in range(0, len(uids) - 4, 5):  # every block of 5 consecutive picks is one full pass
            assert len(set(uids[k:k + 5])) == 5


def test_observe_ignores_off_policy_and_fills_missing_advantages():
    ctrl = make(CurriculumConfig(sampler="ucb"))
    plan = ctrl.plan(0)
    rng = np.random.default_rng(0)
    groups = groups_for(plan, rng, with_adv=False)
    hinted = groups_for(plan, rng)[0]
    hinted.off_policy = True
    ctrl.observe(0, groups + [hinted])
    assert sum(ctrl.sampler.count.values()) == 6 * 4  # the hinted group is not counted
    for g in groups:  # GRPO fallback: |A| of a mixed 0/1 group of 4 averages 2 sqrt(p (1 - p)) > 0
        if len(set(g.rewards)) > 1:
            assert ctrl.sampler.mu(g.prompt.distribution) > 0
    with pytest.raises(RuntimeError, match="twice"):
        ctrl.observe(0, groups)


def test_record_is_json_and_complete():
    cfg = CurriculumConfig(sampler="ucb", guidance={}, dynamic_sampling={}, d3s={}, budget={}, learnability={})
    ctrl = make(cfg)
    plan = ctrl.plan(0)
    groups = groups_for(plan, np.random.default_rng(0))
    ctrl.guidance.select(groups)
    ctrl.observe_filter(groups[:4], groups[4:])
    ctrl.observe(0, groups)
    rec = json.loads(json.dumps(ctrl.record(0)))
    assert rec["step"] == 0 and rec["sampler"] == "ucb"
    assert set(rec["distributions"]) == set(NAMES)
    for d in NAMES:
        assert set(rec["distributions"][d]) >= {"prob", "score", "count", "mean_reward", "mean_abs_adv", "planned"}
    assert sum(v["planned"] for v in rec["distributions"].values()) == 6
    assert sum(v["prob"] for v in rec["distributions"].values()) == pytest.approx(1.0)
    assert rec["filter"]["rounds"] == 1 and sum(rec["filter"]["dropped"].values()) == 2
    assert rec["hints"]["step"]["easy"]["groups"] + rec["hints"]["step"]["mid"]["groups"] + \
        rec["hints"]["step"]["hard"]["groups"] == 6
    assert rec["d3s"] == {"n": 0.5, "k": 0.5}
    assert rec["budget"]["default"] == 256
    # learnability: the 6 planned prompts were picked by it, and all 6 observed groups have posteriors
    learn = rec["learnability"]["distributions"]
    assert rec["learnability"]["rule"] == "mopps" and sum(v["picked"] for v in learn.values()) == 6
    assert sum(v["tracked"] for v in learn.values()) == len({g.prompt.uid for g in groups})
    # a new step resets the per-step parts
    ctrl.plan(1)
    assert ctrl.record(1)["filter"]["rounds"] == 0


def test_helpers_for_the_trainer():
    cfg = CurriculumConfig(d3s={"n_init": 0.5, "n_final": 1.0, "k_init": 0.2, "k_final": 1.0},
                           ead={}, dynamic_sampling={"max_rounds": 3})
    ctrl = make(cfg)
    assert ctrl.d3s_fractions(5) == pytest.approx((0.75, 0.6))  # progress 5 / 10
    assert ctrl.temperatures(0, 11)[-1] == pytest.approx(2.2 - np.exp(10 / 500))
    assert ctrl.max_rounds == 3
    plain = make()
    assert plain.d3s_fractions(5) is None and plain.temperatures(0, 5) is None and plain.max_rounds is None
    assert plain.budget(3) is None


@pytest.mark.parametrize("sampler", ["uniform", "ucb", "sec", pytest.param("alp_gmm", marks=pytest.mark.skipif(
    not sklearn_available(), reason="ALP-GMM fits need scikit-learn"))])
def test_state_dict_round_trip_gives_the_same_plans(sampler):
    cfg = CurriculumConfig(sampler=sampler, alp_gmm={"fit_every": 10, "max_components": 3},
                           guidance={}, dynamic_sampling={})
    a = make(cfg, seed=3)
    run(a, 5)
    sd = json.loads(json.dumps(a.state_dict()))  # through JSON, as a checkpoint would
    b = make(cfg, seed=999)  # different seed: everything must come from the state
    b.load_state_dict(sd)
    assert b.record(4) == a.record(4)
    for t in range(5, 9):
        pa, pb = a.plan(t), b.plan(t)
        assert pa == pb
        ga = groups_for(pa, np.random.default_rng(t))
        a.observe(t, ga)
        b.observe(t, groups_for(pb, np.random.default_rng(t)))
        assert a.record(t) == b.record(t)


def test_resume_rejects_other_distributions_or_sampler():
    a = make(CurriculumConfig(sampler="ucb"))
    sd = a.state_dict()
    with pytest.raises(UserError, match="sampler"):
        make(CurriculumConfig(sampler="sec")).load_state_dict(sd)
    other = CurriculumController(CurriculumConfig(sampler="ucb"), {"x": pools()["easy"]}, prompts_per_step=1, n=1,
                                 temperature=1, top_p=1, max_tokens=1, total_steps=1, seed=0)
    with pytest.raises(UserError, match="distributions"):
        other.load_state_dict(sd)


def test_same_seed_same_plans():
    assert make(CurriculumConfig(sampler="sec"), seed=7).plan(0) == make(CurriculumConfig(sampler="sec"), seed=7).plan(0)


def test_sec_q_uses_grpo_abs_advantage_whatever_the_estimator():
    """SEC (docs/curriculum.md, "SEC") scores an arm by the std-normalised GRPO mean |A|, so tau keeps its meaning
    when Dr.GRPO (no std division) trains."""
    from rlcurr.algos.advantages import group_advantages
    from rlcurr.curriculum.config import SECConfig

    ctrl = make(CurriculumConfig(sampler="sec", sec=SECConfig(alpha=0.5, tau=1.0)))
    p = ctrl.prompts["easy"][0]
    c = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
    r = [1.0, 0.0, 0.0, 0.0]
    # Dr.GRPO: A = r - 0.25 = [0.75, -0.25, -0.25, -0.25], mean |A| = 0.375 (what the trainer stores)
    adv = group_advantages("drgrpo", r)
    assert np.mean(np.abs(adv)) == pytest.approx(0.375)
    g = ScoredGroup(prompt=p, prompt_ids=[1], completions=[c] * 4, rewards=r, reward_parts={}, max_tokens=4,
                    advantages=adv)
    ctrl.observe(0, [g])
    # GRPO: std = sqrt(0.25 * 0.75) = 0.4330127; mean |A| = (0.75 + 3 * 0.25) / 4 / (0.4330127 + 1e-6)
    #     = 0.375 / 0.4330137 = 0.8660234 (= 2 sqrt(p (1 - p)) up to eps); Q = 0.5 * 0.8660234
    assert ctrl.sampler.q["easy"] == pytest.approx(0.5 * 0.375 / (math.sqrt(0.1875) + 1e-6))
    assert ctrl.sampler.q["easy"] == pytest.approx(0.4330117, abs=1e-6)
    assert ctrl.sampler.q["mid"] == 0.0 and ctrl.sampler.q["hard"] == 0.0


def test_observe_feeds_alp_gmm_in_arrival_order(monkeypatch):
    import rlcurr.curriculum.samplers as samplers

    monkeypatch.setattr(samplers, "sklearn_available", lambda: True)  # fit_every 100: no fit happens
    ctrl = make(CurriculumConfig(sampler="alp_gmm", alp_gmm={"fit_every": 100}))
    c = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
    # points: easy 0, mid 0.5, hard 1 (index scaled to [0, 1]); groups arrive hard, easy, hard, mid
    order = ["hard", "easy", "hard", "mid"]
    groups = [ScoredGroup(prompt=ctrl.prompts[d][0], prompt_ids=[1], completions=[c] * 2, rewards=[1.0, 0.0],
                          reward_parts={}, max_tokens=4) for d in order]
    ctrl.observe(0, groups)
    assert [row[0] for row in ctrl.sampler.teacher.recent] == [1.0, 0.0, 1.0, 0.5]
