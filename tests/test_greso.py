"""GRESO (docs/curriculum.md, "GRESO") in the controller: skip probability, p adaptation, skipping in
plans; alerts."""

import numpy as np
import pytest

from rlcurr.curriculum.config import CurriculumConfig, GresoConfig
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.prompts import Greso, PromptMemory
from rlcurr.types import Completion, Prompt, ScoredGroup

C = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")


def P(uid, dist="a"):
    return Prompt(uid=uid, distribution=dist, question=uid, answer="1")


def G(prompt, rewards):
    return ScoredGroup(prompt=prompt, prompt_ids=[1], completions=[C] * len(rewards), rewards=list(rewards),
                       reward_parts={}, max_tokens=8)


def test_skip_probability_by_hand():
    g = Greso(GresoConfig(p_easy=0.5, p_hard=0.8))
    assert g.skip_probability(0, None) == 0.0
    # 1 - p^z: easy z=1 -> 1 - 0.5 = 0.5; easy z=3 -> 1 - 0.125 = 0.875; hard z=2 -> 1 - 0.64 = 0.36
    assert g.skip_probability(1, "easy") == 0.5
    assert g.skip_probability(3, "easy") == 0.875
    assert g.skip_probability(2, "hard") == pytest.approx(0.36)


def test_skip_probability_keeps_the_authors_floor():
    # the authors' code skips with 1 - max(p^z, 0.01) (presampling_selector.py, *_probabilistic_skip):
    # p = 0.5, z = 10 -> 0.5^10 = 0.000977 < 0.01 -> 1 - 0.01 = 0.99 (no floor: 0.99902)
    g = Greso(GresoConfig())
    assert g.skip_probability(10, "hard") == pytest.approx(0.99)
    assert g.skip_probability(10, "easy") == pytest.approx(0.99)
    # z = 6: 0.5^6 = 0.015625 > 0.01 -> 0.984375, the floor does not bite
    assert g.skip_probability(6, "easy") == pytest.approx(0.984375)
    assert Greso(GresoConfig(keep_floor=0.0)).skip_probability(10, "hard") == pytest.approx(1 - 0.5 ** 10)


def test_a_change_of_kind_restarts_the_streak():
    # the authors count consecutive groups of one kind (all-correct or all-wrong) from the latest back:
    # hard, hard, easy -> z = 1 easy -> skip 1 - 0.5^1 = 0.5 (counting across kinds: z = 3 -> 0.875)
    mem = PromptMemory()
    p = P("q")
    for t, r in enumerate([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]):
        mem.update(t, G(p, r))
    assert mem.streak("q") == (1, "easy")
    g = Greso(GresoConfig(p_easy=0.5, p_hard=0.5))
    assert g.skip_probability(*mem.streak("q")) == 0.5
    # easy again -> z = 2 easy -> 1 - 0.25 = 0.75; then hard -> z = 1 hard -> 0.5
    mem.update(3, G(p, [1, 1]))
    assert mem.streak("q") == (2, "easy") and g.skip_probability(*mem.streak("q")) == 0.75
    mem.update(4, G(p, [0, 0, 0]))
    assert mem.streak("q") == (1, "hard") and g.skip_probability(*mem.streak("q")) == 0.5


class FixedUniforms:
    """A stand-in rng whose random() returns the given numbers in order."""

    def __init__(self, *u):
        self.u = list(u)

    def random(self):
        return self.u.pop(0)


def test_screen_drops_streaky_candidates_and_takes_back_when_short():
    mem = PromptMemory()
    a, b, c = P("a"), P("b"), P("c")
    mem.update(0, G(a, [1, 1, 1, 1]))   # a: z = 1 easy -> q = 1 - 0.5 = 0.5
    mem.update(0, G(b, [1, 0, 1, 0]))   # b: mixed -> q = 0, no uniform drawn
    mem.update(0, G(c, [0, 0, 0, 0]))
    mem.update(1, G(c, [0, 0, 0, 0]))   # c: z = 2 hard -> q = 1 - 0.25 = 0.75
    # uniforms 0.3 (a: 0.3 < 0.5 dropped), 0.7 (c: 0.7 < 0.75 dropped)
    g = Greso(GresoConfig())
    assert g.screen("d", [a, b, c], mem, FixedUniforms(0.3, 0.7), need=1) == [1]
    assert g.skipped == {"d": 2}
    # need 2: one survivor only, so the first dropped one (a) is taken back; one skip counted
    g.begin_step()
    assert g.screen("d", [a, b, c], mem, FixedUniforms(0.3, 0.7), need=2) == [0, 1]
    assert g.skipped == {"d": 1}
    # uniforms 0.6 (a kept: 0.6 >= 0.5), 0.8 (c kept): nothing dropped
    g.begin_step()
    assert g.screen("d", [a, b, c], mem, FixedUniforms(0.6, 0.8), need=1) == [0, 1, 2] and g.skipped == {}


