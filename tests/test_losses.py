"""Loss pieces against hand-derived numbers."""

import math

import pytest
import torch

from rlcurr.algos.losses import aggregate, kl_penalty, policy_loss, shaped_offpolicy_ratio, truncated_is_weights


def test_aggregations():
    # loss = [[1, 2, 3], [4, 0, 0]], mask = [[1,1,1],[1,0,0]]
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token-mean: (1+2+3+4)/4 = 2.5
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(2.5)
    # seq-mean-token-mean: mean(6/3, 4/1) = mean(2, 4) = 3
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)
    # seq-mean-token-sum-norm with norm 4: mean(6/4, 4/4) = 1.25
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm_len=4).item() == pytest.approx(1.25)


def _one_token(ratio: float, adv: float, clip_low=0.2, clip_high=0.28):
    lp = torch.tensor([[math.log(ratio)]])
    return policy_loss(lp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1), clip_low, clip_high, "token-mean")


def test_clip_higher_positive_advantage():
    # A = +1, r = 1.5: min(1.5*1, clip(1.5, 0.8, 1.28)*1) = 1.28 -> loss -1.28, clipped high
    loss, st = _one_token(1.5, 1.0)
    assert loss.item() == pytest.approx(-1.28)
    assert st["clip_frac_high"].item() == 1.0 and st["clip_frac_low"].item() == 0.0
    # r = 1.2 lies inside [0.8, 1.28]: unclipped, loss = -1.2 (with symmetric 0.2 it would be -1.2 too,
    # but r = 1.25 separates them: clip-higher -> -1.25, symmetric -> -1.2)
    assert _one_token(1.25, 1.0)[0].item() == pytest.approx(-1.25)
    assert _one_token(1.25, 1.0, clip_high=0.2)[0].item() == pytest.approx(-1.2)


def test_clip_low_negative_advantage():
    # A = -1, r = 0.5: min(0.5*-1, clip(0.5,0.8,1.28)*-1) = min(-0.5, -0.8) = -0.8 -> loss 0.8, clipped low
    loss, st = _one_token(0.5, -1.0)
    assert loss.item() == pytest.approx(0.8)
    assert st["clip_frac_low"].item() == 1.0
    # A = -1, r = 2.0: min(-2, -1.28) = -2 -> loss 2.0 (pessimistic branch, no clipping)
    assert _one_token(2.0, -1.0)[0].item() == pytest.approx(2.0)


def test_gradient_is_zero_when_clipped():
    lp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = policy_loss(lp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.28, "token-mean")
    loss.backward()
    assert lp.grad.abs().item() == 0.0


def test_kl_estimators():
    # logp = log 0.5, ref = log 0.25 -> d = ref - logp = -ln 2
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = -math.log(2)
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(math.log(2))          # -d
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5 * d * d)           # 0.2402265
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(d) - 1 - d)   # 0.5 - 1 + 0.6931 = 0.1931472
    assert kl_penalty(lp, lp, "k3").item() == 0.0


def test_shaped_ratio_uses_quantile_of_offpolicy_tokens():
    # off-policy ratios [1, 2, 3, 4, 5] (the on-policy 100 is ignored). torch.quantile(0.9) with
    # linear interpolation: position 0.9*4 = 3.6 -> 4 + 0.6*(5-4) = 4.6. shaped r = r/(r+4.6).
    ratio = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 100.0]])
    off = torch.tensor([[True, True, True, True, True, False]])
    shaped = shaped_offpolicy_ratio(ratio, off)
    assert shaped[0, 0].item() == pytest.approx(1 / 5.6)
    assert shaped[0, 4].item() == pytest.approx(5 / 9.6)


def test_offpolicy_tokens_use_shaped_ratio_without_clip():
    # one on-policy sequence (r=1.5, A=1 -> clipped 1.28) and one off-policy (r=3, A=1, gamma=q90 of [3]=3
    # -> shaped 3/6 = 0.5, loss -0.5). token-mean over 2 tokens: (-1.28 - 0.5)/2 = -0.89
    lp = torch.log(torch.tensor([[1.5], [3.0]]))
    loss, _ = policy_loss(lp, torch.zeros(2, 1), torch.tensor([1.0, 1.0]), torch.ones(2, 1), 0.2, 0.28,
                          "token-mean", offpolicy_B=torch.tensor([False, True]))
    assert loss.item() == pytest.approx(-0.89)


def test_truncated_is_weights_scale_each_token_of_the_policy_gradient():
    # pi_old / pi_rollout per token: 0.6/0.2 = 3 -> capped at 2;  0.3/0.6 = 0.5;  third token is padding -> 0.
    old = torch.log(torch.tensor([[0.6, 0.3, 0.9]]))
    rollout = torch.log(torch.tensor([[0.2, 0.6, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = truncated_is_weights(old, rollout, mask, cap=2.0)
    assert w.tolist()[0] == pytest.approx([2.0, 0.5, 0.0])
    # Current policy = old (r = 1), A = +1: per-token loss -r*A = -1, weighted [-2, -0.5];
    # token-mean over the 2 real tokens: -1.25.  d loss / d logp_t = -w_t * r_t * A / 2 = [-1, -0.25].
    lp = old.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, old, torch.tensor([1.0]), mask, 0.2, 0.2, "token-mean", is_weight_BT=w)
    assert loss.item() == pytest.approx(-1.25)
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([-1.0, -0.25, 0.0])
    # Without weights the same batch gives the plain surrogate: (-1 - 1) / 2 = -1.
    assert policy_loss(old, old, torch.tensor([1.0]), mask, 0.2, 0.2, "token-mean")[0].item() == pytest.approx(-1.0)
