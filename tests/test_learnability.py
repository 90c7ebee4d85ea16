"""Learnability prompt sampler (MoPPS / LILO on Beta posteriors): updates, selection, composition
with distribution samplers, DAPO refills and GRESO, seed_prior, record / inspect, exact resume."""

import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rlcurr.curriculum.config import CurriculumConfig, LearnabilityConfig
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.learnability import Learnability
from rlcurr.types import Completion, Prompt, ScoredGroup

C = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")


def P(uid, dist="a"):
    return Prompt(uid=uid, distribution=dist, question=uid, answer="1")


def G(prompt, rewards, correct=None):
    return ScoredGroup(prompt=prompt, prompt_ids=[1], completions=[C] * len(rewards), rewards=list(rewards),
                       reward_parts={}, max_tokens=8, correct=correct)


def pools(sizes):
    return {d: [P(f"{d}{i}", d) for i in range(n)] for d, n in sizes.items()}


def make(learn=None, sizes=None, k=4, seed=0, **cfg):
    cfg = CurriculumConfig(learnability=learn if learn is not None else {}, **cfg)
    return CurriculumController(cfg, pools(sizes or {"a": 10, "b": 10}), prompts_per_step=k, n=4, temperature=1.0,
                                top_p=1.0, max_tokens=8, total_steps=50, seed=seed)


def uids(plan):
    return [it.prompt.uid for it in plan.items]


# ----------------------------------------------------------------------------- posterior

def test_posterior_update_and_forgetting_by_hand():
    L = Learnability(LearnabilityConfig(decay=0.5, prior=(1, 1)))
    p = P("q")
    assert L.params("q") == (1.0, 1.0) and L.mean("q") == 0.5  # the prior until observed
    # 3 of 4 pass: alpha = 0.5*1 + 0.5*1 + 3 = 4, beta = 0.5*1 + 0.5*1 + 1 = 2
    L.update(G(p, [1, 1, 1, 0]))
    assert L.params("q") == (4.0, 2.0)
    # 0 of 4: alpha = 0.5*4 + 0.5*1 + 0 = 2.5, beta = 0.5*2 + 0.5*1 + 4 = 5.5; mean 2.5 / 8 = 0.3125
    L.update(G(p, [0, 0, 0, 0]))
    assert L.params("q") == (2.5, 5.5) and L.mean("q") == 0.3125
    # no forgetting (decay 1): plain counts, (1 + 3, 1 + 1) then (4 + 0, 2 + 4)
    L = Learnability(LearnabilityConfig(decay=1.0))
    L.update(G(p, [1, 1, 1, 0]))
    L.update(G(p, [0, 0, 0, 0]))
    assert L.params("q") == (4.0, 6.0)
    # decay 0: prior + the latest group only; prior (2, 3), 1 of 4 -> (3, 6).
    # `correct` wins over reward > 0: rewards all 0.1, the verifier passes one answer
    L = Learnability(LearnabilityConfig(decay=0.0, prior=(2, 3)))
    L.update(G(p, [1, 1, 1, 1]))
    L.update(G(p, [0.1] * 4, correct=[True, False, False, False]))
    assert L.params("q") == (3.0, 6.0)


def test_config_checks():
    with pytest.raises(ValidationError, match="prior"):
        LearnabilityConfig(prior=(0, 1))
    with pytest.raises(ValidationError):
        LearnabilityConfig(rule="plr")
    c = CurriculumConfig(learnability={"rule": "lilo", "prior": [2, 2], "candidates": 16})
    assert c.learnability.prior == (2.0, 2.0) and c.learnability.candidates == 16
    assert CurriculumConfig().learnability is None


# ----------------------------------------------------------------------------- selection

