"""Failed rewards (reward.on_error: none) do not train as zeros, and `ScoredGroup.correct`, on the
real Trainer pieces (plan, encode, score, guide, filter, advantages, samples) with only the
rollout pool replaced by a script of answer texts (no Ray, no generation)."""

import math
import re
import time
from pathlib import Path

import pytest

from rlcurr.config import apply_overrides, build_config, load_yaml
from rlcurr.metrics import PhaseTimer
from rlcurr.types import Completion

ROOT = Path(__file__).resolve().parent.parent

REWARD_FILE = '''
import time

def flaky(prompts, completions, **kwargs):
    """1 for "right", 0 for "wrong", 0.5 for anything else; raises on "boom", hangs on "slow"."""
    if len(completions) > 1 and "boom" in completions:
        raise ValueError("boom in the batch")
    out = []
    for c in completions:
        if c == "boom":
            raise ValueError("boom")
        if c == "slow":
            time.sleep(3)
        out.append({"right": 1.0, "wrong": 0.0}.get(c, 0.5))
    return out
'''


def _trainer(tmp_path, overrides=(), rewards=("flaky",)):
    from rlcurr.trainer import Trainer

    (tmp_path / "flaky.py").write_text(REWARD_FILE)
    data = load_yaml(ROOT / "recipes" / "quickstart.yaml")
    data["name"] = "quickstart"
    data = apply_overrides(data, [
        f"trainer.output_dir={tmp_path / 'run'}", "model.warmup.steps=0", "model.tiny.hidden_size=32",
        "model.tiny.num_layers=1", "model.tiny.intermediate_size=64", "rollout.n=4",
        "reward.on_error=none", "reward.timeout_s=1.0", "logging.progress=false", "logging.tensorboard=false",
        *overrides])
    data["rewards"] = [{"name": f"{tmp_path / 'flaky.py'}:flaky" if r == "flaky" else r} for r in rewards]
    return Trainer(build_config(data), log=lambda *_: None)


