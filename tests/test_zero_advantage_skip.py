"""Answers whose advantage is exactly 0 (GRPO's all-equal groups) skip the training
forward/backward while the loss keeps the whole mini-batch's denominator: the update is the one
without the skip (algo.skip_zero_advantage)."""

import dataclasses

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from rlcurr.types import TrainSample

PROMPT = [5, 6, 76]
HINTED = [5, 6, 40, 41, 42, 76]


@pytest.fixture(autouse=True)
def _one_answer_per_row(monkeypatch):
    """No packing and no shared prompts: the forward-counting hooks below count rows as answers."""
    from rlcurr.learner import batching

    monkeypatch.setattr(batching, "best_packing", lambda lengths: None)
    monkeypatch.setattr(batching, "shared_prefix_ok", lambda model, longest: False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


# (answer length, advantage): 8 answers, 4 of them with advantage exactly 0, holding 3 + 5 + 2 + 2
# = 12 of the 22 answer tokens (so token-mean's denominator, 22, is not the trained answers' 10).
MIXED = [(1, 1.0), (3, 0.0), (2, -0.5), (5, 0.0), (4, 0.75), (2, 0.0), (3, -0.5), (2, 0.0)]


def _samples(spec=MIXED, shift=0):
    return [TrainSample(prompt_ids=PROMPT, response_ids=[(7 * j + 3 * t + shift) % 90 + 10 for t in range(k)],
                        advantage=a, rollout_logprobs=[]) for j, (k, a) in enumerate(spec)]


def _learner(model_dir, skip: bool, **algo):
    cfg = dict(micro_batch_size=2, skip_zero_advantage=skip)
    cfg.update(algo)
    return Learner(model_dir, LearnerConfig(lr=1e-3, weight_decay=0.1), AlgoConfig(**cfg), 10)


def _max_weight_diff(a, b) -> float:
    return max((p1 - p2).abs().max().item() for p1, p2 in zip(a.model.parameters(), b.model.parameters()))


def _count_rows(learner) -> list[int]:
    """Answers per forward pass of the policy model (appended by a pre-hook)."""
    rows: list[int] = []
    learner.model.register_forward_pre_hook(lambda _m, _a, kw: rows.append(kw["input_ids"].shape[0]),
                                            with_kwargs=True)
    return rows


def _optimizer(learner, kind: str):
    params = [p for p in learner.model.parameters() if p.requires_grad]
    if kind == "sgd":  # the update is the gradient itself: the tightest check
        learner.optimizer = torch.optim.SGD(params, lr=1.0)
    else:
        # AdamW with eps 1e-5 (default 1e-8): skipping regroups the micro-batches, which changes
        # float32 summation order (~1e-10 in a gradient entry), and Adam's early steps
        # g / (|g| + eps) turn such noise in entries with |g| ~ eps into lr-sized differences
        # (measured with eps 1e-6: up to 5e-7; the default passes with mini_batches 1 only).
        learner.optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, eps=1e-5)
    return learner


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
@pytest.mark.parametrize("mini_batches", [1, 2])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_skip_takes_the_same_steps(model_dir, agg, mini_batches, opt):
    """Two consecutive optimizer steps (AdamW: momentum, weight decay), micro-batches of 2 answers:
    the same weights with and without the skip, for every aggregation. mini_batches 1 reuses the
    training forward as the old logprobs; 2 scores them in a separate pass (two steps per call)."""
    on = _optimizer(_learner(model_dir, True, loss_agg=agg, mini_batches=mini_batches), opt)
    off = _optimizer(_learner(model_dir, False, loss_agg=agg, mini_batches=mini_batches), opt)
    rows_on, rows_off = _count_rows(on), _count_rows(off)
    for step in range(2):
        m_on, m_off = on.train_step(_samples(shift=step), step), off.train_step(_samples(shift=step), step)
        assert m_on["policy_loss"] == pytest.approx(m_off["policy_loss"], abs=1e-6)
        assert m_on["grad_norm"] == pytest.approx(m_off["grad_norm"], rel=1e-5)
        assert m_on["learner/skipped_answers_frac"] == pytest.approx(0.5)  # 4 of 8 answers
        assert m_off["learner/skipped_answers_frac"] == 0.0
    assert _max_weight_diff(on, off) <= (1e-8 if opt == "sgd" else 1e-6)  # measured: <= 4e-9 / 6e-8
    assert _max_weight_diff(on, _learner(model_dir, True, loss_agg=agg)) > 1e-5  # the steps did move them
    # Rows forwarded per step: without the skip every answer of every step (8, plus 8 for the old
    # logprobs with two mini-batches); with it the 4 non-zero ones in the training forward.
    extra_old = 8 if mini_batches == 2 else 0
    assert sum(rows_off) == 2 * (8 + extra_old)
    assert sum(rows_on) == 2 * (4 + extra_old)


