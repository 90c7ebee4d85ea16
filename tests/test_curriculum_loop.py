"""The curriculum filters wired into the loop: EAD per-position temperatures in the HF engine,
D3S token masking in the learner, DAPO refill rounds in the trainer (docs/curriculum.md)."""

import math
from pathlib import Path

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig, load_config
from rlcurr.curriculum.config import CurriculumConfig, GuidanceConfig
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.filters import DynamicSamplingExhausted, d3s_subsample, refill_size
from rlcurr.curriculum.guidance import GuidancePolicy
from rlcurr.errors import UserError
from rlcurr.learner.batching import response_logits, token_logprobs
from rlcurr.learner.learner import Learner
from rlcurr.learner.models import build_tiny_model
from rlcurr.metrics import PhaseTimer
from rlcurr.rollout.hf_engine import HFEngine, sample_next
from rlcurr.types import Completion, GenRequest, Prompt, ScoredGroup, TrainSample

ROOT = Path(__file__).resolve().parent.parent
PROMPT = [5, 6, 76]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


# ----------------------------------------------------------------------------- EAD in the HF engine


def test_equal_per_position_temperatures_match_the_scalar_temperature(model_dir):
    engine = HFEngine(model_dir, seed=0)
    scalar = engine.generate([GenRequest(PROMPT, 6, 5, temperature=0.7, seed=3)])[0]
    table = engine.generate([GenRequest(PROMPT, 6, 5, temperature=1.0, seed=3, temperatures=(0.7,) * 5)])[0]
    assert [c.token_ids for c in table] == [c.token_ids for c in scalar]
    assert [c.logprobs for c in table] == [c.logprobs for c in scalar]


def test_each_position_samples_at_its_own_temperature(model_dir):
    engine = HFEngine(model_dir, seed=0)
    temps = (0.5, 2.0, 0.0, 0.0, 0.0)  # positions >= 2 at temperature 0: greedy
    comps = engine.generate([GenRequest(PROMPT, 8, 5, seed=1, temperatures=temps)])[0]
    checked = 0
    for c in comps:
        # Recompute by hand: logits of every answer position from one full forward pass.
        with torch.no_grad():
            logits_TV = response_logits(engine.model, [PROMPT], [c.token_ids], engine.pad_id)[0].float()
        for t, (tok, lp) in enumerate(zip(c.token_ids, c.logprobs)):
            if temps[t] > 0:  # sampling logprob = log softmax(logits / tau_t)[token]
                want = torch.log_softmax(logits_TV[t] / temps[t], -1)[tok]
            else:  # greedy: the argmax, with its untempered logprob
                assert tok == int(logits_TV[t].argmax())
                want = torch.log_softmax(logits_TV[t], -1)[tok]
            assert lp == pytest.approx(float(want), abs=1e-4)
            checked += 1
    assert checked > 8  # (answers that stop at once would check little)
    assert len({tuple(c.token_ids[:2]) for c in comps}) > 1  # positions 0, 1 really were sampled


def test_mixed_rows_zero_temperature_is_greedy():
    logits_BV = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    draws = [sample_next(logits_BV, torch.tensor([0.0, 1.0]), 1.0, torch.rand(2, generator=gen)) for _ in range(50)]
    assert all(int(tok[0]) == 1 for tok, _ in draws)  # row 0 greedy: always the argmax
    assert float(draws[0][1][0]) == pytest.approx(float(torch.log_softmax(logits_BV[0], -1)[1]))
    assert len({int(tok[1]) for tok, _ in draws}) == 3  # row 1 uniform over 3 tokens
    assert float(draws[0][1][1]) == pytest.approx(math.log(1 / 3))


def test_ead_with_vllm_is_a_config_error():
    with pytest.raises(UserError, match=r"curriculum\.ead.*rollout\.engine"):
        load_config(ROOT / "recipes" / "quickstart.yaml", ["curriculum.ead={}", "rollout.engine=vllm"])


# ----------------------------------------------------------------------------- D3S token level


def _samples():
    return [TrainSample(PROMPT, list(range(10, 10 + k)), a, []) for k, a in [(3, 1.0), (5, -0.5), (4, 2.0)]]