def test_p_update_by_hand():
    g = Greso(GresoConfig())  # p 0.5/0.5, target 0.25 -> easy 0.25/3 = 0.0833, hard 0.5/3 = 0.1667, step 0.01
    # 6 groups: 1 all-correct (1/6 = 0.167 >= 0.0833: skip more, p_easy 0.49),
    # 0 all-wrong (0 < 0.1667: skip less, p_hard 0.51); the one-answer group (None) does not count
    g.adapt([(True, "easy"), (False, None), (False, None), (False, None), (False, None), (False, None),
             (None, None)])
    assert g.p == pytest.approx({"easy": 0.49, "hard": 0.51})
    assert g.last_share == pytest.approx({"easy": 1 / 6, "hard": 0.0})
    # 4 groups, 1 all-wrong: hard share 0.25 >= 0.1667 -> p_hard 0.50; easy 0 -> p_easy 0.50
    g.adapt([(True, "hard"), (False, None), (False, None), (False, None)])
    assert g.p == pytest.approx({"easy": 0.50, "hard": 0.50})
    # clipping at p_min / p_max: 0.06 - 0.02 -> 0.05 floor; 0.94 + 0.02 -> 0.95 cap
    g = Greso(GresoConfig(p_easy=0.06, p_hard=0.94, step=0.02))
    g.adapt([(True, "easy")])  # easy share 1 >= target; hard share 0 < target
    assert g.p == pytest.approx({"easy": 0.05, "hard": 0.95})


def test_choose_skips_and_bounds_tries():
    mem = PromptMemory()
    hot = P("hot")
    for t in range(3):
        mem.update(t, G(hot, [1, 1, 1, 1]))  # z = 3 easy
    g = Greso(GresoConfig(p_easy=0.5, max_tries=2))  # skip prob 1 - 0.5^3 = 0.875
    # always the same candidate: at most max_tries skips, then it is taken anyway
    rng = np.random.default_rng(0)
    picks = [g.choose("a", lambda: hot, mem, rng) for _ in range(2000)]
    assert all(p is hot for p in picks)
    # skips per call: 2 w.p. 0.875^2 = 0.765625, 1 w.p. 0.875 * 0.125 = 0.109375, 0 w.p. 0.125
    # -> mean 2 * 0.765625 + 0.109375 = 1.640625 per call
    assert g.skipped["a"] / 2000 == pytest.approx(1.640625, abs=0.05)


def _ctrl(cfg, prompts, seed=0, k=8):
    return CurriculumController(cfg, prompts, prompts_per_step=k, n=4, temperature=1.0, top_p=1.0,
                                max_tokens=8, total_steps=100, seed=seed)


def test_greso_skips_streaky_prompt_far_more_than_mixed_one():
    # one distribution, two prompts: "stuck" was all-wrong in its last 4 groups, "mixed" had a mixed group.
    prompts = {"a": [P("stuck"), P("mixed")]}
    ctrl = _ctrl(CurriculumConfig(greso={"step": 0.0}), prompts, k=1000)
    for t in range(4):
        ctrl.plan(t, num_prompts=1)
        ctrl.observe(t, [G(prompts["a"][0], [0, 0, 0, 0]), G(prompts["a"][1], [1, 0, 0, 0])])
    plan = ctrl.plan(4)
    uids = [it.prompt.uid for it in plan.items]
    # per slot, uniform candidates; stuck is skipped w.p. q = 1 - 0.5^4 = 0.9375 and mixed never:
    # P(slot = stuck) = sum over the first max_tries=10 candidates of (0.5 q)^j * 0.5 (1 - q) + (0.5 q)^10 * 0.5
    # (the 11th candidate is taken anyway) ~= 0.5 * 0.0625 / (1 - 0.46875) = 0.0588 (+ negligible tail)
    q = 0.9375
    expect = sum((0.5 * q) ** j * 0.5 * (1 - q) for j in range(10)) + (0.5 * q) ** 10 * 0.5
    assert abs(uids.count("stuck") / 1000 - expect) < 0.03
    assert uids.count("mixed") > 900
    rec = ctrl.record(4)
    assert rec["greso"]["skipped"] == rec["greso"]["skipped_by_distribution"]["a"] > 0
    assert rec["greso"]["p_hard"] == 0.5 and rec["greso"]["p_easy"] == 0.5  # step 0: p fixed


