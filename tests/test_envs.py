"""The reasoning_gym and math environments, through the recipe schema as a user would build them."""

from __future__ import annotations

import json
import time

import pytest

from envs.math import SAMPLE_FILE, MathConfig, MathEnv
from envs.reasoning_gym import LazyPrompts, ReasoningGymEnv, make_hint
from rlcurr.config import RewardConfig, RewardSpec, build_config
from rlcurr.errors import UserError
from rlcurr.rewards.runner import RewardRunner, build_columns


def env_config(env: dict):
    return build_config({"name": "t", "model": {"tiny": {}}, "env": env}).env


KK = {"name": "reasoning_gym", "tasks": [{"task": "knights_knaves", "grid": {"n_people": [3, 4, 5]}}],
      "train_size": 40, "eval_size": 5}


# ---------------------------------------------------------------- reasoning_gym


def test_knights_knaves_grid_builds_distributions_and_scores():
    cfg = env_config(KK)
    t = time.monotonic()
    env = cfg.build(seed=0)
    assert isinstance(env, ReasoningGymEnv) and env.default_rewards == ("reasoning_gym",)
    dists = env.distributions()
    assert dists == [f"knights_knaves/n_people={n}" for n in (3, 4, 5)]
    assert [len(env.train_prompts(d)) for d in dists] == [40] * 3
    assert [len(env.eval_prompts(d)) for d in dists] == [5] * 3
    assert time.monotonic() - t < 0.5  # lazy: nothing generated yet

    prompts = [env.train_prompts(d)[0] for d in dists]
    assert [p.question.count("inhabitants") for p in prompts] == [1, 1, 1]
    assert all(p.hint and p.hint.startswith("the answer begins with:") for p in prompts)

    runner = RewardRunner([RewardSpec(name="reasoning_gym")], RewardConfig())
    completions = [f"<think>...</think><answer>{p.answer}</answer>" for p in prompts] + ["<answer>no idea</answer>"]
    scores = runner.score([p.question for p in prompts + prompts[:1]], completions, build_columns(prompts + prompts[:1]))
    assert scores.totals == [1.0, 1.0, 1.0, 0.0]


def test_reasoning_gym_is_deterministic_and_eval_differs_from_train():
    a, b = env_config(KK).build(seed=0), env_config(KK).build(seed=0)
    d = "knights_knaves/n_people=3"
    assert [p.question for p in a.train_prompts(d)[:5]] == [p.question for p in b.train_prompts(d)[:5]]
    train_q = {p.question for p in a.train_prompts(d)}
    assert not train_q & {p.question for p in a.eval_prompts(d)}
    other = env_config(KK).build(seed=1)
    assert a.train_prompts(d)[0].question != other.train_prompts(d)[0].question


def test_mixture_and_distribution_templates():
    cfg = env_config({"name": "reasoning_gym", "train_size": 10, "tasks": [
        {"task": "countdown", "grid": {"max_numbers": [4, 5]}, "distribution": "countdown{max_numbers}"},
        {"task": "basic_arithmetic"},
    ]})
    env = cfg.build(seed=0)
    assert env.distributions() == ["countdown4", "countdown5", "basic_arithmetic"]
    p = env.train_prompts("countdown5")[3]
    assert p.columns["rg_params"] == {"max_numbers": 5} and p.uid == "countdown5/train/3"
    runner = RewardRunner([RewardSpec(name="reasoning_gym")], RewardConfig())
    assert runner.score([p.question], [p.answer], build_columns([p])).totals == [1.0]


@pytest.mark.parametrize("task,match", [
    ({"task": "knights_knave"}, r"unknown reasoning_gym task 'knights_knave' \(did you mean knights_knaves.*valid tasks: .*countdown"),
    ({"task": "knights_knaves", "params": {"n_peple": 3}}, "unknown parameter 'n_peple'; valid parameters: n_people"),
    ({"task": "knights_knaves", "grid": {"people": [3]}}, "unknown parameter 'people'"),
    ({"task": "knights_knaves", "params": {"seed": 3}}, "'seed' is set by rlcurr"),
    ({"task": "knights_knaves", "params": {"n_people": 0}}, "Number of people must be at least 1"),
    ({"task": "knights_knaves", "grid": {"n_people": [3, 4]}, "distribution": "kk"}, "must be unique"),
])
def test_reasoning_gym_config_errors(task, match):
    with pytest.raises(UserError, match=match):
        env_config({"name": "reasoning_gym", "tasks": [task]})


def test_lazy_prompts_and_hints():
    made = []
    seq = LazyPrompts(5, lambda i: made.append(i) or i)
    assert len(seq) == 5 and seq[-1] == 4 and seq[1:3] == [1, 2] and made == [4, 1, 2]
    assert seq[4] == 4 and made == [4, 1, 2]  # cached
    with pytest.raises(IndexError):
        seq[5]
    assert make_hint("knights_knaves", "A is a knight, B is a knave, and C is a knight.", 0.5) == \
        "the answer begins with: A is a knight"
    assert make_hint("countdown", "94*4 - 61 - 6", 0.5) == "the answer begins with: 94*4 -"
    assert make_hint("any", "1234", 0.5) == "the answer begins with: 12"
    assert make_hint("any", "7", 0.5) is None and make_hint("any", "1234", 0.0) is None


