"""SPEED-RL (docs/curriculum.md, "SPEED-RL"): the pure rule (band, round sizing, merging) and
Trainer.collect on the real Trainer pieces (plan, encode, score, advantages, DAPO filter) with only the rollout pool replaced by
a script of answer texts (ScriptedPool: each request gets the next row, whose length must be the
request's n; "ANS" is the prompt's right answer)."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlcurr.config import load_config
from rlcurr.curriculum.speed import (SpeedExhausted, check_speed_config, in_band, merge, pass_rate, screen_cap,
                                     screen_size)
from rlcurr.errors import UserError
from rlcurr.types import Completion, Prompt, ScoredGroup
from test_reward_failures import _collect, _trainer

ROOT = Path(__file__).resolve().parent.parent


def _group(rewards, correct=None, uid="u", failed=0):
    comps = [Completion(token_ids=[i], logprobs=[0.0], finish_reason="stop", text=str(i)) for i in range(len(rewards))]
    return ScoredGroup(prompt=Prompt(uid=uid, distribution="a", question="q", answer="a"), prompt_ids=[1, 2],
                       completions=comps, rewards=list(rewards), reward_parts={"r": list(rewards)}, max_tokens=4,
                       correct=correct, num_failed=failed)


# ----------------------------------------------------------------------------- the pure rule


def test_pass_rate_uses_the_verifier_when_set_else_reward_above_zero():
    assert pass_rate(_group([0.5, 0.5, 0.0, 0.5])) == 0.75                       # reward > 0
    assert pass_rate(_group([0.5, 0.5, 0.0, 0.5], [True, False, False, False])) == 0.25  # correct wins
    assert pass_rate(_group([])) is None


def test_band_is_strict():
    assert not in_band(0.0, 0.0, 1.0) and not in_band(1.0, 0.0, 1.0)  # all wrong / all right: rejected
    assert in_band(0.25, 0.0, 1.0) and in_band(0.75, 0.0, 1.0)
    assert not in_band(0.25, 0.25, 1.0) and in_band(0.5, 0.25, 0.75) and not in_band(0.75, 0.25, 0.75)
    assert not in_band(None, 0.0, 1.0)  # no scored answer


def test_round_sizing():
    assert screen_cap(16, 8, 4) == 32   # 32 prompts x 4 screening answers = 16 groups x 8 answers
    assert screen_cap(4, 6, 5) == 4     # 4 * 6 // 5 = 4 (never below prompts_per_step)
    assert screen_size(missing=3, kept=2, screened=8, cap=32) == 12   # 3 / (2/8)
    assert screen_size(missing=3, kept=1, screened=16, cap=32) == 32  # 48, capped
    assert screen_size(missing=1, kept=3, screened=4, cap=32) == 2    # ceil(4/3)
    assert screen_size(missing=5, kept=0, screened=16, cap=32) == 32  # nothing kept yet


def test_merge_keeps_screening_answers_first_and_sums_failures():
    a = _group([1.0, 0.0], [True, False], failed=1)
    b = _group([0.0, 0.0, 1.0], [False, False, True])
    m = merge(a, b)
    assert m.rewards == [1.0, 0.0, 0.0, 0.0, 1.0] and m.reward_parts == {"r": m.rewards}
    assert m.correct == [True, False, False, False, True] and m.num_failed == 1 and m.n == 5
    assert m.advantages is None and m.prompt_ids == [1, 2] and not m.off_policy
    with pytest.raises(ValueError):
        merge(a, _group([1.0], uid="other"))


def test_config_checks():
    ok = load_config(ROOT / "recipes" / "chain_speed.yaml")
    assert (ok.curriculum.speed.screen_n, ok.curriculum.speed.low, ok.curriculum.speed.high,
            ok.curriculum.speed.max_rounds) == (4, 0.0, 1.0, 8)
    check_speed_config(ok)
    with pytest.raises(UserError, match=r"curriculum\.speed\.screen_n=8.*rollout\.n=8"):
        check_speed_config(load_config(ROOT / "recipes" / "chain_speed.yaml", ["curriculum.speed.screen_n=8"]))
    with pytest.raises(UserError, match=r"curriculum\.speed cannot be combined with curriculum\.guidance"):
        check_speed_config(load_config(ROOT / "recipes" / "chain_speed.yaml", ["curriculum.guidance={}"]))
    with pytest.raises(UserError, match="speed.low must be < speed.high"):
        load_config(ROOT / "recipes" / "chain_speed.yaml", ["curriculum.speed.low=0.5", "curriculum.speed.high=0.5"])


# ----------------------------------------------------------------------------- Trainer.collect


def _speed_trainer(tmp_path, overrides=(), rewards=("exact_match",)):
    return _trainer(tmp_path, ["trainer.prompts_per_step=2", "rollout.n=6", "curriculum.speed.screen_n=2",
                               *overrides], rewards=rewards)


def test_screening_then_completion_fills_the_batch(tmp_path):
    tr = _speed_trainer(tmp_path)
    batch, generated, stats = _collect(tr, [
        ["ANS", "x"],              # round 0, P0: pass rate 1/2 -> accepted
        ["x", "x"],                # round 0, P1: 0 -> rejected
        ["ANS", "x", "x", "x"],    # P0 completed: 4 more answers
        # round 1: 1 missing, 1 kept of 2 screened -> screen_size(1, 1, 2, cap 6) = 2 prompts
        ["ANS", "ANS"],            # P2: 1 -> rejected
        ["x", "ANS"],              # P3: 1/2 -> accepted
        ["ANS", "ANS", "x", "x"],  # P3 completed
    ])
    assert [r.n for r in tr.rollout_pool.requests] == [2, 2, 4, 2, 2, 4]
    assert tr.rollout_pool.script == []
    # the batch: two groups of 6 = screening + completion answers, advantages over all 6
    assert [g.rewards for g in batch] == [[1, 0, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]]
    assert [g.correct for g in batch] == [[True, False, True, False, False, False],
                                          [False, True, True, True, False, False]]
    # P0: mean 1/3, std sqrt(2)/3 -> (2/3) / (sqrt(2)/3) = sqrt(2), (-1/3) / (sqrt(2)/3) = -1/sqrt(2)
    r2 = math.sqrt(2)
    assert batch[0].advantages == pytest.approx([r2, -r2 / 2, r2, -r2 / 2, -r2 / 2, -r2 / 2], abs=1e-5)
    assert batch[1].advantages == pytest.approx([-1, 1, 1, 1, -1, -1], abs=1e-5)  # mean 1/2, std 1/2
    assert not any(g.off_policy for g in batch)
    # observe gets each on-policy group once, in plan order: P0 whole, P1 screening only, P2, P3 whole
    assert [g.n for g in generated] == [6, 2, 2, 6]
    assert generated[0] is batch[0] and generated[3] is batch[1]
    assert generated[1].rewards == [0.0, 0.0] and generated[2].rewards == [1.0, 1.0]
    assert all(g.advantages is not None for g in generated)
    # every answer generated counts, screening answers included: 4 x 2 + 2 x 4 = 16, 2 tokens each
    assert stats == {"groups_dropped": 0, "rollout/answers_generated": 16, "rollout/tokens_generated": 32,
                     "rollout/groups_generated": 4, "rollout/zero_variance_groups": 2,
                     "speed/screened": 4, "speed/accepted": 2, "speed/completed": 2, "speed/rounds": 2}
    tr.controller.observe(0, generated)
    assert sum(d["planned"] for d in tr.controller.record(0)["distributions"].values()) == 4


def test_only_the_missing_accepted_prompts_are_completed(tmp_path):
    tr = _speed_trainer(tmp_path)
    batch, generated, stats = _collect(tr, [
        ["x", "ANS"], ["x", "x"], ["x", "x", "x", "ANS"],  # round 0: P0 accepted and completed, P1 rejected
        ["ANS", "x"], ["ANS", "x"], ["ANS", "x", "x", "x"],  # round 1: P2 and P3 accepted, only P2 needed
    ])
    assert [r.n for r in tr.rollout_pool.requests] == [2, 2, 4, 2, 2, 4]
    assert [g.n for g in generated] == [6, 2, 6, 2] and len(batch) == 2  # P3 observed with its 2 answers
    assert (stats["speed/accepted"], stats["speed/completed"], stats["rollout/zero_variance_groups"]) == (3, 2, 1)


def test_with_dapo_a_zero_variance_completed_group_is_dropped(tmp_path):
    # training reward: flaky (0.5 for any answer but "right"/"wrong"); pass = the verifier's `correct`
    tr = _speed_trainer(tmp_path, ["trainer.prompts_per_step=1", "curriculum.dynamic_sampling={}"],
                        rewards=("flaky",))
    batch, generated, stats = _collect(tr, [
        ["ANS", "z"],              # pass rate 1/2 (verifier) -> accepted, rewards [0.5, 0.5]
        ["z", "ANS", "z", "z"],    # completed: all 6 rewards 0.5 -> zero variance, DAPO drops it
        ["ANS", "wrong"],          # round 1 (nothing kept yet: cap = max(1, 1 * 6 // 2) = 3 prompts)
        ["wrong", "wrong"],
        ["ANS", "ANS"],
        ["right", "z", "z", "z"],  # round 1, prompt 0 completed: [0.5, 0, 1, 0.5, 0.5, 0.5] -> kept
    ])
    assert [r.n for r in tr.rollout_pool.requests] == [2, 4, 2, 2, 2, 4]
    assert batch[0].rewards == [0.5, 0.0, 1.0, 0.5, 0.5, 0.5]
    assert [g.n for g in generated] == [6, 6, 2, 2]
    assert stats["groups_dropped"] == 1 and stats["rollout/zero_variance_groups"] == 3
    assert (stats["speed/rounds"], stats["filter/rounds"], stats["filter/groups_generated"]) == (2, 2, 4)
    assert (stats["speed/screened"], stats["speed/accepted"], stats["speed/completed"]) == (4, 2, 2)
    assert tr.controller.record(0)["filter"]["rounds"] == 2  # observe_filter once per round


def test_exhausted_rounds_stop_the_run_with_a_clear_error(tmp_path):
    tr = _speed_trainer(tmp_path, ["curriculum.speed.max_rounds=1"])
    with pytest.raises(SpeedExhausted) as err:
        _collect(tr, [["x", "x"], ["ANS", "x"], ["x", "ANS", "x", "x"]])
    assert (err.value.rounds, err.value.have, err.value.need, err.value.screened, err.value.accepted) == (1, 1, 2, 2, 1)
    assert isinstance(err.value, UserError) and "curriculum.speed.max_rounds" in str(err.value)


def test_guidance_with_speed_is_refused_before_the_run_starts(tmp_path):
    with pytest.raises(UserError, match="curriculum.guidance"):
        _speed_trainer(tmp_path, ["curriculum.guidance={}"])
    assert not (tmp_path / "run").exists()


def test_generation_metrics_without_speed_or_dapo(tmp_path):
    tr = _trainer(tmp_path, ["trainer.prompts_per_step=2"], rewards=("exact_match",))
    _, generated, stats = _collect(tr, [["ANS", "x", "x", "x"], ["x", "x", "x", "x"]])
    assert (stats["rollout/groups_generated"], stats["rollout/zero_variance_groups"]) == (2, 1)
    assert not any(k.startswith(("speed/", "filter/")) for k in stats)


# ----------------------------------------------------------------------------- held-out accuracy


def test_observe_eval_passes_the_per_distribution_accuracies():
    from rlcurr.trainer import Trainer

    seen = []
    fake = SimpleNamespace(controller=SimpleNamespace(observe_eval=lambda t, acc: seen.append((t, acc))))
    Trainer.observe_eval(fake, 4, {"eval/accuracy/add1": 0.5, "eval/accuracy/add2": 0.25, "eval/accuracy_mean": 0.4})
    assert seen == [(4, {"add1": 0.5, "add2": 0.25})]
