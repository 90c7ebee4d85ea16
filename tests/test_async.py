"""Bounded-staleness training (trainer.max_staleness): the decoupled objective derived
by hand, the learner's one-forward shortcut giving the same update as the separate pass, the
config rules, and real asynchronous runs (Ray, HF engine): lags, curriculum lines, learning."""

import json

import pytest
import torch

from rlcurr.algos.losses import policy_loss, truncated_is_weights
from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig, load_config
from rlcurr.errors import UserError
from rlcurr.learner.learner import Learner, staleness_metrics
from rlcurr.learner.models import build_tiny_model
from rlcurr.types import TrainSample

from test_resume import ROOT, SAME_ARGS


# ---------------------------------------------------------------- the objective, by hand


def test_decoupled_objective_by_hand():
    """One answer of 3 tokens, advantage A = 1, cap 2, clip (0.2, 0.28), token-mean.

    behaviour (engine, stale weights) probabilities b = (0.2, 0.6, 0.5); proximal (learner before
    the update) p = (0.5, 0.3, 0.5); current pi = (0.5, 0.3, 0.75), i.e. ratios r = pi / p =
    (1, 1, 1.5).
      weights w = min(p / b, 2) = (min(2.5, 2), 0.5, 1) = (2, 0.5, 1)
      clipped ratio terms min(r A, clip(r, 0.8, 1.28) A) = (1, 1, 1.28)   (token 3 clipped above)
      loss = -(2 * 1 + 0.5 * 1 + 1 * 1.28) / 3 = -3.78 / 3 = -1.26
      d loss / d log pi_t = -w_t r_t A / 3 where the unclipped branch is active, 0 where clipped:
                          = (-2/3, -0.5/3, 0)
    The clip is on r = pi / p, never on pi / b (which would be 2.5 / 0.5 / 1.5 here)."""
    b = torch.tensor([[0.2, 0.6, 0.5]]).log()
    p = torch.tensor([[0.5, 0.3, 0.5]]).log()
    logpi = torch.tensor([[0.5, 0.3, 0.75]]).log().requires_grad_(True)
    mask = torch.ones(1, 3)
    w = truncated_is_weights(p, b, mask, cap=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 1.0]]))
    loss, stats = policy_loss(logpi, p, torch.tensor([1.0]), mask, 0.2, 0.28, "token-mean", is_weight_BT=w)
    assert loss.item() == pytest.approx(-1.26, abs=1e-6)
    loss.backward()
    assert torch.allclose(logpi.grad, torch.tensor([[-2 / 3, -0.5 / 3, 0.0]]), atol=1e-6)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 3)


def test_staleness_metrics():
    s = lambda v: TrainSample([1], [2], 0.0, [], policy_version=v)  # noqa: E731
    assert staleness_metrics([s(5), s(4), s(3)], step=5) == {"async/policy_lag_mean": 1.0, "async/policy_lag_max": 2.0}
    assert staleness_metrics([TrainSample([1], [2], 0.0, [])], step=5) == {}


# ---------------------------------------------------------------- the learner


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def _stale_samples(learner):
    """Answers with engine logprobs from 'older weights': the learner's own, shifted per token by
    known amounts (some past the cap), advantages mixed, one exactly 0."""
    base = [TrainSample(prompt_ids=[5, 6, 76], response_ids=[(7 * j + 3 * t) % 90 + 10 for t in range(k)],
                        advantage=a, rollout_logprobs=[], policy_version=3)
            for j, (k, a) in enumerate([(3, 1.0), (2, -0.5), (4, 0.0), (3, 0.75)])]
    own = learner.logprobs(base)
    shifts = [0.9, -0.4, 0.1, -1.2]  # exp(0.9) = 2.46 > cap 2: truncated
    return [TrainSample(s.prompt_ids, s.response_ids, s.advantage, [x - shifts[(i + t) % 4] for t, x in enumerate(lp)],
                        policy_version=s.policy_version) for i, (s, lp) in enumerate(zip(base, own))]