def test_token_keep_frac_trains_only_the_top_abs_adv_times_entropy_tokens(model_dir):
    learner = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(), 10)
    samples = _samples()
    old = learner.logprobs(samples)
    norm_len = 5

    def grads(loss):
        learner.model.zero_grad(set_to_none=True)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in learner.model.parameters() if p.grad is not None])

    loss, stats = learner._micro_loss(samples, old, None, norm_len, token_keep_frac=0.5)
    g_d3s = grads(loss)
    # By hand: 12 valid tokens, keep ceil(0.5 * 12) = 6 with the largest |A_i| * H_i,t. On-policy
    # (old = current) the ratio is 1, so the token-mean loss is -(1/6) sum_kept A_i * ratio_i,t and
    # its gradient -(1/6) sum_kept A_i * grad log p_i,t.
    responses = [s.response_ids for s in samples]
    logits_BTV = response_logits(learner.model, [s.prompt_ids for s in samples], responses, learner.pad_id)
    logp_BTV = torch.log_softmax(logits_BTV.detach().float(), -1)
    entropy_BT = -(logp_BTV.exp() * logp_BTV).sum(-1)
    scored = [(abs(s.advantage) * float(entropy_BT[b, t]), b, t)
              for b, s in enumerate(samples) for t in range(len(s.response_ids))]
    kept = sorted(scored, reverse=True)[:6]
    logp_BT = token_logprobs(logits_BTV, responses, learner.pad_id)
    manual = -sum(samples[b].advantage * (logp_BT[b, t] - logp_BT[b, t].detach()).exp() for _, b, t in kept) / 6
    g_manual = grads(manual)
    assert torch.allclose(g_d3s, g_manual, atol=1e-6)
    assert float(stats["d3s/tokens_kept_frac"]) == pytest.approx(6 / 12)
    g_all = grads(learner._micro_loss(samples, old, None, norm_len)[0])
    assert not torch.allclose(g_d3s, g_all, atol=1e-4)  # the mask changed the update


def test_train_step_passes_the_token_fraction(model_dir):
    learner = Learner(model_dir, LearnerConfig(lr=1e-3), AlgoConfig(), 10)
    m = learner.train_step(_samples(), 0, token_keep_frac=0.25)
    assert m["d3s/tokens_kept_frac"] == pytest.approx(3 / 12)  # ceil(0.25 * 12) = 3 of 12 tokens
    assert "d3s/tokens_kept_frac" not in learner.train_step(_samples(), 1)


# ----------------------------------------------------------------------------- D3S sample level


def _group(rewards, dist="a", uid="u"):
    comps = [Completion(token_ids=[i + 1], logprobs=[0.0], finish_reason="stop", text=str(i))
             for i in range(len(rewards))]
    return ScoredGroup(prompt=Prompt(uid=uid, distribution=dist, question="q", answer="a"), prompt_ids=[1],
                       completions=comps, rewards=list(rewards), reward_parts={"r": list(rewards)}, max_tokens=4)


def test_d3s_subsample_keeps_extreme_answers_and_their_full_group_advantages():
    g = _group([1, 0, 0, 0, 1, 0])
    g.advantages = [2.0, -1.0, -1.0, -1.0, 2.0, -1.0]
    (out,) = d3s_subsample([g], 0.5)  # keep round(0.5 * 6) = 3
    # max variance of 3 out of {2, 2, -1 x4}: {2, -1, -1} or {2, 2, -1}, both variance 2;
    # ties go to the split with the fewest lowest values (a = 0): the 3 highest of the stable sort
    # [1, 2, 3, 5, 0, 4], i.e. answers 5, 0, 4.
    assert [c.text for c in out.completions] == ["0", "4", "5"]
    assert out.rewards == [1, 1, 0] and out.reward_parts == {"r": [1, 1, 0]}
    assert out.advantages == [2.0, 2.0, -1.0]  # not recomputed on the subset
    assert g.n == 6  # the input group is unchanged


# ----------------------------------------------------------------------------- DAPO refill rounds


def test_refill_size():
    assert refill_size(missing=2, kept=2, generated=4, cap=8) == 4  # keep rate 1/2 -> 2 / (1/2)
    assert refill_size(missing=3, kept=1, generated=4, cap=8) == 8  # 12, capped
    assert refill_size(missing=1, kept=3, generated=4, cap=8) == 2  # ceil(4 / 3)
    assert refill_size(missing=4, kept=0, generated=4, cap=8) == 8  # nothing kept yet: a full batch