def test_all_zero_advantages_still_step_on_zero_gradients(model_dir):
    """Step 0 trains (AdamW momentum); step 1 has every advantage 0: no training forward at all
    (one no-grad probe of a micro-batch for the 'entropy' metric), yet the optimizer steps on zero
    gradients, so momentum and weight decay move the weights exactly as without the skip."""
    on, off = _learner(model_dir, True), _learner(model_dir, False)
    on.train_step(_samples(), 0)
    off.train_step(_samples(), 0)
    before = [p.detach().clone() for p in on.model.parameters()]
    rows = _count_rows(on)
    zeros = [(k, 0.0) for k, _ in MIXED]
    m_on, m_off = on.train_step(_samples(zeros), 1), off.train_step(_samples(zeros), 1)
    assert rows == [2]  # reused old logprobs, every answer skipped: only the probe of 2 answers
    assert m_on["learner/skipped_answers_frac"] == 1.0
    assert m_on["policy_loss"] == 0.0 and m_off["policy_loss"] == 0.0
    assert m_on["grad_norm"] == 0.0 and m_off["grad_norm"] == 0.0
    assert m_on["entropy"] > 0 and m_on["clip_frac_low"] == m_on["clip_frac_high"] == 0.0  # from the probe
    assert _max_weight_diff(on, off) <= 1e-6
    # the step did move the weights (momentum of step 0, weight decay)
    assert max((p - b).abs().max().item() for p, b in zip(on.model.parameters(), before)) > 1e-5
    assert on.optimizer.state[next(iter(on.model.parameters()))]["step"] == 2


def test_first_step_all_zero_is_weight_decay_only(model_dir):
    """No momentum yet: AdamW's step on zero gradients is p *= 1 - lr * weight_decay, the same
    as without the skip (1 - 1e-3 * 0.1 = 0.9999)."""
    on, off = _learner(model_dir, True), _learner(model_dir, False)
    init = [p.detach().clone() for p in on.model.parameters()]
    zeros = [(k, 0.0) for k, _ in MIXED]
    on.train_step(_samples(zeros), 0)
    off.train_step(_samples(zeros), 0)
    assert _max_weight_diff(on, off) <= 1e-7
    assert max((p - 0.9999 * w).abs().max().item() for p, w in zip(on.model.parameters(), init)) <= 1e-7


@pytest.mark.parametrize("algo", [dict(kl_coef=0.1), dict(entropy_coef=0.01)])
def test_no_skip_when_a_term_needs_every_answer(model_dir, algo):
    """KL to the reference and the entropy bonus cover every answer: nothing is skipped."""
    learner = _learner(model_dir, True, micro_batch_size=64, **algo)
    rows = _count_rows(learner)
    m = learner.train_step(_samples(), 0)
    assert m["learner/skipped_answers_frac"] == 0.0
    # one training forward of all 8 answers (KL: the reference is a separate frozen copy)
    assert rows == [8]


def test_no_skip_with_d3s_token_selection(model_dir):
    learner = _learner(model_dir, True)
    assert learner.zero_advantage_skips(_samples(), token_keep_frac=0.5) == set()
    assert learner.zero_advantage_skips(_samples()) == {1, 3, 5, 7}


def test_guided_batch_skips_only_on_policy_zero_answers(model_dir):
    """Hinted (off-policy) answers are never skipped (Guide-GRPO's gamma is over their ratios);
    on-policy zero-advantage answers next to them are, with the same step (SGD: the update is the
    gradient)."""
    samples = _samples()[:4] + [TrainSample(prompt_ids=PROMPT, response_ids=[11 + t, 20 + t, 33], advantage=a,
                                            rollout_logprobs=[], behaviour_prompt_ids=HINTED, off_policy=True)
                                for t, a in enumerate([0.0, 1.5])]
    on, off = _learner(model_dir, True), _learner(model_dir, False)
    assert on.zero_advantage_skips(samples) == {1, 3}  # not the hinted answer 4
    for ln in (on, off):
        ln.optimizer = torch.optim.SGD([p for p in ln.model.parameters() if p.requires_grad], lr=1.0)
    m_on, m_off = on.train_step(samples, 0), off.train_step(samples, 0)
    assert m_on["learner/skipped_answers_frac"] == pytest.approx(2 / 6)
    assert m_on["policy_loss"] == pytest.approx(m_off["policy_loss"], abs=1e-6)
    assert _max_weight_diff(on, off) <= 1e-6


