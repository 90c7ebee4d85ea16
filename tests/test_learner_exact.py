"""The learner trains on exactly what was sampled: it scores at the sampling
temperature, Dr.GRPO normalises by the generation limit, Guide-GRPO's gamma and D3S's token
top-k are those of the whole mini-batch however it is cut, and the memory-lean scoring path
(answer-only logits, chunked logsumexp, token-budget micro-batches) takes the same step."""

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, LoraConfig, TinyModelConfig
from rlcurr.learner.batching import response_logits, token_logprobs
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from rlcurr.rollout.hf_engine import HFEngine
from rlcurr.types import GenRequest, TrainSample

PROMPT = [5, 6, 76]
HINTED = [5, 6, 40, 41, 42, 76]  # the same prompt with a hint in it


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _samples():
    return [TrainSample(prompt_ids=PROMPT, response_ids=list(range(10, 10 + k)), advantage=a, rollout_logprobs=[])
            for k, a in [(1, 1.0), (3, -0.5), (2, 0.25), (5, -1.0), (4, 0.75), (2, -0.5)]]


def _guided_samples():
    """Three on-policy answers and three hinted ones (off-policy: old logprobs on HINTED), with
    varied lengths and advantages."""
    out = []
    for j, (k, a) in enumerate([(3, 1.0), (5, -0.5), (2, 0.25), (6, 1.5), (4, 0.75), (3, 2.0)]):
        off = j >= 3
        out.append(TrainSample(prompt_ids=PROMPT, response_ids=[(7 * j + 3 * t) % 90 + 10 for t in range(k)],
                               advantage=a, rollout_logprobs=[], behaviour_prompt_ids=HINTED if off else None,
                               off_policy=off))
    return out


def _sgd(learner):
    # SGD: parameter changes are lr * gradient (Adam's first step is lr * sign(g), which turns fp
    # noise in near-zero gradient entries into full-size differences).
    learner.optimizer = torch.optim.SGD([p for p in learner.model.parameters() if p.requires_grad], lr=1.0)
    return learner


def _max_weight_diff(a, b) -> float:
    return max((p1 - p2).abs().max().item() for p1, p2 in zip(a.model.parameters(), b.model.parameters()))


# ----------------------------------------------------------------------------- 1 temperature


def test_learner_scores_answers_at_the_engines_sampling_temperature(model_dir):
    engine = HFEngine(model_dir, seed=0)
    comps = engine.generate([GenRequest(PROMPT, 6, 8, temperature=0.7, seed=1)])[0]
    samples = [TrainSample(PROMPT, c.token_ids, 0.5 - (i % 2), c.logprobs) for i, c in enumerate(comps)]
    engine_lp = [x for c in comps for x in c.logprobs]

    def mean_abs(lps):
        flat = [x for lp in lps for x in lp]
        return sum(abs(x - y) for x, y in zip(flat, engine_lp)) / len(flat)

    learner = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(kl_coef=0.1), 10, temperature=0.7)
    assert mean_abs(learner.logprobs(samples)) <= 1e-4                  # old logprobs
    assert mean_abs(learner.logprobs(samples, reference=True)) <= 1e-4  # reference logprobs
    # At temperature 1 (today's scoring) the same answers are far off: the check has teeth.
    plain = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(), 10)
    assert mean_abs(plain.logprobs(samples)) > 1e-2
    # The training forward (on-policy: its logprobs are the parity metric's) and the entropy:
    # H = -sum_v p_v log p_v of softmax(logits / 0.7), token-mean over the batch, before the update.
    fast = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(), 10, temperature=0.7)
    with torch.no_grad():
        logits_BTV = response_logits(fast.model, [PROMPT] * len(samples), [s.response_ids for s in samples],
                                     fast.pad_id).float() / 0.7
        logp_BTV = torch.log_softmax(logits_BTV, -1)
        ent_BT = -(logp_BTV.exp() * logp_BTV).sum(-1)
    want_entropy = sum(float(ent_BT[b, : len(s.response_ids)].sum()) for b, s in enumerate(samples)) / len(engine_lp)
    m = fast.train_step(samples, 0)
    assert m["rollout/logprob_abs_diff_mean"] <= 1e-4
    assert m["entropy"] == pytest.approx(want_entropy, abs=1e-5)


def test_temperature_zero_scores_at_one(model_dir):
    greedy = Learner(model_dir, LearnerConfig(), AlgoConfig(), 10, temperature=0.0)
    plain = Learner(model_dir, LearnerConfig(), AlgoConfig(), 10)
    assert greedy.logprobs(_samples()) == plain.logprobs(_samples())


# ----------------------------------------------------------------------------- 2 Dr.GRPO


def test_drgrpo_normalises_by_the_generation_limit(model_dir):
    # On-policy first step: ratio 1, per-token loss -A. Dr.GRPO: mean_b [sum_t(-A_b) / norm].
    # A_b * len_b = 1*1, -0.5*3, 0.25*2, -1*5, 0.75*4, -0.5*2 = 1, -1.5, 0.5, -5, 3, -1; sum -3,
    # mean over 6 answers -0.5, so the loss is 0.5 / norm:
    #   norm = response_limit 8             -> 0.0625
    #   norm = the longest answer, 5 (today) -> 0.1 (the fallback without a limit)
    algo = AlgoConfig(loss_agg="seq-mean-token-sum-norm", micro_batch_size=2)
    limited = Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10, response_limit=8)
    assert limited.train_step(_samples(), 0)["policy_loss"] == pytest.approx(0.0625, abs=1e-6)
    fallback = Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10)
    assert fallback.train_step(_samples(), 0)["policy_loss"] == pytest.approx(0.1, abs=1e-6)