class ScriptedPool:
    """`generate` answers each request with the next row of `script`; "ANS" stands for the
    prompt's right answer (the prompt is "a+b=", hinted or not)."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.requests = tokenizer, list(script), []

    def generate(self, requests, prompts=None):
        out = []
        for req in requests:
            self.requests.append(req)
            a, b = map(int, re.findall(r"(\d+)\+(\d+)=", self.tokenizer.decode(req.prompt_ids))[-1])
            row = self.script.pop(0)
            assert len(row) == req.n
            out.append([Completion(token_ids=[7, 8], logprobs=[-0.5, -0.5], finish_reason="stop",
                                   text=str(a + b) if t == "ANS" else t) for t in row])
        return out


def _collect(trainer, script, t=0):
    trainer.rollout_pool = ScriptedPool(trainer.tokenizer, script)
    return trainer.collect(t, PhaseTimer())


def test_failed_answers_are_masked_out_of_advantages_samples_and_observe(tmp_path):
    from rlcurr.trainer import to_train_samples

    trainer = _trainer(tmp_path, ["trainer.prompts_per_step=3"])
    t0 = time.monotonic()
    batch, generated, stats = _collect(trainer, [
        ["right", "boom", "wrong", "right"],  # A: scored [1, 0, 1]
        ["boom", "boom", "right", "boom"],    # B: one scored answer -> dropped
        ["right", "wrong", "wrong", "slow"],  # C: scored [1, 0, 0]; "slow" is the batch's last answer
    ])
    assert time.monotonic() - t0 < 2.5  # the hung answer was abandoned after timeout_s (1 s)
    # A: mean 2/3, population std sqrt((2 (1/3)^2 + (2/3)^2) / 3) = sqrt(2/9) = 0.4714
    #    -> (1 - 2/3) / 0.4714 = +0.7071, (0 - 2/3) / 0.4714 = -1.4142
    # C: mean 1/3, same std -> (2/3) / 0.4714 = +1.4142, (-1/3) / 0.4714 = -0.7071
    # (training the failures as 0 would give A = [1, 0, 0, 1] -> +-1, and keep B)
    r2 = math.sqrt(2)
    want = [r2 / 2, -r2, r2 / 2, r2, -r2 / 2, -r2 / 2]
    samples = to_train_samples(batch)
    assert len(samples) == 6
    assert all(abs(s.advantage - w) < 1e-5 for s, w in zip(samples, want)), [s.advantage for s in samples]
    assert [s.reward for s in samples] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert [g.rewards for g in batch] == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    # the curriculum observes the groups on their scored answers; B has no group-relative signal
    assert [g.rewards for g in generated] == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    trainer.controller.observe(0, generated)
    # logged per step: answers, not (answer, function) pairs: 1 + 3 errors, 1 timeout; B dropped
    assert trainer.reward_failure_metrics() == {"reward/errors": 4, "reward/timeouts": 1, "reward/groups_dropped": 1}
    assert [g.num_failed for g in batch] == [1, 1]
    assert stats["rollout/answers_generated"] == 12  # the failed answers were generated all the same


def test_dapo_judges_a_group_on_its_scored_answers(tmp_path):
    trainer = _trainer(tmp_path, ["trainer.prompts_per_step=1", "curriculum.dynamic_sampling.max_rounds=2"])
    # round 1: scored [1, 1, 1] -> zero variance, dropped (as [1, 0, 1, 1] it would look mixed)
    # round 2: [1, 0, 0, 0] -> kept
    batch, generated, stats = _collect(trainer, [["right", "boom", "right", "right"],
                                                 ["right", "wrong", "wrong", "wrong"]])
    assert stats["filter/rounds"] == 2 and stats["groups_dropped"] == 1
    assert [g.rewards for g in batch] == [[1.0, 0.0, 0.0, 0.0]]
    assert trainer.reward_failure_metrics() == {"reward/errors": 1, "reward/timeouts": 0, "reward/groups_dropped": 0}


def test_correct_is_the_verifiers_judgement_not_the_training_reward(tmp_path):
    trainer = _trainer(tmp_path, ["trainer.prompts_per_step=2"])  # training reward: flaky only
    batch, generated, _ = _collect(trainer, [["ANS", "x", "ANS", "y"], ["z", "z", "ANS", "wrong"]])
    # flaky gives every non-special answer 0.5; exact_match (arith's verifier) says which are right
    assert [g.rewards for g in batch] == [[0.5] * 4, [0.5, 0.5, 0.5, 0.0]]
    assert [g.correct for g in batch] == [[True, False, True, False], [False, False, True, False]]


def test_correct_reuses_the_verifier_when_it_is_a_training_reward(tmp_path):
    trainer = _trainer(tmp_path, ["trainer.prompts_per_step=1"], rewards=("flaky", "exact_match"))

    def not_again(*a, **k):
        raise AssertionError("the verifier ran a second time")

    trainer.verifier.score = not_again
    batch, _, _ = _collect(trainer, [["ANS", "wrong", "boom", "right"]])
    # exact_match parts [1, 0, -, 0] for the 3 scored answers; totals flaky + exact_match
    assert batch[0].rewards == [1.5, 0.0, 1.0]
    assert batch[0].correct == [True, False, False]


def test_guided_rerolls_carry_correct(tmp_path):
    trainer = _trainer(tmp_path, ["trainer.prompts_per_step=1", "curriculum.guidance.max_rerolls=1"],
                       rewards=("exact_match",))
    pool_script = [["x", "y", "x", "y"],      # all wrong -> re-rolled with the hint
                   ["ANS", "y", "y", "ANS"]]  # the hinted re-roll: mixed -> kept
    batch, generated, _ = _collect(trainer, pool_script)
    (g,) = batch
    assert g.off_policy and g.rewards == [1.0, 0.0, 0.0, 1.0]
    assert g.correct == [True, False, False, True]
    assert generated[0].correct == [False] * 4
    assert g.advantages == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-5)  # mean 1/2, std 1/2
