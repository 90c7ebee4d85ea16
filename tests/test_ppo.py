"""PPO with a critic: GAE and the clipped value loss by hand, the critic learns, the learner's PPO
step moves both models, and its checkpoint resumes exactly."""

import math
from pathlib import Path

import pytest
import torch

from rlcurr.algos.advantages import gae, gae_BT, group_advantages, last_token_rewards, masked_whiten
from rlcurr.algos.losses import policy_loss, value_loss
from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig, load_config
from rlcurr.errors import UserError
from rlcurr.learner.critic import Critic
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from rlcurr.trainer import to_train_samples
from rlcurr.types import Completion, Prompt, ScoredGroup, TrainSample

QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _samples():
    # Distinct prompts, so that a critic can tell every state apart (17 response tokens).
    return [TrainSample(prompt_ids=[5, 6, 40 + i], response_ids=list(range(10, 10 + k)), advantage=0.0,
                        rollout_logprobs=[], reward=r)
            for i, (k, r) in enumerate([(1, 1.0), (3, 0.0), (2, 1.0), (5, 0.0), (4, 1.0), (2, 0.0)])]


# ---------------------------------------------------------------- pure functions


def test_gae_by_hand():
    # gamma = 0.9, lam = 0.8 (gamma * lam = 0.72), reward 1 on the last token, V = [0.5, 0.6, 0.8], V_3 = 0:
    #   delta_2 = 1 + 0.9*0   - 0.8 = 0.2       A_2 = 0.2
    #   delta_1 = 0 + 0.9*0.8 - 0.6 = 0.12      A_1 = 0.12 + 0.72*0.2   = 0.264
    #   delta_0 = 0 + 0.9*0.6 - 0.5 = 0.04      A_0 = 0.04 + 0.72*0.264 = 0.23008
    # returns = A + V = [0.73008, 0.864, 1.0]
    adv, ret = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.8], gamma=0.9, lam=0.8)
    assert adv == pytest.approx([0.23008, 0.264, 0.2])
    assert ret == pytest.approx([0.73008, 0.864, 1.0])


def test_batched_gae_ignores_padding_and_puts_the_reward_on_the_last_token():
    # Row 1 has 2 real tokens and a padded third whose value (9.0) must not leak in:
    #   delta_1 = 1 - 0.3 = 0.7                 A_1 = 0.7
    #   delta_0 = 0.9*0.3 - 0.5 = -0.23         A_0 = -0.23 + 0.72*0.7 = 0.274
    mask_BT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    rewards_BT = last_token_rewards(torch.tensor([1.0, 1.0], dtype=torch.float64), mask_BT)
    assert rewards_BT.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    values_BT = torch.tensor([[0.5, 0.6, 0.8], [0.5, 0.3, 9.0]], dtype=torch.float64)
    adv_BT, ret_BT = gae_BT(rewards_BT, values_BT, mask_BT, gamma=0.9, lam=0.8)
    expected = torch.tensor([[0.23008, 0.264, 0.2], [0.274, 0.7, 0.0]], dtype=torch.float64)
    assert torch.allclose(adv_BT, expected)
    assert ret_BT[1].tolist() == pytest.approx([0.774, 1.0, 0.0])


def test_gae_with_gamma_and_lambda_one_is_return_minus_value():
    adv, _ = gae([0.0, 0.0, 2.0], [0.5, -1.0, 1.5], gamma=1.0, lam=1.0)
    assert adv == pytest.approx([1.5, 3.0, 0.5])  # R - V_t with R = 2