# ---------------------------------------------------------------- math


def test_math_sample_loads_with_distributions_and_hints():
    cfg = env_config({"name": "math", "eval_size": 3})
    env = cfg.build(seed=0)
    assert isinstance(env, MathEnv) and env.default_rewards == ("math_verify",)
    assert env.distributions() == ["algebra", "arithmetic", "geometry"]
    total = sum(len(env.train_prompts(d)) + len(env.eval_prompts(d)) for d in env.distributions())
    assert total == sum(1 for line in SAMPLE_FILE.read_text().splitlines() if line.strip())
    for d in env.distributions():
        assert 1 <= len(env.eval_prompts(d)) <= 3
        assert not {p.uid for p in env.train_prompts(d)} & {p.uid for p in env.eval_prompts(d)}
    prompts = [p for d in env.distributions() for p in env.train_prompts(d) + env.eval_prompts(d)]
    by_q = {p.question: p for p in prompts}
    assert by_q["What is 100 - 37?"].hint == "Subtract 30 first, then 7."  # hint column
    assert by_q["What is 17 + 25?"].hint == "17 + 25 ="  # first half of the solution's words
    assert by_q["What is 9 times 8?"].hint is None
    assert by_q["What is 9 times 8?"].columns["solution"] == "72"

    runner = RewardRunner([RewardSpec(name=n) for n in env.default_rewards], RewardConfig())
    sample = prompts[:6]
    right = runner.score([p.question for p in sample], [f"<answer>{p.answer}</answer>" for p in sample], build_columns(sample))
    assert right.totals == [1.0] * 6


def test_math_distribution_by_difficulty_and_none():
    env = env_config({"name": "math", "distribution_by": "difficulty"}).build(seed=0)
    assert env.distributions() == ["1", "2", "3"]
    env = env_config({"name": "math", "distribution_by": "none"}).build(seed=0)
    assert env.distributions() == ["all"]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_math_eval_files_and_unknown_label(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": 2}, {"question": "2+2?", "answer": "4", "source": "s"}])
    evalf = write_jsonl(tmp_path / "eval.jsonl", [{"question": "3+3?", "answer": "6", "source": "s"}])
    env = MathConfig(train_files=[train], eval_files=[evalf]).build(seed=0)
    assert env.distributions() == ["s", "unknown"]
    assert env.train_prompts("unknown")[0].answer == "2" and env.eval_prompts("unknown") == []
    assert [p.answer for p in env.eval_prompts("s")] == ["6"]


@pytest.mark.parametrize("rows,match", [
    ([{"question": "q", "answer": "1"}, "{not json"], r"bad\.jsonl:2: not valid JSON"),
    ([{"question": "q", "answer": "1"}, "", {"question": "q2"}], r"bad\.jsonl:3: missing 'answer'"),
    ([{"answer": "1"}], r"bad\.jsonl:1: missing 'question'"),
    (["[1, 2]"], r"bad\.jsonl:1: expected a JSON object"),
])
def test_math_malformed_rows_report_file_and_line(tmp_path, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=match):
        MathConfig(train_files=[path]).build(seed=0)


def test_math_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"data file not found: .*nope\.jsonl"):
        MathConfig(train_files=[str(tmp_path / "nope.jsonl")]).build(seed=0)


def test_math_unreadable_files_are_user_errors(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"question": "q", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(UserError, match=r"latin1\.jsonl:2: not UTF-8 text \(byte 0xe9"):
        MathConfig(train_files=[str(bad)]).build(seed=0)
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(UserError, match=r"d\.jsonl is a directory"):
        MathConfig(train_files=[str(tmp_path / "d.jsonl")]).build(seed=0)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "1"}\n{"question": "q2", "answer": "2"}\n')
    assert len(MathConfig(train_files=[str(bom)]).build(seed=0).train_prompts("unknown")) >= 1


def test_math_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"question": ["a?", "b?"], "answer": ["1", "2"], "difficulty": [1, 2]}), path)
    env = MathConfig(train_files=[str(path)], distribution_by="difficulty").build(seed=0)
    assert env.distributions() == ["1", "2"] and env.train_prompts("2")[0].uid.endswith("row 2")


def test_reasoning_gym_scoring_needs_only_picklable_columns():
    """What a Ray worker gets: pickled columns, a fresh process with no scorer datasets built yet."""
    import pickle

    from rlcurr.rewards import builtin

    env = env_config(KK).build(seed=0)
    prompts = [env.eval_prompts("knights_knaves/n_people=4")[i] for i in range(2)]
    cols = pickle.loads(pickle.dumps(build_columns(prompts)))
    builtin._RG_DATASETS.clear()
    fn = pickle.loads(pickle.dumps(builtin.reasoning_gym_reward))
    assert fn(prompts=None, completions=[p.answer for p in prompts], **cols) == [1.0, 1.0]
