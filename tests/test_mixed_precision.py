"""Mixed precision (rlcurr.learner.precision): a bf16 recipe trains fp32 master weights.

The failure this guards against: AdamW on bf16 parameters at lr 1e-6. bf16 keeps 8 significant
bits, so a weight w moves only if the step exceeds half its spacing, 2**-8 |w| / 2: for
|w| ~ 0.02 that is ~4e-5, forty times Adam's ~1e-6 step, and a norm weight at 1.0 (spacing
2**-7) can never move. With fp32 masters every weight with a gradient moves by ~lr, as in fp32.
"""

import dataclasses

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from test_ddp import _samples


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


ALGO = AlgoConfig(loss_agg="token-mean", micro_batch_size=3, epochs=1, mini_batches=1)


def _masters(learner: Learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in learner.model.named_parameters()}


def _deltas(dtype: str, model_dir: str, steps: int = 5) -> tuple[Learner, torch.Tensor, dict, dict]:
    learner = Learner(model_dir, LearnerConfig(lr=1e-6, weight_decay=0.0), ALGO, 100, dtype=dtype, seed=0)
    before = _masters(learner)
    batch = [dataclasses.replace(s, reward=float(i % 2)) for i, s in enumerate(_samples())]
    for t in range(steps):
        learner.train_step(batch, t)
    after = _masters(learner)
    flat = torch.cat([(after[n] - before[n]).flatten() for n in before])
    return learner, flat, before, after


def test_bf16_recipe_moves_the_weights_as_fp32_does(model_dir):
    _, d32, _, _ = _deltas("float32", model_dir)
    learner, d16, before, after = _deltas("bfloat16", model_dir)
    moved32, moved16 = float((d32 != 0).float().mean()), float((d16 != 0).float().mean())
    assert moved32 > 0.9  # every weight with a gradient moves under AdamW
    assert moved16 > 0.95 * moved32  # bf16 parameters: ~2 % of the weights moved at all
    # Same direction and size of update, up to bf16 compute noise in the gradients (Adam's
    # first steps move each weight by ~lr * sign(g), so the noise only flips near-zero gradients).
    cosine = float(torch.nn.functional.cosine_similarity(d32, d16, dim=0))
    assert cosine > 0.9, cosine
    assert float(d16.norm() / d32.norm()) == pytest.approx(1.0, rel=0.1)
    # RMSNorm weights start at exactly 1.0, where bf16's spacing (2**-7) swallows any lr-1e-6 step.
    norms = [n for n in before if "norm" in n]
    assert norms and all(not torch.equal(before[n], after[n]) for n in norms)
    # Colocated engines wake right after the update: its gradients are already gone.
    assert all(p.grad is None for p in learner.model.parameters())
    # Trained parameters are fp32 masters; the engines get the compute dtype.
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())
    assert {t.dtype for _, t in learner.named_weights()} == {torch.bfloat16}


def test_bf16_logprobs_match_fp32_within_compute_noise(model_dir):
    """The autocast forward scores answers as the fp32 model does, to bf16 precision."""
    fp32 = Learner(model_dir, LearnerConfig(), ALGO, 10, dtype="float32")
    bf16 = Learner(model_dir, LearnerConfig(), ALGO, 10, dtype="bfloat16")
    a, b = fp32.logprobs(_samples()), bf16.logprobs(_samples())
    diffs = [abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    assert 0 < max(diffs) < 0.05  # bf16 compute, but not identical to fp32


def test_reference_model_and_lora_base_stay_in_compute_dtype(model_dir):
    """Frozen weights need no fp32 master: the KL reference and LoRA's base keep model.dtype."""
    from rlcurr.config import LoraConfig

    with_kl = Learner(model_dir, LearnerConfig(), ALGO.model_copy(update={"kl_coef": 0.1}), 10, dtype="bfloat16")
    assert {p.dtype for p in with_kl.ref_model.parameters()} == {torch.bfloat16}
    lora = Learner(model_dir, LearnerConfig(), ALGO, 10, dtype="bfloat16",
                   lora_cfg=LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    trainable = {p.dtype for p in lora.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in lora.model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
