"""Micro-batches cut group-aware: siblings (answers to one prompt) land in the same micro-batch,
so they share one copy of their prompt, and the update is the one the shuffled order gives."""

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rlcurr.learner.learner as L
from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig
from rlcurr.learner.dataparallel import group_adjacent, minibatches
from rlcurr.learner.models import build_tiny_model
from rlcurr.types import TrainSample


def test_group_adjacent_by_hand():
    # groups of indices 0..5: a b a c b a -> a's (0, 2, 5), then b's (1, 4), then c (3)
    groups = ["a", "b", "a", "c", "b", "a"]
    assert group_adjacent([0, 1, 2, 3, 4, 5], groups) == [0, 2, 5, 1, 4, 3]
    # first appearance decides the group order: 4 (b) comes first here
    assert group_adjacent([4, 2, 1, 3], groups) == [4, 1, 2, 3]


@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.integers(1, 4), st.integers(0, 10))
def test_minibatches_keep_their_answers_and_make_groups_contiguous(groups, mini_batches, seed):
    plain = minibatches(len(groups), 2, mini_batches, random.Random(seed))
    grouped = minibatches(len(groups), 2, mini_batches, random.Random(seed), groups=groups)
    assert [sorted(m) for m in plain] == [sorted(m) for m in grouped]  # the same answers per step
    for mb in grouped:
        keys = [groups[i] for i in mb]
        runs = [k for j, k in enumerate(keys) if j == 0 or keys[j - 1] != k]
        assert len(runs) == len(set(keys))  # each group one contiguous run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _batch() -> list[TrainSample]:
    """4 prompts x 4 answers of varied lengths, advantages of both signs, in generation order."""
    g = torch.Generator().manual_seed(1)
    out = []
    for p in range(4):
        prompt = torch.randint(5, 60, (12 + p,), generator=g).tolist()
        for a in range(4):
            n = int(torch.randint(1, 7, (1,), generator=g))
            out.append(TrainSample(prompt_ids=prompt, response_ids=torch.randint(5, 60, (n,), generator=g).tolist(),
                                   advantage=(-1.0, 0.5, -0.25, 1.0)[(a + p) % 4], rollout_logprobs=[]))
    return out


def _step(model_dir: str, monkeypatch, grouped: bool) -> tuple[dict, list[torch.Tensor], int]:
    """One step (2 mini-batches of 8, micro-batches of 2); returns the metrics, the gradients of
    each optimizer step (captured before AdamW) and the tokens the model was called on."""
    if not grouped:
        monkeypatch.setattr(L, "prompt_groups", lambda samples: None)
    algo = AlgoConfig(loss_agg="token-mean", micro_batch_size=2, epochs=1, mini_batches=2)
    learner = L.Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10, seed=3)
    grads: list[torch.Tensor] = []
    step = learner.optimizer.step
    learner.optimizer.step = lambda: grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()])) or step()
    tokens = [0]
    forward = learner.model.forward
    learner.model.forward = lambda input_ids=None, **kw: tokens.__setitem__(0, tokens[0] + input_ids.numel()) or \
        forward(input_ids=input_ids, **kw)
    metrics = learner.train_step(_batch(), 0)
    monkeypatch.undo()
    return metrics, grads, tokens[0]


def test_grouped_micro_batches_give_the_same_update_with_fewer_tokens(model_dir, monkeypatch):
    m_shuffled, g_shuffled, t_shuffled = _step(model_dir, monkeypatch, grouped=False)
    m_grouped, g_grouped, t_grouped = _step(model_dir, monkeypatch, grouped=True)
    assert m_grouped["loss"] == pytest.approx(m_shuffled["loss"], abs=1e-5)
    assert len(g_grouped) == len(g_shuffled) == 2
    for a, b in zip(g_grouped, g_shuffled):
        assert (a - b).abs().max() < 1e-5
    assert t_grouped < t_shuffled  # siblings share their prompt's copy