def test_without_greso_plans_unchanged():
    prompts = {"a": [P(f"a{i}") for i in range(5)], "b": [P(f"b{i}", "b") for i in range(5)]}
    a, b = _ctrl(CurriculumConfig(), prompts), _ctrl(CurriculumConfig(greso={}), prompts)
    # no history: GRESO draws nothing extra from the RNG, so the plans are identical
    for t in range(3):
        pa, pb = a.plan(t), b.plan(t)
        assert [i.prompt.uid for i in pa.items] == [i.prompt.uid for i in pb.items]
        gs = [G(i.prompt, [1, 0, 1, 0]) for i in pa.items]  # all mixed: no streaks
        a.observe(t, gs)
        b.observe(t, gs)


@pytest.mark.parametrize("sampler", ["uniform", "ucb", "sec"])
def test_greso_composes_with_samplers_and_refill_plans(sampler):
    prompts = {"a": [P(f"a{i}") for i in range(4)], "b": [P(f"b{i}", "b") for i in range(4)]}
    ctrl = _ctrl(CurriculumConfig(sampler=sampler, greso={}, dynamic_sampling={"max_rounds": 3}), prompts)
    for t in range(5):
        plan = ctrl.plan(t)
        extra = ctrl.plan(t, num_prompts=3)  # a DAPO refill round: same filter
        gs = [G(i.prompt, [1, 1, 1, 1] if i.prompt.uid.endswith("0") else [1, 0, 0, 1])
              for i in plan.items + extra.items]
        ctrl.observe(t, gs)
    assert ctrl.memory.streak("a0")[0] >= 1 or ctrl.memory.streak("b0")[0] >= 1
    rec = ctrl.record(4)
    assert set(rec["greso"]) >= {"p_easy", "p_hard", "skipped"}


# ----------------------------------------------------------------------------- alerts

def test_starvation_alert_by_hand():
    # raw p = (1, 0) with min_prob 0.1 over 2 distributions: p(b) = 0.1 + (1 - 2 * 0.1) * 0 = 0.1, the floor.
    # The static "weights" sampler never raises it (its mixture is the user's choice); a UCB sampler
    # whose raw probabilities are pinned to (1, 0) does
    prompts = {"a": [P("a0")], "b": [P("b0", "b")]}
    cfg = CurriculumConfig(sampler="weights", weights={"a": 1.0}, min_prob=0.1, alerts={"starve_steps": 2})
    ctrl = _ctrl(cfg, prompts)
    for t in range(4):
        ctrl.plan(t)
        ctrl.observe(t, [])
    assert ctrl.record(3)["alerts"] == []  # static mixture: the user's choice, no alert
    ctrl = _ctrl(cfg.model_copy(update={"sampler": "ucb"}), prompts)
    ctrl.alerts.static = False
    ctrl.sampler.raw_probabilities = lambda: np.array([1.0, 0.0])  # pin b at the floor
    alerts = []
    for t in range(4):
        ctrl.plan(t)
        ctrl.observe(t, [])
        alerts.append(ctrl.record(t)["alerts"])
    # at floor after steps 0, 1, 2, 3 -> counts 1, 2, 3, 4; alert when count > starve_steps = 2
    assert alerts[0] == [] and alerts[1] == []
    assert alerts[2] == [{"kind": "starve", "distribution": "b", "steps": 3, "prob": pytest.approx(0.1)}]
    assert alerts[3][0]["steps"] == 4


def test_forgetting_alert_by_hand():
    prompts = {"a": [P("a0")], "b": [P("b0", "b")]}
    ctrl = _ctrl(CurriculumConfig(alerts={"forget_drop": 0.1}), prompts)
    ctrl.observe_eval(0, {"a": 0.5, "b": 0.3})
    ctrl.observe_eval(5, {"a": 0.7, "b": 0.3})   # best a = 0.7 at 5
    ctrl.observe_eval(10, {"a": 0.65, "b": 0.1})  # a drop 0.05 <= 0.1: fine; b drop 0.2 > 0.1: alert
    al = ctrl.record(10)["alerts"]
    assert al == [{"kind": "forget", "distribution": "b", "accuracy": 0.1, "step": 10, "best": 0.3,
                   "best_step": 0, "drop": pytest.approx(0.2)}]
    ctrl.observe_eval(15, {"a": 0.55, "b": 0.25})  # a drop 0.15 > 0.1; b drop 0.05 recovered
    assert [(x["kind"], x["distribution"]) for x in ctrl.record(15)["alerts"]] == [("forget", "a")]
