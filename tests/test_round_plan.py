"""The trainer asks the curriculum once per round, and the step's curriculum row is typed.

A synchronous `Trainer.step` on the real Trainer pieces (plan, encode, score, guide, filter,
advantages, D3S, evaluation, the row) with the rollout pool, the learner and the logger replaced
by stand-ins (no Ray, no generation, no update): the calls into the controller do not grow with
the number of prompts, the plan's items carry the budget and EAD temperatures the per-prompt
helpers give (and hand-computed values), and the row serialises to the curriculum.jsonl line of
earlier versions (the same keys in the same order, the same values)."""

import collections
import inspect
import json
import math
import re

import pytest

from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.row import CurriculumRow, D3SRow
from rlcurr.types import Completion
from test_reward_failures import _trainer

BUDGET = "curriculum.budget={shape: linear, start: 6, end: 2, slack: 1, per_distribution: {add2: {start: 4, end: 2}}}"
OVERRIDES = [BUDGET, "env.distributions=[add1, add2]", "env.eval_size=2", "eval.every=1", "trainer.steps=4",
             "curriculum.ead={warm_tokens: 1, d0: 0.2, alpha: 0.02}", "algo.tis_cap=2.0",
             "curriculum.d3s={}", "curriculum.dynamic_sampling={}", "curriculum.guidance={}"]
# the curriculum.jsonl line of a trainer step, as the untyped dict wrote it
OLD_KEYS = ["step", "sampler", "distributions", "budget", "hints", "filter", "d3s", "prompts", "greso",
            "learnability", "alerts", "policy_version", "lag"]


class MixedPool:
    """Every request gets n answers alternating right / wrong (each group mixed: no refill round,
    no guided re-roll); the requests are kept."""

    restarts = 0

    def __init__(self, tokenizer):
        self.tokenizer, self.requests = tokenizer, []

    def generate(self, requests, prompts=None):
        out = []
        for req in requests:
            self.requests.append(req)
            a, b = map(int, re.findall(r"(\d+)\+(\d+)=", self.tokenizer.decode(req.prompt_ids))[-1])
            out.append([Completion([7, 8], [-0.5, -0.5], "stop", str(a + b) if i % 2 == 0 else "x")
                        for i in range(req.n)])
        return out

    def sleep(self):
        pass

    def wake_up(self):
        pass


class FakeLearner:
    def __init__(self):
        self.samples = []

    def submit_train_step(self, samples, t, token_keep_frac=None):
        self.samples.append((samples, token_keep_frac))
        return len(self.samples)

    def result(self, update):
        return {"d3s/tokens_kept_frac": 0.5}


class FakeLogger:
    def __init__(self):
        self.rows = []

    def record(self, step, metrics, row):
        self.rows.append(json.loads(json.dumps(row)))  # what RunLogger writes (after its own "step")


def count_calls(ctrl: CurriculumController) -> collections.Counter:
    """Wrap every public method of `ctrl`; count the calls made from outside the controller (its
    own calls to its helpers are not counted)."""
    calls: collections.Counter = collections.Counter()
    depth = [0]
    for name, attr in inspect.getmembers(type(ctrl)):
        if name.startswith("_") or isinstance(attr, property) or not callable(attr):
            continue

        def wrapped(*a, _fn=getattr(ctrl, name), _name=name, **k):
            if depth[0] == 0:
                calls[_name] += 1
            depth[0] += 1
            try:
                return _fn(*a, **k)
            finally:
                depth[0] -= 1

        setattr(ctrl, name, wrapped)
    return calls