def test_entropy_metric_is_over_the_trained_answers(model_dir):
    """With skipped answers, 'entropy' is the token-mean over the trained answers (those with
    A != 0), 'policy_loss' still the whole mini-batch's; without the skip, over all 8 answers."""
    _, ent = _learner(model_dir, True).logprobs(_samples(), entropy=True)  # before any update
    trained = [e for e, (_, a) in zip(ent, MIXED) if a != 0]

    def token_mean(rows):
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)

    m_on = _learner(model_dir, True).train_step(_samples(), 0)
    m_off = _learner(model_dir, False).train_step(_samples(), 0)
    assert m_on["entropy"] == pytest.approx(token_mean(trained), abs=1e-5)
    assert m_off["entropy"] == pytest.approx(token_mean(ent), abs=1e-5)
    # on-policy step: ratio 1, loss = token-mean of -A over all 22 tokens:
    # -(1*1 - 0.5*2 + 0.75*4 - 0.5*3) / 22 = -1.5 / 22 (the zero-advantage answers' 12 tokens add
    # 0 terms but count in the 22; over the 10 trained tokens alone it would be -0.15)
    assert m_on["policy_loss"] == pytest.approx(-1.5 / 22, abs=1e-6)
    assert m_off["policy_loss"] == pytest.approx(-1.5 / 22, abs=1e-6)


def test_two_ranks_skip_with_the_global_denominator(ray_session, model_dir):
    """Data parallel (two Ray ranks, gloo): each rank skips the zero-advantage answers of its
    shard, the others keep their shares of the whole mini-batch's denominator; then a batch of
    only zero advantages (no rank forwards anything, both still step). The weights equal one
    learner's without the skip."""
    from rlcurr.learner.group import LearnerGroup

    algo = AlgoConfig(micro_batch_size=2)  # skip_zero_advantage: True by default
    single = _learner(model_dir, False)
    group = LearnerGroup(model_dir, LearnerConfig(lr=1e-3, weight_decay=0.1, num_workers=2), algo, 10)
    try:
        zeros = [(k, 0.0) for k, _ in MIXED]
        for t, batch in enumerate([_samples(), _samples(shift=1), _samples(zeros)]):
            m1, m2 = single.train_step(batch, t), group.train_step(batch, t)
            assert m2["learner/skipped_answers_frac"] == pytest.approx(1.0 if t == 2 else 0.5)  # both ranks' shares
            for k in ("policy_loss", "grad_norm"):
                assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
        after = dict(group.named_weights())
        single_sd = single.model.state_dict()  # also lists the tied lm_head.weight, which is not sent
        diffs = {n: (w - single_sd[n]).abs().max().item() for n, w in after.items()}
        assert max(diffs.values()) < 1e-5, max(diffs.items(), key=lambda kv: kv[1])
        a, b = group.parameter_checksums()
        assert a == b
    finally:
        group.shutdown()


def test_parity_metric_survives_an_all_skipped_step(model_dir):
    """Fully on-policy, the training forward gives the old logprobs that the engine/learner parity
    metric compares; when every answer is skipped, one micro-batch (2 answers) of them is scored
    without grad, before the step, so the metric still exists (here the engine logprobs are the
    learner's own: difference ~0)."""
    learner = _learner(model_dir, True)
    zeros = _samples([(k, 0.0) for k, _ in MIXED])
    zeros = [dataclasses.replace(s, rollout_logprobs=lp) for s, lp in zip(zeros, learner.logprobs(zeros))]
    rows = _count_rows(learner)
    m = learner.train_step(zeros, 0)
    assert rows == [2]
    assert m["learner/skipped_answers_frac"] == 1.0
    assert m["rollout/logprob_abs_diff_mean"] <= 1e-6
