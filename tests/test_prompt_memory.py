"""Per-prompt memory: updates from groups of any size, record summary, exact resume."""

import json

import numpy as np

from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.prompts import PromptMemory, group_outcome
from rlcurr.types import Completion, Prompt, ScoredGroup

C = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
NAMES = ["a", "b"]


def P(uid, dist="a"):
    return Prompt(uid=uid, distribution=dist, question=uid, answer="1")


def G(prompt, rewards, correct=None, off_policy=False):
    return ScoredGroup(prompt=prompt, prompt_ids=[1], completions=[C] * len(rewards), rewards=list(rewards),
                       reward_parts={}, max_tokens=8, correct=correct, off_policy=off_policy)


def test_group_outcome_kinds():
    assert group_outcome(G(P("x"), [1, 1, 1, 1])) == (1.0, True, "easy")
    assert group_outcome(G(P("x"), [0, 0])) == (0.0, True, "hard")
    assert group_outcome(G(P("x"), [1, 0, 0, 0])) == (0.25, False, None)
    # `correct` wins over reward > 0: rewards 0.1 (format bonus) everywhere, verifier says all wrong
    assert group_outcome(G(P("x"), [0.1, 0.1, 0.1], correct=[False] * 3)) == (0.0, True, "hard")
    # one answer: a pass rate, no variance verdict
    assert group_outcome(G(P("x"), [1.0])) == (1.0, None, None)


def test_memory_updates_by_hand():
    m = PromptMemory(ema_alpha=0.5)
    p = P("q")
    m.update(0, G(p, [1, 0, 0, 0]))   # rate 0.25 -> ema 0.25 (first), mixed at step 0
    m.update(1, G(p, [0, 0, 0, 0]))   # rate 0 -> ema 0.5*0.25 + 0.5*0 = 0.125; streak 1 hard
    m.update(2, G(p, [0, 0]))         # 2-answer screening group: ema 0.0625; streak 2 hard
    m.update(3, G(p, [1.0]))          # 1 answer: ema 0.5*0.0625 + 0.5*1 = 0.53125; streak unchanged
    r = m.get("q")
    assert r["drawn"] == 4 and r["ema"] == 0.53125
    assert (r["streak"], r["kind"], r["last_mixed"]) == (2, "hard", 0)
    assert m.steps_since_mixed("q", 5) == 5
    m.update(4, G(p, [1, 1, 1]))      # all correct after 2 hard: a new kind restarts the streak at 1 (GRESO)
    assert m.streak("q") == (1, "easy")
    m.update(5, G(p, [1, 0]))
    assert m.streak("q") == (0, None) and m.steps_since_mixed("q", 5) == 0


def test_summary_histogram_and_extremes():
    m = PromptMemory(ema_alpha=1.0)  # ema = the latest pass rate
    rates = {"a0": 0.0, "a1": 0.25, "a2": 0.5, "a3": 0.75, "a4": 1.0}
    for uid, r in rates.items():
        k = round(r * 4)
        m.update(0, G(P(uid), [1.0] * k + [0.0] * (4 - k)))
    m.update(0, G(P("b0", "b"), [1.0]))
    s = m.summary(NAMES, bins=5, top=2)
    # bins [0,.2) [.2,.4) [.4,.6) [.6,.8) [.8,1]: 0 | .25 | .5 | .75 | 1
    assert s["a"]["pass_hist"] == [1, 1, 1, 1, 1] and s["a"]["seen"] == 5
    # zero variance: a0 (all wrong) and a4 (all right) of 5 judged groups
    assert s["a"]["zero_var_share"] == 2 / 5
    assert s["a"]["hardest"] == [["a0", 0.0], ["a1", 0.25]]
    assert s["a"]["easiest"] == [["a4", 1.0], ["a3", 0.75]]
    # b0 had one answer only: seen, no zero-variance verdict
    assert s["b"]["seen"] == 1 and s["b"]["zero_var_share"] is None and s["b"]["pass_hist"] == [0, 0, 0, 0, 1]


def _ctrl(cfg=None, seed=3):
    prompts = {d: [P(f"{d}{i}", d) for i in range(6)] for d in NAMES}
    return CurriculumController(cfg or CurriculumConfig(), prompts, prompts_per_step=4, n=4, temperature=1.0,
                                top_p=1.0, max_tokens=8, total_steps=20, seed=seed)


def _groups(plan, rng):
    out = []
    for it in plan.items:
        p = 0.9 if it.prompt.uid.endswith(("0", "1")) else 0.3
        k = int(rng.integers(1, plan.n + 1))  # any size >= 1, as SPEED screening groups
        out.append(G(it.prompt, (rng.random(k) < p).astype(float).tolist()))
    return out


def test_controller_observe_feeds_memory_and_record():
    c = _ctrl()
    rng = np.random.default_rng(0)
    seen = set()
    for t in range(5):
        plan = c.plan(t)
        gs = _groups(plan, rng)
        gs.append(G(plan.items[0].prompt, [1.0, 1.0], off_policy=True))  # hinted re-roll: ignored
        c.observe(t, gs)
        seen |= {g.prompt.uid for g in gs if not g.off_policy}
    assert set(c.memory.rec) == seen
    assert sum(r[1] for r in c.memory.rec.values()) == 5 * 4  # drawn: every on-policy group, once
    row = c.record(4)
    json.dumps(row)
    assert set(row["prompts"]) == set(NAMES)
    assert sum(row["prompts"][d]["seen"] for d in NAMES) == len(seen)
    assert row["greso"] is None and row["alerts"] == []
    assert len(json.dumps(row["prompts"])) < 1000  # small row


def test_state_round_trip_through_json_gives_identical_plans_and_records():
    cfg = CurriculumConfig(sampler="ucb", greso={})
    a = _ctrl(cfg)
    rng = np.random.default_rng(1)
    for t in range(6):
        a.observe(t, _groups(a.plan(t), rng))
    a.observe_eval(5, {"a": 0.8, "b": 0.4})
    b = _ctrl(cfg, seed=99)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.memory.rec == a.memory.rec and b.greso.p == a.greso.p
    assert b.record(5) == a.record(5)
    ra, rb = np.random.default_rng(2), np.random.default_rng(2)
    for t in range(6, 10):
        pa, pb = a.plan(t), b.plan(t)
        assert [i.prompt.uid for i in pa.items] == [i.prompt.uid for i in pb.items]
        a.observe(t, _groups(pa, ra))
        b.observe(t, _groups(pb, rb))
        assert a.record(t) == b.record(t)


def test_old_checkpoint_without_prompt_keys_loads():
    a = _ctrl()
    sd = a.state_dict()
    for k in ("prompt_memory", "greso", "alerts"):
        sd.pop(k)
    b = _ctrl(CurriculumConfig(greso={}))
    b.load_state_dict(sd)
    assert b.memory.rec == {} and b.greso.p == {"easy": 0.5, "hard": 0.5}