def one_step(tmp_path, prompts, t=0, overrides=()):
    """(controller calls, plans, budget columns scored, the trainer, the logged row) of `Trainer.step(t)`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    tr = _trainer(tmp_path, [f"trainer.prompts_per_step={prompts}", *OVERRIDES, *overrides],
                  rewards=("exact_match", "length_budget"))
    tr.rollout_pool, tr.learner, tr.logger = MixedPool(tr.tokenizer), FakeLearner(), FakeLogger()
    tr.sync = lambda wait=False: {}
    tr.version = t
    plans, budgets = [], []
    plan = tr.controller.plan
    tr.controller.plan = lambda *a, **k: plans.append(plan(*a, **k)) or plans[-1]
    score = tr.rewards.score
    tr.rewards.score = lambda p, c, cols: budgets.append(cols["budget"]) or score(p, c, cols)
    calls = count_calls(tr.controller)
    tr.step(t)
    return calls, plans, budgets, tr, tr.logger.rows[-1]


def test_a_step_asks_the_controller_a_fixed_number_of_times(tmp_path):
    small, *_ = one_step(tmp_path / "p2", 2)
    large, *_ = one_step(tmp_path / "p8", 8)
    # once per round (plan, observe_filter), once per step (observe, row), after the evaluation
    # (observe_eval, current_alerts); before: 2P + 7, temperatures and budget once per prompt
    want = {"plan": 1, "observe_filter": 1, "observe": 1, "row": 1, "observe_eval": 1, "current_alerts": 1}
    assert dict(small) == want and dict(large) == want


def test_the_plan_carries_the_budgets_and_temperatures_of_the_per_prompt_helpers(tmp_path):
    _, (plan,), budgets, tr, _ = one_step(tmp_path, 8)
    ctrl = tr.controller
    # step 0 of 4, linear: add1 budget 6 (+ slack 1 = 7 tokens), add2 its own start 4 (5 tokens)
    want_budget, want_max = {"add1": 6, "add2": 4}, {"add1": 7, "add2": 5}
    # EAD, warm_tokens 1, d0 0.2, alpha 0.02, tau_max 1.2, tau_min 0.1: d_0 = 0.2, so position t
    # anneals as 2.2 - exp(t / 4), floored at 0.1 from t = 3 on
    hand = [1.0, 2.2 - math.exp(0.25), 2.2 - math.exp(0.5), 0.1, 0.1, 0.1, 0.1]
    for item in plan.items:
        d = item.prompt.distribution
        assert item.budget == want_budget[d] == ctrl.budget(0, d)  # what score asked per prompt
        assert item.max_tokens == want_max[d] == ctrl.max_tokens_for(0, d)
        assert item.temperatures == tuple(ctrl.temperatures(0, item.max_tokens))  # what train_request asked
        assert list(item.temperatures) == pytest.approx(hand[:item.max_tokens], abs=1e-12)
    # what went out: each request with its item's max_tokens and temperatures, each answer scored
    # against its prompt's budget
    train = tr.rollout_pool.requests[:len(plan.items)]
    assert [(r.max_tokens, r.temperatures) for r in train] == [(it.max_tokens, it.temperatures) for it in plan.items]
    assert budgets[0] == [it.budget for it in plan.items for _ in range(tr.cfg.rollout.n)]
    # later steps: the schedules move (linear budget, longer EAD decay)
    later = ctrl.plan(2, num_prompts=4)
    for item in later.items:
        d = item.prompt.distribution
        # step 2 of 0..3: add1 6 - 4 * 2/3 = 3.33, add2 4 - 2 * 2/3 = 2.67, both rounded to 3
        assert item.budget == ctrl.budget(2, d) == 3 and item.max_tokens == 4
        assert item.temperatures == tuple(ctrl.temperatures(2, item.max_tokens))


def test_a_guided_reroll_gets_its_plan_items_budget_and_temperatures(tmp_path):
    from test_reward_failures import _collect

    tr = _trainer(tmp_path, ["trainer.prompts_per_step=1", "curriculum.guidance.max_rerolls=1", BUDGET,
                             "env.distributions=[add1, add2]", "trainer.steps=4", "algo.tis_cap=2.0",
                             "curriculum.ead={warm_tokens: 1, d0: 0.2, alpha: 0.02}"],
                  rewards=("exact_match", "length_budget"))
    budgets = []
    score = tr.rewards.score
    tr.rewards.score = lambda p, c, cols: budgets.append(cols["budget"]) or score(p, c, cols)
    (g,), _, _ = _collect(tr, [["x", "y", "x", "y"], ["ANS", "y", "y", "ANS"]])  # all wrong, then re-rolled
    assert g.off_policy
    first, reroll = tr.rollout_pool.requests
    assert (reroll.max_tokens, reroll.temperatures) == (first.max_tokens, first.temperatures)
    assert first.temperatures is not None
    want = {"add1": 6, "add2": 4}[g.prompt.distribution]
    assert budgets == [[want] * 4, [want] * 4]


def test_the_row_is_the_old_curriculum_line(tmp_path):
    _, _, _, tr, line = one_step(tmp_path, 4, t=1)
    assert list(line) == OLD_KEYS
    assert list(line["d3s"]) == ["n", "k", "answers_kept_frac", "tokens_kept_frac"]
    assert (line["step"], line["policy_version"], line["lag"], line["d3s"]["tokens_kept_frac"]) == (1, 1, 0, 0.5)
    # the old trainer's line, built the old way from the controller's (untyped) record
    old = dict(tr.controller.record(1))
    old = {**old, "policy_version": 1, "lag": 0, "alerts": tr.controller.current_alerts(CurriculumRow.from_json(old))}
    old["d3s"] = {**old["d3s"], "answers_kept_frac": line["d3s"]["answers_kept_frac"], "tokens_kept_frac": 0.5}
    assert json.dumps(old) == json.dumps(line)
    # a reader goes through from_json: the line back, unchanged
    row = CurriculumRow.from_json(line)
    assert row.to_json() == line and json.dumps(row.to_json()) == json.dumps(line)
    assert row.d3s == D3SRow(**line["d3s"]) and row.probabilities() == {
        d: v["prob"] for d, v in line["distributions"].items()}


def test_from_json_reads_older_and_newer_rows():
    old = {"step": 3, "sampler": "ucb", "distributions": {"a": {"prob": 0.7}, "b": {"prob": 0.3}},
           "budget": None, "hints": None, "filter": None, "d3s": {"n": 0.5, "k": 0.5}}  # before per-prompt keys
    row = CurriculumRow.from_json(old)
    assert (row.step, row.prompts, row.greso, row.learnability, row.alerts, row.policy_version) == \
        (3, None, None, None, [], None)
    assert row.d3s == D3SRow(0.5, 0.5) and row.d3s.answers_kept_frac is None
    assert row.probabilities() == {"a": 0.7, "b": 0.3}
    assert CurriculumRow.from_json({"step": 0}).distributions == {}
    # unknown keys (a newer version's, or a simulation's additions) are kept and written back last
    newer = {**CurriculumRow(step=1, sampler="uniform").to_json(), "student": {"a": 0.1}, "mean_success": 0.1}
    back = CurriculumRow.from_json(newer)
    assert back.extra == {"student": {"a": 0.1}, "mean_success": 0.1}
    assert json.dumps(back.to_json()) == json.dumps(newer)
    for bad in ({}, {"step": "1"}, {"step": True}, [1]):
        with pytest.raises(ValueError, match="step"):
            CurriculumRow.from_json(bad)