# ----------------------------------------------------------------------------- 3 whole mini-batch constants


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_take_the_whole_mini_batch_step_with_guidance_and_d3s(model_dir, agg):
    """Guide-GRPO's gamma (q90 of the off-policy ratios) and D3S's top |A| * H tokens are the
    mini-batch's, so micro-batches of 2 take the step of one forward over all 6 answers."""
    whole = _sgd(Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(loss_agg=agg, micro_batch_size=64), 10))
    parts = _sgd(Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(loss_agg=agg, micro_batch_size=2), 10))
    m1 = whole.train_step(_guided_samples(), 0, token_keep_frac=0.5)
    m2 = parts.train_step(_guided_samples(), 0, token_keep_frac=0.5)
    assert m1["d3s/tokens_kept_frac"] == pytest.approx(12 / 23)  # ceil(0.5 * 23 tokens) = 12 kept
    assert m2["d3s/tokens_kept_frac"] == pytest.approx(12 / 23)
    for k in ("policy_loss", "grad_norm"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4), k
    assert _max_weight_diff(whole, parts) <= 1e-5


# ----------------------------------------------------------------------------- 4 memory-lean path


def test_answer_only_chunked_scores_equal_full_logits(model_dir):
    """answer_scores (hidden states, head at answer positions, chunked logsumexp) equals the
    full-sequence log_softmax path, for a plain and a LoRA-wrapped model, with gradients."""
    from rlcurr.learner.batching import answer_scores

    for lora in (None, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])):
        learner = Learner(model_dir, LearnerConfig(), AlgoConfig(), 10, lora_cfg=lora)
        samples = _guided_samples()
        prompts, responses = [s.behaviour_prompt_ids or s.prompt_ids for s in samples], [s.response_ids for s in samples]
        logits_BTV = response_logits(learner.model, prompts, responses, learner.pad_id).float() / 0.7
        want_BT = token_logprobs(logits_BTV, responses, learner.pad_id)
        logp_BTV = torch.log_softmax(logits_BTV, -1)
        want_ent_BT = -(logp_BTV.exp() * logp_BTV).sum(-1)
        got_BT, got_ent_BT = answer_scores(learner.model, prompts, responses, learner.pad_id, 0.7, entropy_grad=True)
        mask_BT = torch.tensor([[t < len(r) for t in range(want_BT.shape[1])] for r in responses])
        assert (got_BT - want_BT)[mask_BT].abs().max() <= 1e-5
        assert (got_ent_BT - want_ent_BT)[mask_BT].abs().max() <= 1e-5
        params = [p for p in learner.model.parameters() if p.requires_grad]
        # a loss with both terms, as with an entropy bonus: sum logp - 0.5 * sum H
        g_want = torch.autograd.grad(((want_BT - 0.5 * want_ent_BT) * mask_BT).sum(), params)
        g_got = torch.autograd.grad(((got_BT - 0.5 * got_ent_BT) * mask_BT).sum(), params)
        assert max((a - b).abs().max().item() for a, b in zip(g_want, g_got)) <= 1e-5
        _, detached_BT = answer_scores(learner.model, prompts, responses, learner.pad_id, 0.7)
        assert not detached_BT.requires_grad  # without the bonus the entropy is a by-product


def test_token_budget_micro_batches_take_the_same_step_within_the_cap(model_dir):
    """learner.max_tokens_per_micro_batch: every forward (old, ref, training) holds at most that
    many padded prompt+answer tokens, and the update is unchanged."""
    algo = AlgoConfig(micro_batch_size=64, kl_coef=0.1, epochs=2)
    whole = _sgd(Learner(model_dir, LearnerConfig(lr=1e-2), algo, 10))
    capped = _sgd(Learner(model_dir, LearnerConfig(lr=1e-2, max_tokens_per_micro_batch=12), algo, 10))
    shapes = []
    for model in (capped.model, capped.ref_model):
        model.register_forward_pre_hook(lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                        with_kwargs=True)
    whole.train_step(_guided_samples(), 0, token_keep_frac=0.5)
    capped.train_step(_guided_samples(), 0, token_keep_frac=0.5)
    # longest sequence: hinted prompt 6 + answer 6 = 12, so some forwards hold a single answer
    assert shapes and max(b * n for b, n in shapes) <= 12
    assert _max_weight_diff(whole, capped) <= 1e-5


def test_ppo_token_advantages_fix_d3s_tokens_over_the_mini_batch(model_dir):
    """PPO (per-token GAE advantages) with D3S token level and hinted answers: micro-batches of one
    answer take the step of one forward over the mini-batch (|A_t| * H_t ranked mini-batch-wide)."""
    import dataclasses

    samples = [dataclasses.replace(s, reward=float(j % 2)) for j, s in enumerate(_guided_samples())]
    algo = dict(name="ppo", loss_agg="token-mean", critic_lr=1e-3)
    whole = _sgd(Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(micro_batch_size=64, **algo), 10))
    parts = _sgd(Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(micro_batch_size=1, **algo), 10))
    m1 = whole.train_step(samples, 0, token_keep_frac=0.5)
    m2 = parts.train_step(samples, 0, token_keep_frac=0.5)
    assert m1["d3s/tokens_kept_frac"] == pytest.approx(12 / 23) and m2["d3s/tokens_kept_frac"] == pytest.approx(12 / 23)
    for k in ("policy_loss", "grad_norm"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
    assert _max_weight_diff(whole, parts) <= 1e-5
