"""Multi-turn tool environments: the turn loop, stop strings in both engines, tool tokens out of the
loss, the calculator environment, and a real run through Ray with each engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from envs.calc import CalcConfig, calculate, tool_output
from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig, load_config
from rlcurr.errors import UserError
from rlcurr.learner.batching import response_mask
from rlcurr.learner.dataparallel import weighted_micro_batches
from rlcurr.learner.learner import Learner, logprob_parity
from rlcurr.learner.models import build_char_tokenizer, build_tiny_model
from rlcurr.learner.prepare import encode_target
from rlcurr.metrics import tool_calls
from rlcurr.rewards.builtin import last_line_match
from rlcurr.rollout.multiturn import generate_with_tools
from rlcurr.types import Completion, GenRequest, Prompt, TrainSample

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- the turn loop (no model)


class _Tool:
    """A tool environment for the loop: "]" ends a call, the tool answers "<n>;" with n = the
    number of calls so far, or ends the answer (None) once `stop_after` calls were made."""

    tool_stop = ("]",)

    def __init__(self, max_turns=3, stop_after=None):
        self.max_turns, self.stop_after, self.calls = max_turns, stop_after, []

    def turn(self, prompt, trajectory):
        self.calls.append(trajectory)
        if self.stop_after is not None and len(self.calls) > self.stop_after:
            return None
        return f"{len(self.calls)};"


def _tokenize(text: str) -> list[int]:
    return [ord(ch) for ch in text]  # one id per character


class _Script:
    """A fake engine: answers each request with the next scripted text (token = character), and
    records the requests. A text ending in "]" stops there as a stop string would."""

    def __init__(self, texts):
        self.texts, self.requests = list(texts), []

    def __call__(self, requests):
        self.requests.append(requests)
        out = []
        for r in requests:
            row = []
            for _ in range(r.n):
                text = self.texts.pop(0)[: r.max_tokens]
                stop = next((s for s in r.stop if text.endswith(s)), None)
                row.append(Completion(_tokenize(text), [-0.5] * len(text), "stop" if stop or len(text) < r.max_tokens
                                      else "length", text, stop_reason=stop))
            out.append(row)
        return out


P = Prompt(uid="u", distribution="d", question="q", answer="a")


def test_turns_append_tool_output_masked_and_continue_from_the_whole_prefix():
    engine = _Script(["[ab]", "[c]", "xy", "[d]", "z"])  # in call order: round 1 (a, b), 2 (a, b), 3 (b)
    env = _Tool(max_turns=3)
    out = generate_with_tools(engine, [GenRequest([1, 2], n=2, max_tokens=20)], [P], env, _tokenize)
    a, b = out[0]
    # answer a: "[ab]" + tool "1;" + "xy" (no call: ends). answer b: "[c]" + "2;" + "[d]" + "3;" + "z".
    # Round 1 called the tool for a (call 1) then b (call 2); round 2 continued both, only b called (3).
    assert a.text == "[ab]1;xy" and b.text == "[c]2;[d]3;z"
    assert a.token_ids == _tokenize("[ab]1;xy")
    assert a.tool_mask == [False] * 4 + [True] * 2 + [False] * 2
    assert b.tool_mask == [False] * 3 + [True, True] + [False] * 3 + [True, True] + [False]
    assert a.logprobs == [-0.5] * 4 + [0.0, 0.0] + [-0.5] * 2  # tool tokens: 0.0 placeholders
    assert a.num_generated == 6 and b.num_generated == 7
    assert tool_calls(a.tool_mask) == 1 and tool_calls(b.tool_mask) == 2
    # every request carried the tool's stop strings; continuations = prompt + all so far, budget left
    first, second, third = engine.requests
    assert first[0].stop == ("]",) and first[0].n == 2
    assert [r.prompt_ids for r in second] == [[1, 2] + _tokenize("[ab]1;"), [1, 2] + _tokenize("[c]2;")]
    assert [r.max_tokens for r in second] == [20 - 6, 20 - 5] and all(r.n == 1 for r in second)
    assert [r.prompt_ids for r in third] == [[1, 2] + _tokenize("[c]2;[d]3;")]
    assert env.calls == ["[ab]", "[c]", "[c]2;[d]"]


def test_max_turns_tool_refusal_and_budget_end_the_answer():
    # max_turns 2: the second call is not answered; the answer ends with its call, finish "stop"
    out = generate_with_tools(_Script(["[a]", "[b]"]), [GenRequest([1], n=1, max_tokens=20)], [P], _Tool(2), _tokenize)
    c = out[0][0]
    assert c.text == "[a]1;[b]" and c.finish_reason == "stop" and c.stop_reason == "]"
    # the tool returns None: the answer ends there, nothing appended
    out = generate_with_tools(_Script(["[a]"]), [GenRequest([1], 1, 20)], [P], _Tool(3, stop_after=0), _tokenize)
    assert out[0][0].text == "[a]" and out[0][0].tool_mask is None
    # the tool output (2 tokens) leaves no room for a model token in max_tokens 5: "length"
    out = generate_with_tools(_Script(["[ab]"]), [GenRequest([1], 1, 5)], [P], _Tool(3), _tokenize)
    assert out[0][0].text == "[ab]" and out[0][0].finish_reason == "length"
    # an answer without a call is the engine's answer unchanged
    out = generate_with_tools(_Script(["plain"]), [GenRequest([1], 1, 20)], [P], _Tool(3), _tokenize)
    assert out[0][0].text == "plain" and out[0][0].tool_mask is None and out[0][0].stop_reason is None


def test_the_tool_reads_the_call_up_to_the_stop_string_not_the_rest_of_its_token():
    # A turn that ends with a merged token "]=" completing the stop "]": its text is the token's
    # whole decoding (rlcurr.rollout.stop_strings). The tool reads the trajectory cut right after
    # "]"; the "=" stays in the answer, before the tool output, as the model wrote it.
    merged = 1000  # the id of "]="
    turns = iter([Completion([ord("["), ord("a"), merged], [-0.5] * 3, "stop", "[a]=", stop_reason="]"),
                  Completion(_tokenize("z"), [-0.5], "stop", "z")])
    env = _Tool(max_turns=2)
    out = generate_with_tools(lambda reqs: [[next(turns)] for _ in reqs], [GenRequest([1], 1, 20)], [P], env, _tokenize)
    (c,) = out[0]
    assert env.calls == ["[a]"]
    assert c.text == "[a]=1;z" and c.token_ids == [ord("["), ord("a"), merged] + _tokenize("1;z")
    assert c.tool_mask == [False] * 3 + [True, True] + [False]


# ----------------------------------------------------------------------------- stop strings in the engines


def _stop_inside(text: str) -> str:
    """A two-character stop string taken from the middle of `text` (its first occurrence ends it)."""
    return text[len(text) // 2 : len(text) // 2 + 2]


def _assert_stopped_prefix(full: Completion, stopped: Completion, stop: str):
    # Same seed, same draws: the stopped answer is the unstopped one cut right after the stop
    # string's first occurrence, and says which string stopped it.
    cut = full.text.index(stop) + len(stop)
    assert stopped.text == full.text[:cut]
    assert stopped.token_ids == full.token_ids[: len(stopped.token_ids)]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == stop
    assert full.stop_reason is None


def test_hf_engine_stop_strings(tmp_path):
    from rlcurr.rollout.hf_engine import HFEngine

    model = build_tiny_model(TinyModelConfig(), tmp_path / "m", seed=0)
    engine = HFEngine(str(model), seed=0)
    req = GenRequest([5, 6, 7], n=3, max_tokens=30, temperature=1.0, seed=11)
    full = engine.generate([req])[0]
    stop = _stop_inside(full[0].text)
    stopped = engine.generate([GenRequest([5, 6, 7], 3, 30, 1.0, seed=11, stop=(stop, "\x00never"))])[0]
    _assert_stopped_prefix(full[0], stopped[0], stop)
    for f, s in zip(full[1:], stopped[1:]):  # the other rows: cut at their own first occurrence, if any
        if stop in f.text:
            _assert_stopped_prefix(f, s, stop)
        else:
            assert s.token_ids == f.token_ids


# ----------------------------------------------------------------------------- the learner ignores tool tokens


def _learner(model_dir, loss_agg="token-mean"):
    return Learner(str(model_dir), LearnerConfig(lr=1e-3), AlgoConfig(loss_agg=loss_agg, micro_batch_size=8),
                   total_steps=10, seed=0, temperature=1.0)


def _grads(learner, samples):
    learner.model.zero_grad(set_to_none=True)
    loss, _ = learner._micro_loss(samples, None, None, norm_len=12)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in learner.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_tool_tokens_at_the_end_train_like_an_answer_cut_before_them(tmp_path, loss_agg):
    # Causal model: the logprobs of tokens before the tool output do not depend on it. So an answer
    # whose last k tokens are tool output must give exactly the loss and gradient of the same
    # answer cut before them, whatever the aggregation (the masked tokens add nothing to sums,
    # and the token counts of means are the cut answer's).
    learner = _learner(build_tiny_model(TinyModelConfig(), tmp_path / "m", seed=0), loss_agg)
    answers = [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23]]
    masked = [TrainSample([5, 6], a, adv, [0.0] * len(a), tool_mask=[False] * (len(a) - 2) + [True] * 2)
              for a, adv in zip(answers, [1.0, -0.5])]
    cut = [TrainSample([5, 6], a[:-2], adv, [0.0] * (len(a) - 2)) for a, adv in zip(answers, [1.0, -0.5])]
    loss_m, grads_m = _grads(learner, masked)
    loss_c, grads_c = _grads(learner, cut)
    assert torch.allclose(loss_m, loss_c, atol=1e-6)
    for gm, gc in zip(grads_m, grads_c):
        assert torch.allclose(gm, gc, atol=1e-6)


def test_masks_weights_and_parity_count_policy_tokens_only():
    # response_mask with tool masks: row 0 = 4 tokens, tokens 1-2 tool; row 1 = 2 tokens, no tool
    mask = response_mask([4, 2], 4, [[False, True, True, False], None])
    assert mask.tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]
    # token-mean micro-batch weights: policy tokens 2 and 2 -> 0.5 each (response lengths 4 and 2
    # would have given 4/6 and 2/6)
    s = [TrainSample([1], [1, 2, 3, 4], 1.0, [0.0] * 4, tool_mask=[False, True, True, False]),
         TrainSample([1], [1, 2], 1.0, [0.0] * 2)]
    assert [w for _, w in weighted_micro_batches(s, [0, 1], 1, "token-mean")] == [0.5, 0.5]
    # parity: tool tokens carry placeholder 0.0 rollout logprobs; left out, the mean is |−1 − (−1.5)|
    # over the 2 policy tokens of row 0 (0.5 each) and the 2 of row 1 (0 each) = 0.25
    s = [TrainSample([1], [1, 2, 3, 4], 1.0, [-1.0, 0.0, 0.0, -1.0], tool_mask=[False, True, True, False]),
         TrainSample([1], [1, 2], 1.0, [-2.0, -2.0])]
    parity = logprob_parity(s, [[-1.5, -3.0, -3.0, -1.5], [-2.0, -2.0]])
    assert parity["rollout/logprob_abs_diff_mean"] == pytest.approx(0.25)
    assert parity["rollout/logprob_abs_diff_max"] == pytest.approx(0.5)


def test_sft_target_pieces_mark_tool_output():
    tok = build_char_tokenizer()
    ids, tool = encode_target(tok, [("[1+2]", False), ("3\n", True), ("3", False)])
    assert tok.decode(ids) == "[1+2]3\n3"
    assert tool == [False] * 5 + [True, True] + [False]
    assert encode_target(tok, "42") == (tok("42", add_special_tokens=False)["input_ids"], None)


# ----------------------------------------------------------------------------- the calculator environment


def test_calculator_tool_and_reward():
    assert calculate("12*(3+4)") == 84 and calculate("-3+5") == 2
    for bad in ("2**100", "1/2", "__import__('os')", "x", "", "1e3"):
        assert calculate(bad) is None, bad
    assert tool_output("[37*24+15]") == "903\n"
    assert tool_output("[37*24+15") == "?\n" and tool_output("[1/0]") == "?\n"
    # reward: the last line of the answer is the final answer
    assert last_line_match(None, ["[37*24+15]903\n903", "[37*24+15]903\n90", "903", "[1+1]2\n"],
                           answer=["903"] * 4) == [1.0, 0.0, 1.0, 0.0]


def test_calc_env_pools_and_sft_examples():
    env = CalcConfig(eval_size=20, train_size=200).build(0)
    assert env.distributions() == ["add3", "mul2", "muladd"] and env.tool_stop == ("]",) and env.max_turns == 2
    for d in env.distributions():
        train, held = env.train_prompts(d), env.eval_prompts(d)
        assert len(train) == 200 and len(held) == 20
        assert not {p.question for p in train} & {p.question for p in held}
        assert all(str(calculate(p.question[:-1])) == p.answer for p in train)
    p, pieces = env.sft_examples("muladd")[0]
    assert pieces == [(f"[{p.question[:-1]}]", False), (f"{p.answer}\n", True), (p.answer, False)]
    assert env.turn(p, pieces[0][0]) == pieces[1][0]
    # sft_tool_fraction: that share of warm-up examples (seeded) calls the tool, the rest answer directly
    half = CalcConfig(eval_size=20, train_size=200, sft_tool_fraction=0.5).build(0).sft_examples("mul2")
    direct = [(p, t) for p, t in half if len(t) == 1]
    assert 70 <= len(direct) <= 130 and all(t == [(p.answer, False)] for p, t in direct)


def test_tool_env_refuses_ppo_and_ead():
    from rlcurr.trainer import check_tool_support

    env = CalcConfig().build(0)
    recipe = ROOT / "recipes" / "calc_tool.yaml"
    with pytest.raises(UserError, match="algo.name: ppo"):
        check_tool_support(load_config(recipe, ["algo.name=ppo", "algo.loss_agg=token-mean"]), env)
    with pytest.raises(UserError, match="curriculum.ead"):
        check_tool_support(load_config(recipe, ["curriculum.ead={}", "algo.tis_cap=2.0"]), env)
    check_tool_support(load_config(recipe), env)  # the recipe itself is fine


# ----------------------------------------------------------------------------- real runs (Ray, both engines)


def _run(ray_session, tmp_path, engine: str, steps: int) -> list[dict]:
    from rlcurr.trainer import Trainer

    out = tmp_path / f"calc_{engine}"
    cfg = load_config(ROOT / "recipes" / "calc_tool.yaml", [
        f"trainer.output_dir={out}", f"trainer.steps={steps}", "eval.every=0", "env.eval_size=4",
        "trainer.prompts_per_step=4", "rollout.n=4", f"rollout.engine={engine}", "model.warmup.steps=60",
        "env.sft_tool_fraction=1.0",
        "logging.progress=false", "rollout.gpu_memory_utilization=0.05"])
    trainer = Trainer(cfg, log=lambda *_: None)
    try:
        trainer.train(trainer.start())
    finally:
        trainer.rollout_pool.shutdown()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("vllm"), reason="vllm not installed"))])
def test_tool_run_through_ray(ray_session, tmp_path, engine):
    # 60 SFT steps teach the call format (measured: ~0.8 calls per answer); tool outputs are in the
    # answers, and the learner's logprobs of the policy's tokens match the engine's (tool tokens,
    # with placeholder logprobs, are left out: with them the mean difference would be ~ their logprob).
    rows = _run(ray_session, tmp_path, engine, steps=2)
    train = [r for r in rows if r["step"] >= 0]
    assert [r["step"] for r in rows] == [-1, 0, 1] and "eval/accuracy/mul2" in rows[-1]
    assert all(r["rollout/tool_calls_per_answer"] > 0.3 for r in train)
    assert all(0 < r["rollout/tool_tokens_frac"] < 0.5 for r in train)
    assert all(r["rollout/logprob_abs_diff_mean"] < 1e-4 for r in train), [r["rollout/logprob_abs_diff_mean"] for r in train]
    assert all(r["rollout/tokens_generated"] < r["tokens"] for r in train)  # tool tokens are not "generated"
