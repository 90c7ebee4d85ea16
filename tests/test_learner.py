"""The Learner without Ray: gradient accumulation is exact, LoRA trains adapters only, and a
positive advantage raises the probability of its answer."""

import copy

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, LoraConfig, TinyModelConfig
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from rlcurr.types import TrainSample


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _samples():
    # Different response lengths, so token-mean and seq-mean weightings differ.
    return [TrainSample(prompt_ids=[5, 6, 76], response_ids=list(range(10, 10 + k)), advantage=a, rollout_logprobs=[])
            for k, a in [(1, 1.0), (3, -0.5), (2, 0.25), (5, -1.0), (4, 0.75), (2, -0.5)]]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_accumulate_to_the_full_batch_update(model_dir, agg):
    whole = Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(loss_agg=agg, micro_batch_size=64), 10)
    parts = Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(loss_agg=agg, micro_batch_size=2), 10)
    # SGD, so parameter changes are lr * gradient (Adam's first step is lr * sign(g), which turns
    # fp noise in near-zero gradient entries into full-size differences).
    for lrn in (whole, parts):
        lrn.optimizer = torch.optim.SGD([p for p in lrn.model.parameters() if p.requires_grad], lr=1.0)
    m1, m2 = whole.train_step(_samples(), 0), parts.train_step(_samples(), 0)
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-4)
    for (n, p1), (_, p2) in zip(whole.model.named_parameters(), parts.model.named_parameters()):
        assert torch.allclose(p1, p2, atol=1e-5), n


def test_positive_advantage_raises_its_answer(model_dir):
    learner = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(), 10)
    good = TrainSample([5, 6, 76], [20, 21], 1.0, [])
    bad = TrainSample([5, 6, 76], [30, 31], -1.0, [])
    before = [sum(lp) for lp in learner.logprobs([good, bad])]
    for t in range(3):
        learner.train_step([good, bad], t)
    after = [sum(lp) for lp in learner.logprobs([good, bad])]
    assert after[0] > before[0] and after[1] < before[1]


def test_lora_trains_adapters_only_and_syncs_merged_weights(model_dir):
    learner = Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(), 10,
                      lora_cfg=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    base_before = {n: p.detach().clone() for n, p in learner.model.named_parameters() if "lora_" not in n}
    merged_before = dict(learner.named_weights())
    learner.train_step(_samples(), 0)
    learner.train_step(_samples(), 1)
    for n, p in learner.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), f"base weight {n} changed"
    merged_after = dict(learner.named_weights())
    assert set(merged_after) == set(merged_before)  # plain HF names, what the engines load
    changed = [k for k in merged_after if not torch.equal(merged_after[k], merged_before[k])]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_kl_to_reference_is_zero_before_any_update(model_dir):
    learner = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(kl_coef=0.1), 10)
    m = learner.train_step(_samples(), 0)
    assert m["kl"] == pytest.approx(0.0, abs=1e-7)
    m = learner.train_step(_samples(), 1)
    assert m["kl"] > 0


def test_on_policy_step_reuses_the_training_forward_for_old_logprobs(model_dir):
    """epochs = mini_batches = 1: old logprobs come from the training forward (no separate pass);
    the update and the engine/learner parity metric equal those of the separate-pass path."""
    fast = Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(micro_batch_size=2), 10)
    slow = Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(micro_batch_size=2), 10)
    slow.old_from_training_forward = lambda samples: False
    samples = _samples()
    # engine logprobs = the learner's own, shifted by 0.01 per token: parity mean must be 0.01
    exact = fast.logprobs(samples)
    samples = [TrainSample(s.prompt_ids, s.response_ids, s.advantage, [x + 0.01 for x in lp])
               for s, lp in zip(samples, exact)]
    calls = []
    fast.logprobs = lambda *a, **k: calls.append(1) or Learner.logprobs(fast, *a, **k)
    m_fast, m_slow = fast.train_step(samples, 0), slow.train_step(samples, 0)
    assert calls == []                                   # no separate forward on the fast path
    assert m_fast["rollout/logprob_abs_diff_mean"] == pytest.approx(0.01, abs=1e-5)
    assert m_fast["rollout/logprob_abs_diff_mean"] == pytest.approx(m_slow["rollout/logprob_abs_diff_mean"], abs=1e-6)
    assert m_fast["grad_norm"] == pytest.approx(m_slow["grad_norm"], rel=1e-5)
    for (n, p1), (_, p2) in zip(fast.model.named_parameters(), slow.model.named_parameters()):
        assert torch.allclose(p1, p2, atol=1e-6), n


def test_power_schedule_exponent_reaches_the_learner(model_dir):
    # power schedule, warmup W = 2, exponent b = 1: after warm-up m(t) = ((t + 1) / W) ** -b, so at
    # step t = 7 the LR is 1e-2 * (8 / 2) ** -1 = 2.5e-3 (the default b = 0.51 would give ~4.9e-3).
    from rlcurr.config import ScheduleConfig

    schedule = ScheduleConfig(name="power", warmup_steps=2, power_exponent=1.0)
    learner = Learner(model_dir, LearnerConfig(lr=1e-2, schedule=schedule), AlgoConfig(), 10)
    assert learner.set_lr(7) == pytest.approx(2.5e-3)
