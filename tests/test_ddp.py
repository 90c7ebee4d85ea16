"""Data-parallel learner: two Ray learner actors (gloo on CPU) take exactly the single learner's step."""

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from rlcurr.types import TrainSample


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _samples():
    # Varied response lengths (token-mean != per-answer weighting; Dr.GRPO's norm_len = 5 comes
    # from rank 1's shard). Engine logprobs around the tiny model's ~-4.6 so that truncated IS
    # weights are mixed: some capped, some below 1.
    return [TrainSample(prompt_ids=[5, 6, 76], response_ids=list(range(10, 10 + k)), advantage=a,
                        rollout_logprobs=[(-5.5, -4.5, -4.0)[j % 3] for j in range(k)])
            for k, a in [(1, 1.0), (3, -0.5), (2, 0.25), (5, -1.0), (4, 0.75), (2, -0.5)]]


@pytest.mark.parametrize("agg,tis_cap", [("token-mean", None), ("seq-mean-token-sum-norm", 2.0)])
def test_two_ranks_take_the_single_learner_step(ray_session, model_dir, agg, tis_cap):
    from rlcurr.learner.group import LearnerGroup

    # micro_batch_size 2 < shard of 3: each rank accumulates over two micro-batches.
    algo = AlgoConfig(loss_agg=agg, micro_batch_size=2, epochs=1, mini_batches=1, tis_cap=tis_cap)
    single = Learner(model_dir, LearnerConfig(lr=1e-2), algo, 10)
    group = LearnerGroup(model_dir, LearnerConfig(lr=1e-2, num_workers=2), algo, 10)
    try:
        before = dict(group.named_weights())
        # Second step: one answer, so rank 1's shard is empty (zero gradient, no metrics).
        for t, batch in enumerate([_samples(), _samples()[3:4]]):
            m1, m2 = single.train_step(batch, t), group.train_step(batch, t)
            assert m2.pop("time/learner") > 0  # the actor's busy seconds, added by the worker
            assert set(m1) == set(m2)
            for k in m1:
                assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
        if tis_cap is not None:
            assert 0 < m1["tis/clipped_frac"] < 1
        after = dict(group.named_weights())
        assert _max_weight_diff(after, single) < 1e-5
        assert any(not torch.equal(after[n], before[n]) for n in after)
        a, b = group.parameter_checksums()
        assert a == b  # the ranks stayed identical
    finally:
        group.shutdown()


def _max_weight_diff(after: dict, single: Learner) -> float:
    """Largest |difference| between the ranks' weights and the single learner's. k_proj.bias is
    left out: softmax over keys ignores a shift shared by every key (q.(k+b) = q.k + q.b for all
    keys), so its gradient is 0 up to float noise, which Adam's g/(|g|+eps) scales up to lr-sized
    steps that differ with any change of summation order (packing rows, shared prompts)."""
    single_sd = single.model.state_dict()  # also lists the tied lm_head.weight, which is not sent
    diffs = {n: (w - single_sd[n]).abs().max().item() for n, w in after.items() if not n.endswith("k_proj.bias")}
    return max(diffs.values())


def _guided():
    """Three on-policy answers and three hinted ones (off-policy, old logprobs on a hinted prompt):
    Guide-GRPO's gamma is a quantile over the hinted answers, which sit on both ranks' shards
    and in several micro-batches."""
    return [TrainSample(prompt_ids=[5, 6, 76], response_ids=[(7 * j + 3 * t) % 90 + 10 for t in range(k)], advantage=a,
                        rollout_logprobs=[], behaviour_prompt_ids=[5, 6, 40, 41, 42, 76] if j % 2 else None,
                        off_policy=bool(j % 2))
            for j, (k, a) in enumerate([(3, 1.0), (5, -0.5), (2, 0.25), (6, 1.5), (4, 0.75), (3, 2.0)])]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum-norm"])
def test_two_ranks_fix_gamma_and_d3s_tokens_over_the_whole_mini_batch(ray_session, model_dir, agg):
    """Guidance off-policy answers + D3S token level (keep half of the tokens by |A| * H): two
    ranks with micro-batches of 2 take the step of ONE learner with ONE micro-batch (gamma and
    the top-k are the whole mini-batch's, computed before the gradient passes)."""
    from rlcurr.learner.group import LearnerGroup

    single = Learner(model_dir, LearnerConfig(lr=1e-2), AlgoConfig(loss_agg=agg, micro_batch_size=64), 10,
                     response_limit=8)
    group = LearnerGroup(model_dir, LearnerConfig(lr=1e-2, num_workers=2),
                         AlgoConfig(loss_agg=agg, micro_batch_size=2), 10, response_limit=8)
    try:
        for t in range(2):
            m1, m2 = single.train_step(_guided(), t, token_keep_frac=0.5), group.train_step(_guided(), t, token_keep_frac=0.5)
            assert m1["d3s/tokens_kept_frac"] == pytest.approx(12 / 23)  # ceil(0.5 * 23 tokens) = 12
            for k in ("policy_loss", "loss", "d3s/tokens_kept_frac", "grad_norm"):
                assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
        assert _max_weight_diff(dict(group.named_weights()), single) < 1e-5
    finally:
        group.shutdown()
