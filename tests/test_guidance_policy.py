"""Guide-GRPO decisions (docs/curriculum.md, "Guide-GRPO"): which groups get a hinted re-roll, which
re-rolls are kept."""

import json

import pytest

from rlcurr.curriculum.config import GuidanceConfig
from rlcurr.curriculum.guidance import GuidancePolicy
from rlcurr.types import Completion, Prompt, ScoredGroup


def group(rewards, dist="d", hint="h", parts=None, off_policy=False, correct=None):
    c = Completion(token_ids=[1], logprobs=[0.0], finish_reason="stop", text="x")
    return ScoredGroup(prompt=Prompt(uid="u", distribution=dist, question="q", answer="a", hint=hint),
                       prompt_ids=[1], completions=[c] * len(rewards), rewards=list(rewards),
                       reward_parts=parts or {}, max_tokens=4, off_policy=off_policy, correct=correct)


def test_needs_hint_only_when_all_answers_fail():
    p = GuidancePolicy(GuidanceConfig(), ["d"])  # threshold 0.001: one success in 8 is 0.125
    assert p.needs_hint(group([0, 0, 0, 0]))
    assert not p.needs_hint(group([0, 0, 0, 1]))
    assert p.needs_hint(group([-0.5, 0, 0]))  # success means reward > 0
    loose = GuidancePolicy(GuidanceConfig(success_threshold=0.25), ["d"])
    assert loose.needs_hint(group([0, 0, 0, 1]))  # 0.25 <= 0.25


def test_success_can_come_from_one_reward_function():
    p = GuidancePolicy(GuidanceConfig(success_reward="correct"), ["d"])
    # total reward is positive thanks to a format bonus, but nothing is correct -> needs a hint
    g = group([0.1, 0.1], parts={"correct": [0.0, None], "format": [0.1, 0.1]})
    assert p.needs_hint(g)
    with pytest.raises(KeyError, match="success_reward"):
        p.needs_hint(group([0, 0], parts={"format": [0, 0]}))


def test_keep_requires_mixed_outcomes():
    p = GuidancePolicy(GuidanceConfig(), ["d"])
    assert p.keep(group([0, 1, 0]))
    assert not p.keep(group([0, 0, 0]))
    assert not p.keep(group([1, 1, 1]))  # solved by every hinted answer: no signal either


def test_keep_and_select_use_the_verifier_not_the_total_reward():
    """A format/length term makes an all-wrong group's rewards differ (and > 0): that is not a
    success. `ScoredGroup.correct` (the verifier > 0) decides; rewards only when it is None."""
    p = GuidancePolicy(GuidanceConfig(), ["d"])
    # rewards 0.2 / 0 / 0.1 (format bonus, length penalty) but every answer wrong
    wrong = group([0.2, 0.0, 0.1], correct=[False, False, False])
    assert not p.keep(wrong)          # today: kept because the rewards differ
    assert p.needs_hint(wrong)        # today: 2 of 3 rewards > 0 -> "solved", never re-rolled
    assert p.select([wrong]) == [0]
    assert p.keep(group([0.2, 0.2, 1.2], correct=[False, False, True]))  # one right: mixed
    assert not p.keep(group([1.2, 1.1, 1.0], correct=[True, True, True]))  # all right: no signal
    assert not p.record(wrong)
    assert p.report()["step"]["d"]["solved"] == 0 and p.report()["step"]["d"]["kept"] == 0
    # correct=None (a trainer that does not set it): rewards > 0, as before
    assert p.keep(group([0.2, 0.0, 0.1]))


def test_select_respects_cap_hints_and_off_policy():
    p = GuidancePolicy(GuidanceConfig(max_rerolls=2), ["a", "b"])
    groups = [
        group([0, 0], "a"),               # 0: failed -> re-roll
        group([1, 0], "a"),               # 1: fine
        group([0, 0], "b", hint=None),    # 2: failed, no hint
        group([0, 0], "b"),               # 3: failed -> re-roll
        group([0, 0], "b"),               # 4: failed, over the cap
        group([0, 0], "a", off_policy=True),  # 5: already a hinted group: ignored
    ]
    assert p.select(groups) == [0, 3]
    s = p.report()["step"]
    assert s["a"]["groups"] == 2 and s["a"]["failed"] == 1
    assert s["b"] == {"groups": 3, "failed": 3, "rerolled": 0, "kept": 0, "solved": 0,
                      "skipped_no_hint": 1, "skipped_cap": 1, "solved_rate": None}


def test_record_counts_and_state_round_trip():
    p = GuidancePolicy(GuidanceConfig(), ["a"])
    assert p.record(group([0, 1, 0], "a")) is True
    assert p.record(group([1, 1, 1], "a")) is False  # solved but not kept
    assert p.record(group([0, 0, 0], "a")) is False
    s = p.report()["total"]["a"]
    assert (s["rerolled"], s["kept"], s["solved"]) == (3, 1, 2)
    assert s["solved_rate"] == pytest.approx(2 / 3)
    q = GuidancePolicy(GuidanceConfig(), ["a"])
    q.load_state_dict(json.loads(json.dumps(p.state_dict())))
    assert q.report() == p.report()
    p.begin_step()
    assert p.report()["step"]["a"]["rerolled"] == 0 and p.report()["total"]["a"]["rerolled"] == 3


def test_observe_step_is_the_batch_form_of_record():
    p, q = GuidancePolicy(GuidanceConfig(), ["a"]), GuidancePolicy(GuidanceConfig(), ["a"])
    rerolled = [group([0, 1, 0], "a"), group([1, 1, 1], "a"), group([0, 0, 0], "a")]
    kept = [g for g in rerolled if p.record(g)]
    q.observe_step(rerolled, kept)
    assert q.report() == p.report()