def test_one_forward_shortcut_is_the_separate_pass(model_dir, monkeypatch):
    """With one optimizer step per batch the proximal logprobs are the training forward's,
    detached: the update with TIS weights built from them equals the update with a separate
    old-logprob pass (two steps, AdamW, the zero-advantage skip on)."""
    def make():
        return Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(micro_batch_size=2, tis_cap=2.0), 10)

    short, separate = make(), make()
    samples = _stale_samples(short)
    forwards = []
    separate.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    monkeypatch.setattr(separate, "old_from_training_forward", lambda _s: False)
    assert short.old_from_training_forward(samples)
    for step in (4, 5):
        a, b = short.train_step(samples, step), separate.train_step(samples, step)
        # (the tis/* metrics differ: the shortcut has no logprobs of the skipped zero-advantage answer)
        assert a["tis/clipped_frac"] > 0 and b["tis/clipped_frac"] > 0
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["async/policy_lag_max"] == step - 3
    diff = max((p - q).abs().max().item() for p, q in zip(short.model.parameters(), separate.model.parameters()))
    assert diff < 1e-6
    assert len(forwards) > 2  # the separate pass really ran its own forwards


def test_stale_weights_change_the_update(model_dir):
    """The behaviour weights matter: the same answers with engine logprobs equal to the learner's
    (weights 1) take a different step than with the stale ones."""
    def make():
        return Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(micro_batch_size=2, tis_cap=2.0), 10)

    stale, fresh = make(), make()
    samples = _stale_samples(stale)
    own = stale.logprobs(samples)
    fresh_samples = [TrainSample(s.prompt_ids, s.response_ids, s.advantage, lp) for s, lp in zip(samples, own)]
    a, b = stale.train_step(samples, 4), fresh.train_step(fresh_samples, 4)
    assert b["tis/weight_mean"] == pytest.approx(1.0, abs=1e-5)
    assert a["tis/weight_mean"] != pytest.approx(1.0, abs=1e-2)
    assert a["grad_norm"] != pytest.approx(b["grad_norm"], rel=1e-3)


# ---------------------------------------------------------------- config


def _cfg(*over):
    return load_config(ROOT / "recipes" / "quickstart.yaml", list(over))


def test_async_config_defaults_and_refusals():
    assert _cfg().algo.tis_cap is None
    assert _cfg("trainer.max_staleness=1").algo.tis_cap == 2.0  # filled in while validating
    assert _cfg("trainer.max_staleness=2", "algo.tis_cap=5").algo.tis_cap == 5.0
    with pytest.raises(UserError, match="trainer.max_staleness.*resources.colocate"):
        _cfg("trainer.max_staleness=1", "resources.colocate=true")
    with pytest.raises(UserError, match="trainer.max_staleness"):
        _cfg("trainer.max_staleness=-1")


def test_cpu_threads_split_only_when_async():
    from rlcurr.trainer import cpu_threads

    assert cpu_threads(_cfg(), gpus=False) == (None, None)
    assert cpu_threads(_cfg("trainer.max_staleness=1"), gpus=True) == (None, None)
    rollout, learner = cpu_threads(_cfg("trainer.max_staleness=1"), gpus=False)
    assert rollout >= 1 and learner >= 1


def test_cpu_threads_capped_by_the_environment(monkeypatch):
    """RLCURR_CPU_THREADS=N: a synchronous run takes N threads per actor; an asynchronous one
    splits N (not the machine's cores): N // 2 to the learner, the rest to the one rollout worker."""
    from rlcurr.trainer import cpu_threads

    monkeypatch.setenv("RLCURR_CPU_THREADS", "1")
    assert cpu_threads(_cfg(), gpus=False) == (1, 1)
    monkeypatch.setenv("RLCURR_CPU_THREADS", "4")
    assert cpu_threads(_cfg("trainer.max_staleness=1"), gpus=False) == (2, 2)
    monkeypatch.setenv("RLCURR_CPU_THREADS", "two")
    with pytest.raises(UserError, match="RLCURR_CPU_THREADS"):
        cpu_threads(_cfg(), gpus=False)