@settings(max_examples=15, deadline=None)
@given(h=st.integers(0, 40), s=st.integers(0, 8), extra=st.integers(0, 30), high=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_thompson_prefers_the_prompt_at_the_target(h, s, extra, high, seed):
    # "at" ~ Beta(1 + h, 1 + h), mean 0.5; "far" ~ Beta(1 + s, 1 + f), f = 4 s + 3 + extra, so its
    # mean (1 + s) / (5 + 5 s + extra) <= 0.2 (mirrored: >= 0.8). |p_at - 0.5| is stochastically below
    # U(0, 0.5), so P(at wins) >= E[2 |p_far - 0.5|] >= 2 |E p_far - 0.5| >= 0.6; 1000 head-to-heads
    # put the share of "at" above 0.5 by > 6 standard deviations (sd <= 0.016)
    f = 4 * s + 3 + extra
    L = Learnability(LearnabilityConfig(rule="mopps", target=0.5, prior=(1, 1), decay=1.0))
    at, far = P("at"), P("far")
    L.update(G(at, [1] * h + [0] * h))
    passes, fails = (f, s) if high else (s, f)
    L.update(G(far, [1] * passes + [0] * fails))
    rng = np.random.default_rng(seed)
    wins = sum(L.select("a", [at, far], 1, rng) == [0] for _ in range(1000))
    assert wins / 1000 > 0.5


def test_thompson_target_moves_the_choice():
    # Beta(41, 11) (mean 0.79) vs Beta(11, 41) (mean 0.21): target 0.8 takes the first, target 0.2 the
    # second, nearly always (their draws overlap with negligible probability)
    hi, lo = P("hi"), P("lo")
    for target, want in ((0.8, 0), (0.2, 1)):
        L = Learnability(LearnabilityConfig(target=target, decay=1.0))
        L.update(G(hi, [1] * 40 + [0] * 10))
        L.update(G(lo, [1] * 10 + [0] * 40))
        rng = np.random.default_rng(0)
        assert sum(L.select("a", [hi, lo], 1, rng) == [want] for _ in range(200)) >= 198


def test_lilo_picks_the_argmax_of_p_times_one_minus_p_by_hand():
    L = Learnability(LearnabilityConfig(rule="lilo", decay=0.5))
    a, b, c, d = P("a"), P("b"), P("c"), P("d")
    L.update(G(b, [1, 1, 1, 0]))                 # (4, 2): m = 2/3, m(1-m) = 2/9 = 0.2222
    L.update(G(c, [1, 1, 1, 0]))
    L.update(G(c, [0, 0, 0, 0]))                 # (2.5, 5.5): m = 0.3125, 0.3125 * 0.6875 = 0.2148
    L.update(G(d, [1] * 8))                      # (9, 1): m = 0.9, 0.09
    # a unseen: prior (1, 1), m = 0.5, 0.25 -> order a, b, c, d whatever the candidate order
    rng = np.random.default_rng(0)
    cands = [d, c, a, b]
    assert L.select("x", cands, 1, rng) == [2]
    assert L.select("x", cands, 3, rng) == [2, 3, 1]
    # picked this step: posterior means at pick time 0.5, then 0.5, 2/3, 0.3125
    assert L.picked == {"x": [0.5, 0.5, 2 / 3, 0.3125]}
    # ties keep the candidate order
    assert L.select("x", [P("u"), P("v")], 1, rng) == [0]


# ----------------------------------------------------------------------------- in the controller

def test_distribution_from_the_sampler_prompt_from_learnability():
    ctrl = make({"rule": "lilo", "candidates": 100}, sampler="ucb", k=2)
    # UCB's next draws from a copy of the controller's rng: plan() must give the same distributions
    rng = np.random.default_rng()
    rng.bit_generator.state = ctrl.rng.bit_generator.state
    want = ctrl.sampler.draw(2, rng)
    # the profile makes a3 and a7 the most learnable prompts of a (2/4: Beta(3, 3), m(1-m) = 0.25),
    # b4 the most learnable of b; the rest 4/4 (Beta(5, 1), 5/36)
    prior = {f"{d}{i}": (d, 2 if f"{d}{i}" in ("a3", "a7", "b4") else 4, 4) for d in "ab" for i in range(10)}
    ctrl.seed_prior(prior)
    plan = ctrl.plan(0)
    assert [it.prompt.distribution for it in plan.items] == want
    best = {"a": {"a3", "a7"}, "b": {"b4"}}
    for it in plan.items:  # candidates 100 x slots cover the whole pool: the best ones fill the slots
        assert it.prompt.uid in best[it.prompt.distribution]
    # pin UCB to b: every slot comes from b, the best prompt first, then the next best (ties by order)
    ctrl.sampler.raw_probabilities = lambda: np.array([0.0, 1.0])
    plan = ctrl.plan(1)
    assert [it.prompt.distribution for it in plan.items] == ["b", "b"] and uids(plan)[0] == "b4"


def test_refill_plans_do_not_repeat_prompts_of_the_step():
    ctrl = make({"rule": "mopps"}, sizes={"a": 10}, k=4, dynamic_sampling={"max_rounds": 4})
    first = uids(ctrl.plan(0))
    refill = uids(ctrl.plan(0, num_prompts=3)) + uids(ctrl.plan(0, num_prompts=3))
    assert len(set(first + refill)) == 10  # 4 + 3 + 3 = the whole pool, no prompt twice
    # the pool is used up: the next refill starts a new round, still without repeats inside it
    again = uids(ctrl.plan(0, num_prompts=2))
    assert len(set(again)) == 2
    assert ctrl.record(0)["distributions"]["a"]["planned"] == 12
    # a new step starts afresh
    assert len(set(uids(ctrl.plan(1)))) == 4
    # fewer prompts than slots: 3 prompts, 7 slots -> every prompt once before any twice: counts 3, 2, 2
    small = make({"rule": "lilo"}, sizes={"a": 3}, k=7)
    got = uids(small.plan(0))
    assert sorted(got.count(u) for u in set(got)) == [2, 2, 3]
    assert len(set(got[:3])) == 3 and len(set(got[3:6])) == 3


def test_dynamic_sampling_refills_observe_and_learn():
    # one distribution of 6 prompts: a0-a2 always pass, a3-a5 pass half the time. Steps of 3 slots with
    # a DAPO refill round of 3; every group of the step is observed once
    ctrl = make({"rule": "lilo", "decay": 1.0, "candidates": 2}, sizes={"a": 6}, k=3,
                dynamic_sampling={"max_rounds": 2})
    for t in range(4):
        plans = uids(ctrl.plan(t)) + uids(ctrl.plan(t, num_prompts=3))
        assert sorted(plans) == [f"a{i}" for i in range(6)]  # 6 slots, 6 prompts: each once
        ctrl.observe(t, [G(P(u), [1, 1, 1, 1] if u in ("a0", "a1", "a2") else [1, 0, 1, 0]) for u in plans])
    # after 4 steps: a0 (1 + 16, 1) mean 17/18; a3 (1 + 8, 1 + 8) mean 0.5
    assert ctrl.learn.params("a0") == (17.0, 1.0) and ctrl.learn.params("a3") == (9.0, 9.0)
    # the first round of a step now takes the three learnable prompts: every candidate pair (2 x 3
    # = 6 candidates = the pool) ranks a3-a5 above a0-a2
    assert sorted(uids(ctrl.plan(4))) == ["a3", "a4", "a5"]


def test_speed_screening_rounds():
    # SPEED (trainer.collect_speed) plans screening rounds with plan(t, num_prompts=k), k up to
    # prompts_per_step * n // screen_n, and observes once per step: screen-only groups (screen_n = 2
    # answers) and merged full groups (2 + 2 answers)
    from rlcurr.curriculum.speed import merge

    ctrl = make({"rule": "mopps", "decay": 0.5}, sizes={"a": 10}, k=4)
    r0 = uids(ctrl.plan(0))                      # round 0: 4 prompts
    r1 = uids(ctrl.plan(0, num_prompts=8))       # round 1: 6 unplanned prompts left, then a new round of 2
    assert len(set(r0 + r1[:6])) == 10 and len(set(r1[6:])) == 2
    screen = {u: G(P(u), [1, 0]) for u in r0}    # all accepted (pass rate 1/2 inside (0, 1))
    full = merge(screen[r0[0]], G(P(r0[0]), [1, 1]))
    ctrl.observe(0, [full] + [screen[u] for u in r0[1:]])
    # full group 3 of 4: (0.5 + 0.5 + 3, 0.5 + 0.5 + 1) = (4, 2); screen-only 1 of 2: (2, 2)
    assert ctrl.learn.params(r0[0]) == (4.0, 2.0) and ctrl.learn.params(r0[1]) == (2.0, 2.0)


def test_greso_screens_learnability_candidates():
    # 2 prompts with equal posteriors (lilo ties: candidate order, random); "stuck" has 10 all-wrong
    # groups in the memory only -> GRESO drops it w.p. 1 - max(0.5^10, 0.01) = 0.99. Stuck fills the
    # slot only when it survives (0.01) and comes first (0.5): 0.005 per step
    ctrl = make({"rule": "lilo"}, sizes={"a": 2}, k=1, greso={"step": 0.0})
    stuck = ctrl.prompts["a"][0]
    for t in range(10):
        ctrl.memory.update(t, G(stuck, [0, 0, 0, 0]))
    picks, skipped = [], 0
    for t in range(10, 410):
        picks += uids(ctrl.plan(t))
        skipped += ctrl.record(t)["greso"]["skipped"]
    assert picks.count(stuck.uid) <= 8          # expected 2 of 400
    assert skipped >= 380                       # expected 0.99 * 400 = 396
    # without GRESO the same controller takes each prompt about half the time
    plain = make({"rule": "lilo"}, sizes={"a": 2}, k=1)
    picks = [u for t in range(400) for u in uids(plain.plan(t))]
    assert 150 < picks.count(stuck.uid) < 250


def test_seed_prior_by_hand():
    ctrl = make({"rule": "mopps", "prior": [1, 1], "decay": 0.5}, sizes={"a": 4, "b": 2}, greso={})
    prior = {"a0": ("a", 0, 4),     # hard: Beta(1, 5); memory streak 1 hard, ema 0
             "a1": ("a", 4, 4),     # easy: Beta(5, 1); streak 1 easy, ema 1
             "a2": ("a", 1, 4),     # mixed: Beta(2, 4); streak 0, last_mixed -1, ema 0.25
             "zz": ("a", 1, 2),     # not in a's pool: ignored
             "q": ("nope", 1, 2),   # unknown distribution: ignored
             "a3": ("a", 0, 0)}     # no answers: ignored
    ctrl.seed_prior(prior)
    assert ctrl.prior_counts == {"seeded": 3, "ignored": 3}
    assert ctrl.learn.params("a0") == (1.0, 5.0) and ctrl.learn.params("a1") == (5.0, 1.0)
    assert ctrl.learn.params("a2") == (2.0, 4.0) and "zz" not in ctrl.learn.post and "a3" not in ctrl.learn.post
    m = ctrl.memory
    assert (m.get("a0")["streak"], m.get("a0")["kind"], m.get("a0")["ema"], m.get("a0")["drawn"]) == (1, "hard", 0.0, 0)
    assert (m.get("a1")["streak"], m.get("a1")["kind"], m.get("a1")["ema"]) == (1, "easy", 1.0)
    assert (m.get("a2")["streak"], m.get("a2")["kind"], m.get("a2")["last_mixed"], m.get("a2")["ema"]) == \
        (0, None, -1, 0.25)
    # GRESO reads the seeded streak: a0 skipped w.p. 1 - 0.5 = 0.5 from the first step
    assert ctrl.greso.skip_probability(*m.streak("a0")) == 0.5
    # the seeded group counts as one: another all-correct group of a1 -> streak 2 easy (skip 0.75);
    # posterior (0.5*5 + 0.5*1 + 4, 0.5*1 + 0.5*1 + 0) = (7, 1)
    ctrl.plan(0)
    ctrl.observe(0, [G(ctrl.prompts["a"][1], [1, 1, 1, 1])])
    assert m.streak("a1") == (2, "easy") and ctrl.learn.params("a1") == (7.0, 1.0)
    # seeding again never overrides what is known: a1 keeps (7, 1); b0 is new
    ctrl.seed_prior({"a1": ("a", 0, 4), "b0": ("b", 3, 4)})
    assert ctrl.prior_counts == {"seeded": 1, "ignored": 1}
    assert ctrl.learn.params("a1") == (7.0, 1.0) and ctrl.learn.params("b0") == (4.0, 2.0)
    assert ctrl.record(0)["learnability"]["prior"] == {"seeded": 1, "ignored": 1}


def test_seed_prior_without_learnability_fills_the_memory_only():
    ctrl = CurriculumController(CurriculumConfig(greso={}), pools({"a": 3}), prompts_per_step=2, n=4,
                                temperature=1.0, top_p=1.0, max_tokens=8, total_steps=5, seed=0)
    ctrl.seed_prior({"a0": ("a", 0, 8), "a1": ("a", 5, 8)})
    assert ctrl.learn is None and ctrl.prior_counts == {"seeded": 2, "ignored": 0}
    assert ctrl.memory.streak("a0") == (1, "hard") and ctrl.memory.get("a1")["ema"] == 0.625


def test_record_summary_by_hand():
    ctrl = make({"rule": "lilo", "candidates": 100}, sizes={"a": 4, "b": 2}, k=2)
    ctrl.sampler.raw_probabilities = lambda: np.array([1.0, 0.0])  # every slot from a
    ctrl.seed_prior({"a0": ("a", 2, 4), "a1": ("a", 1, 4), "a2": ("a", 4, 4), "b0": ("b", 0, 4)})
    # a0 Beta(3, 3) m 0.5 -> 0.25; a3 unseen m 0.5 -> 0.25; a1 Beta(2, 4) m 1/3 -> 0.2222; a2 Beta(5, 1) 0.139
    # slots: a0 and a3 (posterior means 0.5, 0.5)
    assert sorted(uids(ctrl.plan(0))) == ["a0", "a3"]
    L = ctrl.record(0)["learnability"]
    assert L["rule"] == "lilo"
    # tracked: a0 0.5 (bin 2), a1 0.333 (bin 1), a2 0.833 (bin 4); b0 Beta(1, 5) 0.167 (bin 0)
    assert L["distributions"]["a"] == {"picked": 2, "picked_mean": 0.5, "tracked": 3, "mean_hist": [0, 1, 1, 0, 1]}
    assert L["distributions"]["b"] == {"picked": 0, "picked_mean": None, "tracked": 1, "mean_hist": [1, 0, 0, 0, 0]}
    assert make(sizes={"a": 2}).record(0)["learnability"]["distributions"]["a"]["tracked"] == 0
    assert CurriculumController(CurriculumConfig(), pools({"a": 2}), prompts_per_step=1, n=2, temperature=1.0,
                                top_p=1.0, max_tokens=8, total_steps=5, seed=0).record(0)["learnability"] is None


def test_inspect_prompts_shows_learnability(tmp_path):
    from rich.console import Console

    from rlcurr.report import load_run, print_prompts, prompts_json

    ctrl = make({"rule": "mopps"}, sizes={"a": 6, "b": 6}, k=4)
    ctrl.seed_prior({"a0": ("a", 1, 4)})
    rows = []
    for t in range(4):
        plan = ctrl.plan(t)
        ctrl.observe(t, [G(it.prompt, [1, 0, 0, 1]) for it in plan.items])
        rows.append(ctrl.record(t))
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"name": "learn", "trainer": {"steps": 4}}))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": t}) + "\n" for t in range(4)))
    (d / "curriculum.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = prompts_json(load_run(d, None), ranges=2)
    assert p["learnability"] == {"rule": "mopps", "prior": {"seeded": 1, "ignored": 0}}
    spans = {x: p["distributions"][x]["learnability"] for x in "ab"}
    # ranges [0, 1] and [2, 3]: picked = the slots planned from each distribution in the range
    for i, (lo, hi) in enumerate([(0, 1), (2, 3)]):
        assert spans["a"][i]["steps"] == [lo, hi]
        assert spans["a"][i]["picked"] + spans["b"][i]["picked"] == 8
        for x in "ab":
            assert spans[x][i]["tracked"] == rows[hi]["learnability"]["distributions"][x]["tracked"]
    assert spans["a"][1]["mean_hist"] == rows[3]["learnability"]["distributions"]["a"]["mean_hist"]
    con = Console(record=True, width=160)
    print_prompts(load_run(d, None), con)
    out = con.export_text()
    assert "a: learnability (mopps), prompts by posterior mean pass rate" in out
    assert "learnability prior: 1 prompts seeded from a profile, 0 ignored" in out


@pytest.mark.parametrize("rule", ["mopps", "lilo"])
def test_state_dict_round_trip_gives_identical_next_plans(rule):
    cfg = dict(sampler="ucb", greso={}, dynamic_sampling={"max_rounds": 3})
    a = make({"rule": rule}, sizes={"a": 8, "b": 5}, k=4, seed=3, **cfg)
    a.seed_prior({"a0": ("a", 0, 4), "b1": ("b", 2, 4)})
    rng = np.random.default_rng(0)

    def groups(plan, rng):
        return [G(it.prompt, (rng.random(4) < 0.5).astype(float).tolist()) for it in plan.items]

    for t in range(4):
        pa = a.plan(t)
        a.observe(t, groups(pa, rng) + groups(a.plan(t, num_prompts=2), rng))
    first = a.plan(4)  # mid-step: the prompts planned so far must stay excluded after the resume
    sd = json.loads(json.dumps(a.state_dict()))  # through JSON, as a checkpoint would
    b = make({"rule": rule}, sizes={"a": 8, "b": 5}, k=4, seed=999, **cfg)
    b.load_state_dict(sd)
    assert b.learn.post == a.learn.post and b.prior_counts == a.prior_counts
    ra, rb = np.random.default_rng(4), np.random.default_rng(4)
    ea, eb = a.plan(4, num_prompts=3), b.plan(4, num_prompts=3)
    assert ea == eb
    a.observe(4, groups(first, ra) + groups(ea, ra))
    b.observe(4, groups(first, rb) + groups(eb, rb))
    assert a.record(4) == b.record(4)
    for t in range(5, 8):
        pa, pb = a.plan(t), b.plan(t)
        assert pa == pb
        a.observe(t, groups(pa, ra))
        b.observe(t, groups(pb, rb))
        assert a.record(t) == b.record(t)