def test_whitening_over_the_batch():
    # Real tokens 1, 2, 3, 4: mean 2.5, Bessel variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
    x_BT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 7.0, 7.0]], dtype=torch.float64)
    mask_BT = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.float64)
    s = math.sqrt(5 / 3)
    expected = torch.tensor([[-1.5 / s, -0.5 / s, 0.5 / s], [1.5 / s, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(masked_whiten(x_BT, mask_BT), expected, atol=1e-6)


def test_value_loss_clipping_by_hand():
    # clip c = 0.2 around V_old = 0.5, loss = 0.5 max((V - R)^2, (clip(V, 0.3, 0.7) - R)^2):
    #   a: V = 1.0, R = 1.2: (0.2)^2 = 0.04 vs (0.7 - 1.2)^2 = 0.25 -> 0.125, clipped branch: no gradient
    #   b: V = 0.6, R = 1.0: inside the clip, 0.16                  -> 0.08,  gradient V - R = -0.4
    #   c: V = 0.1, R = 1.0: (0.9)^2 = 0.81 vs (0.3 - 1.0)^2 = 0.49 -> 0.405, unclipped: gradient -0.9
    # token-mean over a, b, c (the 4th is padding) = 0.61 / 3; clip fraction 1/3.
    values_BT = torch.tensor([[1.0, 0.6, 0.1, 5.0]], dtype=torch.float64, requires_grad=True)
    old_BT = torch.full((1, 4), 0.5, dtype=torch.float64)
    returns_BT = torch.tensor([[1.2, 1.0, 1.0, 0.0]], dtype=torch.float64)
    mask_BT = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    loss, stats = value_loss(values_BT, old_BT, returns_BT, mask_BT, clip=0.2, agg="token-mean")
    assert float(loss.detach()) == pytest.approx(0.61 / 3)
    assert float(stats["value_clip_frac"]) == pytest.approx(1 / 3)
    loss.backward()
    assert values_BT.grad[0].tolist() == pytest.approx([0.0, -0.4 / 3, -0.9 / 3, 0.0])


def test_policy_loss_takes_per_token_advantages():
    lp_BT = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    old_BT = torch.tensor([[-1.1, -1.8], [-0.5, -0.3]])
    mask_BT = torch.ones(2, 2)
    adv_B = torch.tensor([1.0, -2.0])
    per_answer, _ = policy_loss(lp_BT, old_BT, adv_B, mask_BT, 0.2, 0.28, "token-mean")
    broadcast, _ = policy_loss(lp_BT, old_BT, adv_B[:, None].expand(2, 2), mask_BT, 0.2, 0.28, "token-mean")
    assert float(broadcast) == pytest.approx(float(per_answer))
    # Zeroing one token's advantage removes exactly its term: token (0, 0) has ratio e^0.1, A = 1.
    adv_BT = adv_B[:, None].expand(2, 2).clone()
    adv_BT[0, 0] = 0.0
    partial, _ = policy_loss(lp_BT, old_BT, adv_BT, mask_BT, 0.2, 0.28, "token-mean")
    assert float(partial) == pytest.approx(float(per_answer) + math.exp(0.1) / 4)


def test_ppo_group_advantages_are_grpos_and_samples_carry_the_reward():
    assert group_advantages("ppo", [1.0, 0.0, 0.0, 1.0]) == group_advantages("grpo", [1.0, 0.0, 0.0, 1.0])
    done = Completion([7, 8], [-0.1, -0.2], "stop", "ab")
    group = ScoredGroup(Prompt("u", "add1", "q", "a"), [5, 6], [done, done], rewards=[1.0, 0.25],
                        reward_parts={}, max_tokens=4, advantages=[1.0, -1.0])
    assert [s.reward for s in to_train_samples([group])] == [1.0, 0.25]


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("override, expected", [
    (["algo.critic_lr=1e-4"], "algo.critic_lr only apply to algo.name: ppo"),
    (["algo.name=ppo", "algo.lam=1.5"], "algo.lam"),
    (["algo.name=ppo", "algo.value_clip=0"], "algo.value_clip"),
    (["algo.name=ppoo"], "algo.name"),
])
def test_config_errors_name_the_field(override, expected):
    with pytest.raises(UserError, match=expected):
        load_config(QUICKSTART, override)


def test_resolved_grpo_config_still_loads(tmp_path):
    # config.yaml in a run directory lists every key, PPO's defaults included.
    from rlcurr.config import dump_config

    (tmp_path / "r.yaml").write_text(dump_config(load_config(QUICKSTART)))
    assert load_config(tmp_path / "r.yaml").algo.name == "grpo"


# ---------------------------------------------------------------- critic and learner


def test_critic_loss_decreases_on_a_fixed_batch(model_dir):
    algo = AlgoConfig(name="ppo", critic_lr=3e-3, value_clip=0.2)
    critic = Critic(model_dir, LearnerConfig(), algo, pad_id=0)
    samples = [TrainSample(s.prompt_ids, s.response_ids, 0.0, [], returns=[s.reward] * len(s.response_ids))
               for s in _samples()]

    def mse() -> float:
        v = critic.values(samples)
        errs = [(x - r) ** 2 for s, vs in zip(samples, v) for x, r in zip(vs, s.returns)]
        return sum(errs) / len(errs)

    first = mse()  # V = 0 at the start: the mean of the squared returns
    assert first == pytest.approx(sum(s.reward * len(s.response_ids) for s in _samples()) / 17)
    for _ in range(15):
        critic.train_step(samples, critic.values(samples), norm_len=5)
    assert mse() < 0.5 * first


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])}


def _snapshot(module: torch.nn.Module) -> dict:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_ppo_learner_step_updates_policy_and_critic(model_dir):
    cfg = load_config(QUICKSTART, ["algo.name=ppo"])
    learner = Learner(model_dir, cfg.learner, cfg.algo, cfg.trainer.steps)
    policy0, critic0 = _snapshot(learner.model), _snapshot(learner.critic.model)
    m = learner.train_step(_samples(), 20)  # past the LR warm-up
    # The head starts at 0: V = 0, so A_t = R before whitening and mean A = mean of the token rewards.
    assert m["critic/value_mean"] == 0.0 and m["ppo/adv_mean"] == pytest.approx(7 / 17)
    assert {"critic/value_loss", "critic/explained_variance", "ppo/adv_mean"} <= set(m)
    assert _changed(policy0, learner.model)
    assert _changed(critic0, learner.critic.model) == {"head.weight", "head.bias"}  # zero head: no backbone grad yet
    learner.train_step(_samples(), 21)
    assert any(n.startswith("backbone.") for n in _changed(critic0, learner.critic.model))


def test_critic_warmup_freezes_the_policy(model_dir):
    learner = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(name="ppo", critic_warmup=1), 10)
    policy0, critic0 = _snapshot(learner.model), _snapshot(learner.critic.model)
    learner.train_step(_samples(), 0)
    assert not _changed(policy0, learner.model) and _changed(critic0, learner.critic.model)
    learner.train_step(_samples(), 1)
    assert _changed(policy0, learner.model)


def test_checkpoint_resumes_the_critic_exactly(model_dir, tmp_path):
    algo = AlgoConfig(name="ppo", critic_lr=1e-3)
    a = Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10)
    a.train_step(_samples(), 0)
    a.save_checkpoint(str(tmp_path))
    b = Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10)
    b.load_checkpoint(str(tmp_path))
    assert b.critic.values(_samples()) == a.critic.values(_samples())
    a.train_step(_samples(), 1)
    b.train_step(_samples(), 1)  # same optimizer moments and shuffling: the same update
    for va, vb in zip(a.critic.values(_samples()), b.critic.values(_samples())):
        assert va == pytest.approx(vb, abs=1e-6)