# ---------------------------------------------------------------- real runs


def _train(run_dir, *extra):
    from rlcurr.trainer import Trainer

    cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [f"trainer.output_dir={run_dir}", *SAME_ARGS, *extra])
    trainer = Trainer(cfg, log=lambda *_: None)
    try:
        trainer.run()
    finally:
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()
    read = lambda name: [json.loads(x) for x in (run_dir / name).read_text().splitlines()]  # noqa: E731
    return read("metrics.jsonl"), read("curriculum.jsonl")


@pytest.mark.parametrize("k", [1, 2])
def test_async_run_lags_and_records(ray_session, tmp_path, k):
    """6 steps with dynamic sampling off: batch s is collected during step max(0, s - k) with the
    weights of that step, so it trains max(0, ...) -> lag min(s, k); every line says so, the
    learner saw exactly that lag, the curriculum planned every step once and in order."""
    metrics, lines = _train(tmp_path / "run", f"trainer.max_staleness={k}", "curriculum.sampler=ucb")
    rows = [m for m in metrics if m["step"] >= 0]
    assert [m["step"] for m in rows] == list(range(6)) and [c["step"] for c in lines] == list(range(6))
    assert [m["async/lag"] for m in rows] == [min(s, k) for s in range(6)]
    assert [c["lag"] for c in lines] == [min(s, k) for s in range(6)]
    assert [c["policy_version"] for c in lines] == [max(0, s - k) for s in range(6)]
    assert [m["async/policy_lag_max"] for m in rows] == [min(s, k) for s in range(6)]
    assert all("tis/weight_mean" in m and 0 <= m["time/outside_gen_learn_frac"] <= 1 for m in rows)
    assert all(sum(d["planned"] for d in c["distributions"].values()) == 4 for c in lines)
    from rlcurr.report import load_run, summary_json

    lag = summary_json(load_run(tmp_path / "run"))["policy_lag"]  # what `rlcurr inspect` prints
    assert lag == {"mean": sum(min(s, k) for s in range(6)) / 6, "max": k}

# 'parameters changed and reward rose' with max_staleness 1: tests/test_e2e.py runs the quickstart both ways.


FEATURES = {  # every curriculum feature that acts on a batch, in async mode (quickstart's 50-step warm-up)
    "dapo_d3s_ead_guidance": ["curriculum.dynamic_sampling={max_rounds: 8}", "curriculum.d3s={}",
                              "curriculum.ead={warm_tokens: 1, d0: 0.2, alpha: 0.02, tau_max: 1.2, tau_min: 0.1}",
                              "curriculum.guidance={}"],
    "speed": ["curriculum.speed={}", "rollout.n=8"],
}


@pytest.mark.parametrize("name", list(FEATURES))
def test_curriculum_features_run_async(ray_session, tmp_path, name):
    """DAPO refill rounds, guided re-rolls, SPEED screening and EAD temperatures all happen while
    the batch is collected (k steps ahead, with that step's weights); D3S down-samples when the
    batch trains. Each runs in async mode and records what it did at its own step."""
    metrics, lines = _train(tmp_path / "run", "trainer.max_staleness=1", "env.distributions=[add1]",
                            "model.warmup.steps=50", "rollout.max_tokens=6", "trainer.steps=4", *FEATURES[name])
    rows = [m for m in metrics if m["step"] >= 0]
    assert [m["async/lag"] for m in rows] == [0, 1, 1, 1]
    if name == "speed":
        assert all(m["speed/rounds"] >= 1 and m["speed/screened"] >= 4 for m in rows)
    else:
        assert all(c["filter"]["rounds"] >= 1 and c["hints"] is not None and c["d3s"]["answers_kept_frac"] > 0
                   for c in lines)
        assert all(m["filter/rounds"] >= 1 and "d3s/tokens_kept_frac" in m for m in rows)
