"""The chain testbed (envs/chain.py): traces, the full-trace check, the reward, the pools."""

import pytest
from pydantic import ValidationError

from envs.chain import ChainConfig, chain_answer, question, running_sums, trace, trace_is_correct


def test_trace_by_hand():
    # digits 3, 5, 1 mod 10: running sums 3, 8, 9. Step a verbose "a3=3", b terse "b8", c verbose "c1=9".
    assert running_sums([3, 5, 1], 10) == [3, 8, 9]
    assert trace([3, 5, 1], [True, False, True], 10) == "a3=3b8c1=9#9"
    # mod 5: 3, 8 -> 3, 9 -> 4: sums 3, 3, 4
    assert trace([3, 5, 1], [False, False, False], 5) == "a3b3c4#4"


@pytest.mark.parametrize("text,ok", [
    ("a3=3b8c1=9#9", True),    # mixed verbose and terse steps
    ("a3b8c9#9", True),        # all terse
    ("a3=3b5=8c1=9#9", True),  # all verbose
    (" a3b8c9#9 ", True),      # surrounding whitespace is not the model's error
    ("a3b8c9#8", False),       # wrong final
    ("a3b7c9#9", False),       # wrong intermediate sum, right final
    ("a3b8#9", False),         # a step missing
    ("a3b8c9d9#9", False),     # an extra step
    ("a3b8x c9#9", False),     # stray characters between steps
    ("a3c8b9#9", False),       # labels out of order
    ("a3=3b4=8c1=9#9", False),  # verbose step copies the wrong digit
    ("a3b8c9", False),         # no final answer
])
def test_trace_is_correct(text, ok):
    assert trace_is_correct(text, "351", 10) is ok


def test_chain_answer_checks_the_trace_and_scores_noise_on_the_final_digit():
    out = chain_answer(["q"] * 4, ["a3b8c9#9", "a3b7c9#9", "x#4", "x#5"],
                       answer=["9", "9", "4", "4"], digits=["351", "351", None, None], modulus=[10, 10, None, None])
    assert out == [1.0, 0.0, 1.0, 0.0]


def test_env_pools_sft_traces_and_hints():
    cfg = ChainConfig(lengths=[1, 2, 6], modulus=5, eval_size=20, train_size=100, steps="digits")
    env = cfg.build(0)
    assert env.distributions() == ["len01", "len02", "len06", "noise"]
    assert env.unlearnable == ("noise",)
    long_train = {p.question for p in env.train_prompts("len06")}
    assert not long_train & {p.question for p in env.eval_prompts("len06")}  # held out where the space allows
    lengths = set()
    for d in ("len01", "len02", "len06"):
        for p, target in env.sft_examples(d):
            assert trace_is_correct(target, p.columns["digits"], 5)
            assert all(int(c) < 5 for c in p.columns["digits"])
            assert p.hint and target.replace("=", "").startswith(p.hint[:2])  # the hint begins the trace
            lengths.add(len(target))
    assert len(lengths) > 6  # verbose and terse steps: traces of one rung vary in length (the budget's slack)
    # the hint is the first half of the terse trace, and is itself correct as far as it goes
    p = env.eval_prompts("len06")[0]
    assert p.hint == trace([int(c) for c in p.columns["digits"]], [False] * 6, 5)[:6]


def test_stride_questions_by_hand_and_slips_only_in_sft_targets():
    # "37d=": start 3, stride 7, last label d -> digits 3,7,7,7, sums 3, 0, 7, 4 (mod 10)
    assert question([3, 7, 7, 7], "stride") == "37d="
    assert running_sums([3, 7, 7, 7], 10) == [3, 0, 7, 4]
    env = ChainConfig(lengths=[8], modulus=5, eval_size=10, train_size=400, slip_rate=0.05).build(0)
    wrong = 0
    for p, target in env.sft_examples("len08"):
        start, stride, last = p.question[0], p.question[1], p.question[2]
        assert p.columns["digits"] == start + stride * 7 and last == "h" and stride != "0"
        assert p.answer == str(running_sums([int(c) for c in p.columns["digits"]], 5)[-1])  # the reward's truth
        wrong += not trace_is_correct(target, p.columns["digits"], 5)
    # P(no slip in 8 steps) = prod_i (1 - 0.05 i) = 0.95*0.90*...*0.60 ~ 0.119: ~88 % of targets slip
    assert 0.8 < wrong / 400 < 0.95


def test_config_rejects_bad_lengths():
    with pytest.raises(ValidationError, match="distinct"):
        ChainConfig(lengths=[2, 2])
    with pytest.raises(ValidationError, match="between 1 and 26"):
        ChainConfig(lengths=[0, 30])


def test_sampled_eval_is_the_mean_over_every_answer_and_the_mean_skips_noise():
    """Trainer.evaluate with eval.samples = 3 on the chain env, generation and scoring scripted:
    every rung prompt gets 3 answers of which the first 2 are right -> 2/3; noise prompts (asked
    last) get 3 wrong ones -> 0, which must not pull the learnable mean down."""
    from pathlib import Path
    from types import SimpleNamespace

    from rlcurr.config import load_config
    from rlcurr.trainer import Trainer

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "recipes" / "chain_uniform.yaml", ["eval.samples=3", "env.eval_size=4", "env.lengths=[2,5]"])
    env = cfg.env.build(0)
    requests = []

    def generate(reqs, prompts):
        requests.extend(reqs)
        rung = [[SimpleNamespace(text=t) for t in ("right", "right", "wrong")] for _ in reqs[:8]]
        return rung + [[SimpleNamespace(text="wrong")] * 3 for _ in reqs[8:]]

    fake = SimpleNamespace(cfg=cfg, env=env, encode=lambda p: [1, 2], generate=generate,
                           tokenizer=SimpleNamespace(decode=lambda ids: "q"),
                           verifier=SimpleNamespace(score=lambda prompts, texts, cols: SimpleNamespace(
                               totals=[1.0 if t == "right" else 0.0 for t in texts])))
    out = Trainer.evaluate(fake)
    assert {r.n for r in requests} == {3} and {r.temperature for r in requests} == {1.0}
    assert len(requests) == 3 * 4  # len02, len05, noise x 4 held-out prompts
    assert out["eval/accuracy/len02"] == out["eval/accuracy/len05"] == 2 / 3 and out["eval/accuracy/noise"] == 0
    assert out["eval/accuracy_mean"] == 2 / 3  # over len02 and len05; noise is unlearnable
