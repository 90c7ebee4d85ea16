"""learner.strategy: fsdp: two Ray ranks (gloo on CPU) with the model sharded (FSDP2) take exactly
the single learner's step, gather full HF-named weights, and checkpoint / resume."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig, build_config
from rlcurr.errors import UserError
from rlcurr.learner.learner import Learner, without_tied_head
from rlcurr.learner.models import build_tiny_model
from test_ddp import _guided, _samples


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # Two decoder layers: two layer FSDP units plus the root (tied embedding / LM head).
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _rewarded():
    return [dataclasses.replace(s, reward=float(i % 2)) for i, s in enumerate(_samples())]


FSDP = LearnerConfig(lr=1e-3, num_workers=2, strategy="fsdp")


def _max_diff(full: dict, model: torch.nn.Module) -> float:
    sd = model.state_dict()
    assert set(full) == set(sd) - {"lm_head.weight"}  # the tied head is the embedding: not sent
    return max((w - sd[n]).abs().max().item() for n, w in full.items())


@pytest.mark.parametrize("algo,batches", [
    # KL on: the reference model is sharded too, and its logprobs padded like the old ones.
    # Batches of 6, 3 and 1 answers: shards 3+3, 2+1 (rank 1 runs one micro-batch fewer than
    # rank 0 unless padded) and 1+0 (rank 1's shard is empty).
    (AlgoConfig(loss_agg="token-mean", micro_batch_size=2, epochs=1, mini_batches=1, kl_coef=0.1), [6, 3, 1]),
    # PPO: the critic is sharded too; mini-batches of 3 answers, shards 2+1 micro-batches of 1.
    (AlgoConfig(name="ppo", loss_agg="seq-mean-token-sum-norm", micro_batch_size=1, epochs=1, mini_batches=2,
                critic_lr=1e-3), [6, 1]),
], ids=["grpo-kl", "ppo"])
def test_fsdp_ranks_take_the_single_learner_step(ray_session, model_dir, tmp_path, algo, batches):
    from rlcurr.learner.group import LearnerGroup

    # lr 1e-3, not DDP's test's 1e-2: Adam's first step moves an entry by ~lr * g / (|g| + 1e-8),
    # so an embedding entry with |g| ~ 1e-8 moves by a float-summation-order-dependent share of
    # lr. At lr 1e-2 with two layers, DDP and FSDP both end 3.7e-5 from the single learner.
    single = Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10)
    group = LearnerGroup(model_dir, FSDP, algo, 10)
    try:
        before = dict(group.named_weights())
        for t, n in enumerate(batches):
            batch = _rewarded()[3 - n // 2 : 3 - n // 2 + n]  # 6 -> all, 3 -> [1:4], 1 -> [3:4]
            m1, m2 = single.train_step(batch, t), group.train_step(batch, t)
            assert m2.pop("time/learner") > 0  # the actor's busy seconds, added by the worker
            assert set(m1) == set(m2)
            for k in m1:  # abs: PPO's whitened advantages make the first policy loss a ~1e-6 cancellation
                assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-5), k
        after = dict(group.named_weights())
        # Full tensors under the HF names, not DTensor shards (less the tied lm_head: the embedding again).
        sent = without_tied_head(single.model, single.model.state_dict())
        assert list(after) == list(sent) and "lm_head.weight" not in sent
        assert all(type(v) is torch.Tensor and v.shape == sent[n].shape for n, v in after.items())
        assert _max_diff(after, single.model) < 1e-5
        assert any(not torch.equal(after[n], before[n]) for n in after)
        a, b = group.parameter_checksums()
        assert a == b == pytest.approx(float(sum(p.detach().double().abs().sum() for p in single.model.parameters())))
        if algo.name == "ppo":  # the critic's weights, AdamW state and RNG too
            _resumes_exactly(group, tmp_path)
    finally:
        group.shutdown()


def test_fsdp_token_budget_and_mini_batch_constants(ray_session, model_dir):
    """FSDP with a token budget per forward (learner.max_tokens_per_micro_batch 12: the ranks cut
    different numbers of forwards and pad to equal counts) and guidance + D3S (the no-grad
    pre-pass that fixes gamma and the kept tokens runs collectively): the single learner's step."""
    from rlcurr.learner.group import LearnerGroup

    single = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(micro_batch_size=64, kl_coef=0.1), 10)
    group = LearnerGroup(model_dir, LearnerConfig(lr=1e-3, num_workers=2, strategy="fsdp", max_tokens_per_micro_batch=12),
                         AlgoConfig(micro_batch_size=2, kl_coef=0.1), 10)
    try:
        for t in range(2):
            m1 = single.train_step(_guided(), t, token_keep_frac=0.5)
            m2 = group.train_step(_guided(), t, token_keep_frac=0.5)
            for k in ("policy_loss", "loss", "kl", "d3s/tokens_kept_frac", "grad_norm"):
                assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
        assert _max_diff(dict(group.named_weights()), single.model) < 1e-5
    finally:
        group.shutdown()


def _resumes_exactly(group, path) -> None:
    saved = dict(group.named_weights())
    group.save_checkpoint(str(path))
    # The HF model dir holds the full weights (lm_head is tied to the embedding, not stored).
    on_disk = load_file(path / "model" / "model.safetensors")
    assert set(on_disk) == set(saved)
    assert all(torch.equal(on_disk[n], saved[n]) for n in on_disk)
    untimed = lambda m: {k: v for k, v in m.items() if k != "time/learner"}  # noqa: E731
    m_first = untimed(group.train_step(_rewarded(), 5))
    first = dict(group.named_weights())
    group.load_checkpoint(str(path))
    assert all(torch.equal(w, saved[n]) for n, w in group.named_weights())
    # Same weights, optimizer states and shuffling RNGs: the step after resuming is the same.
    assert untimed(group.train_step(_rewarded(), 5)) == m_first
    assert all(torch.equal(w, first[n]) for n, w in group.named_weights())


@pytest.mark.parametrize("learner,model_extra,expected", [
    ({"num_workers": 1, "strategy": "fsdp"}, {}, "learner.num_workers >= 2"),
    ({"num_workers": 2, "strategy": "fsdp"}, {"lora": {}}, "does not support model.lora"),
])
def test_fsdp_config_errors(learner, model_extra, expected):
    data = {"name": "x", "model": {"tiny": {}, **model_extra}, "env": {"name": "arith"}, "learner": learner}
    with pytest.raises(UserError, match=expected):
        build_config(data)