class _ScriptedTrainer:
    """Trainer.collect/filter/set_advantages on a real controller, with rollout + scoring replaced
    by a script of per-round rewards (no model, no Ray)."""

    def __init__(self, rounds, max_rounds=3, per_step=4, guidance=None):
        from rlcurr.trainer import Trainer

        self.collect = Trainer.collect.__get__(self)
        self.filter = Trainer.filter.__get__(self)
        self.set_advantages = Trainer.set_advantages.__get__(self)
        self.generate_for_training = Trainer.generate_for_training.__get__(self)
        self.cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [
            f"trainer.prompts_per_step={per_step}", f"curriculum.dynamic_sampling.max_rounds={max_rounds}"])
        ccfg = CurriculumConfig(dynamic_sampling={"max_rounds": max_rounds}, guidance=guidance)
        pool = {d: [Prompt(uid=f"{d}{i}", distribution=d, question="q", answer="a", hint="h") for i in range(20)]
                for d in ("a", "b")}
        self.controller = CurriculumController(ccfg, pool, prompts_per_step=per_step, n=3, temperature=1.0,
                                               top_p=1.0, max_tokens=4, total_steps=10, seed=0)
        self.rounds = list(rounds)  # one list of reward triples per round, one triple per prompt
        self.planned = []

    def rollout(self, plan):
        self.planned.append(len(plan.items))
        self.generate_for_training([None] * len(plan.items), [it.prompt for it in plan.items])  # counted as real
        return plan.items

    def generate(self, requests, prompts):
        return [[Completion([7, 8], [0.0, 0.0], "stop", "ab")] * 3 for _ in requests]  # 3 answers of 2 tokens

    def score(self, t, items):
        rewards = self.rounds.pop(0)
        assert len(rewards) == len(items)
        return [_group(r, it.prompt.distribution, it.prompt.uid) for it, r in zip(items, rewards)]

    def guide(self, t, plan, groups):
        return groups


MIXED, ZERO = (1, 0, 0), (0, 0, 0)


def test_refill_rounds_fill_the_batch_and_observe_sees_every_group():
    tr = _ScriptedTrainer([[ZERO, MIXED, ZERO, MIXED], [MIXED, MIXED, ZERO, MIXED]])
    batch, generated, stats = tr.collect(0, PhaseTimer())
    # round 1 keeps 2 of 4 -> refill_size(2 missing, 2 kept, 4 generated) = 4 prompts; round 2
    # keeps 3 -> 5 kept, one surplus cut off.
    assert tr.planned == [4, 4]
    assert len(batch) == 4 and all(len(set(g.rewards)) > 1 for g in batch)
    assert [g.prompt.uid for g in batch] == [g.prompt.uid for g in generated if g.rewards != list(ZERO)][:4]
    assert len(generated) == 8 and all(g.advantages is not None for g in generated)
    # every answer generated counts, the dropped groups' too: 8 prompts x 3 answers x 2 tokens
    assert stats == {"groups_dropped": 3, "filter/rounds": 2, "filter/groups_generated": 8,
                     "filter/groups_surplus": 1, "rollout/answers_generated": 24, "rollout/tokens_generated": 48,
                     "rollout/groups_generated": 8, "rollout/zero_variance_groups": 3}  # dropped ones included
    tr.controller.observe(0, generated)  # once per step with all rounds: accepted
    row = tr.controller.record(0)
    assert row["filter"]["rounds"] == 2
    assert sum(row["filter"]["kept"].values()) == 5 and sum(row["filter"]["dropped"].values()) == 3
    assert sum(d["planned"] for d in row["distributions"].values()) == 8


def test_a_full_first_round_needs_no_refill():
    tr = _ScriptedTrainer([[MIXED] * 4])
    batch, generated, stats = tr.collect(0, PhaseTimer())
    assert tr.planned == [4] and len(batch) == 4 and stats["filter/rounds"] == 1


def test_exhausted_rounds_stop_the_run_with_a_clear_error():
    tr = _ScriptedTrainer([[ZERO, MIXED, ZERO, ZERO], [ZERO] * 4, [ZERO] * 4], max_rounds=3)
    with pytest.raises(DynamicSamplingExhausted) as err:
        tr.collect(0, PhaseTimer())
    assert (err.value.rounds, err.value.have, err.value.need) == (3, 1, 4)
    assert isinstance(err.value, UserError)  # the CLI prints it as one line, exit 2
    assert "curriculum.dynamic_sampling.max_rounds" in str(err.value)
    assert tr.planned == [4, 4, 4]  # refill_size(3, 1, 4, cap 4) = 4, then nothing kept: a full batch


def test_guidance_reroll_cap_is_per_step_across_rounds():
    p = GuidancePolicy(GuidanceConfig(max_rerolls=3), ["a"])
    failed = [_group(ZERO, uid=str(i)) for i in range(2)]
    for g in failed:
        g.prompt = Prompt(uid=g.prompt.uid, distribution="a", question="q", answer="a", hint="h")
    assert p.select(failed) == [0, 1]
    assert p.select(failed) == [0]  # round 2 of the same step: 1 re-roll left of 3
    assert p.select(failed) == []
    p.begin_step()
    assert p.select(failed) == [0, 1]
