"""Reward registry, built-in rewards and the runner's failure policy."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid

import pytest

from rlcurr.config import RewardConfig, RewardSpec
from rlcurr.errors import UserError
from rlcurr.rewards import builtin
from rlcurr.rewards.registry import completion_format, register, registered_names, resolve_reward
from rlcurr.rewards.runner import RewardRunner, build_columns, reward_specs
from rlcurr.types import Prompt

# ---------------------------------------------------------------- helpers for user rewards defined here


def sleepy_reward(prompts, completions, **kwargs):
    time.sleep(5)
    return [1.0] * len(completions)


def fails_on_bad(prompts, completions, **kwargs):
    if any(c == "bad" for c in completions):
        raise ValueError("cannot score 'bad'")
    return [1.0] * len(completions)


def hangs_on_slow(prompts, completions, **kwargs):
    if any(c == "slow" for c in completions):
        time.sleep(5)
    return [1.0] * len(completions)


def wrong_length(prompts, completions, **kwargs):
    return [1.0]


def wrong_type(prompts, completions, **kwargs):
    return ["yes"] * len(completions)


def not_a_list(prompts, completions, **kwargs):
    return 1.0


async def async_reward(prompts, completions, answer, **kwargs):
    await asyncio.sleep(0.01)
    return [float(c == a) for c, a in zip(completions, answer)]


def no_kwargs(prompts, completions):
    return [0.0] * len(completions)


def needs_column(prompts, completions, difficulty, **kwargs):
    return [float(d) for d in difficulty]


NOT_CALLABLE = 3

HERE = __name__


def runner(*names, on_error="raise", timeout_s=5.0, weights=None, conversational=False):
    weights = weights or [1.0] * len(names)
    specs = [RewardSpec(name=n if n in registered_names() or ":" in n else f"{HERE}:{n}", weight=w) for n, w in zip(names, weights)]
    return RewardRunner(specs, RewardConfig(timeout_s=timeout_s, on_error=on_error), conversational=conversational)


# ---------------------------------------------------------------- built-ins


def test_exact_match_plain_tags_and_messages():
    comps = ["46", " 46\n", "<think>4+6</think><answer>46</answer>", "47", [{"role": "assistant", "content": "46"}]]
    assert builtin.exact_match(None, comps, answer=["46"] * 5) == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert builtin.exact_match(None, ["x"], answer=[None]) == [None]


def test_math_verify():
    comps = [r"The answer is \boxed{\frac{1}{3}}", "<answer>0.5</answer>", "I think 7", "no idea {{{", "2/6"]
    answers = [r"\frac{1}{3}", "1/2", "8", "3", r"\frac{1}{3}"]
    assert builtin.math_verify(None, comps, answer=answers) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert builtin.math_verify(None, ["3"], answer=["@@@"]) == [None]  # unparseable reference
    # bare LaTeX references and tagged answers: 9\pi is not 9
    pi = builtin.math_verify(None, [r"<answer>9\pi</answer>", "<answer>9</answer>", r"so \boxed{9\pi}"], answer=[r"9\pi"] * 3)
    assert pi == [1.0, 0.0, 1.0]


def test_format():
    comps = ["<think>a</think><answer>b</answer>", " <think>\na\n</think>\n<answer>b</answer>\n", "<answer>b</answer>",
             "<think>a</think>", "<think>a</think><answer>b</answer> trailing", "<answer>b</answer><think>a</think>"]
    assert builtin.format_reward(None, comps) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_length_budget():
    f = builtin.length_budget
    assert f(None, ["a"] * 4, budget=[10, 10, 10, None], num_tokens=[5, 15, 100, 3]) == [0.0, -0.5, -1.0, None]
    assert f(None, ["a", "b"]) == [None, None]  # no budget column
    with pytest.raises(ValueError, match="num_tokens"):
        f(None, ["a"], budget=[10])


def test_reasoning_gym_reward_uses_task_scorer():
    import reasoning_gym

    ds = reasoning_gym.create_dataset("knights_knaves", seed=3, size=2, n_people=3)
    entry = ds[0]
    terms = entry["metadata"]["knight_knave_terms"]  # the puzzle's words for knight/knave vary
    first = entry["answer"].split(",")[0]
    flipped = first.replace(terms["knight"], "@").replace(terms["knave"], terms["knight"]).replace("@", terms["knave"])
    wrong = entry["answer"].replace(first, flipped, 1)
    got = builtin.reasoning_gym_reward(
        None, [f"<answer>{entry['answer']}</answer>", entry["answer"], "nonsense"],
        rg_task=["knights_knaves"] * 3, rg_entry=[entry] * 3, rg_params=[{"n_people": 3}] * 3,
    )
    assert got[:2] == [1.0, 1.0] and got[2] == 0.0
    assert builtin.reasoning_gym_reward(None, [wrong], rg_task=["knights_knaves"], rg_entry=[entry])[0] < 1.0


# ---------------------------------------------------------------- registry


def test_unknown_name_lists_registered():
    with pytest.raises(UserError) as e:
        resolve_reward("exact_mach")
    msg = str(e.value)
    assert "exact_mach" in msg and "did you mean 'exact_match'" in msg
    for name in ("exact_match", "math_verify", "format", "length_budget", "reasoning_gym"):
        assert name in msg


def test_register_decorator():
    name = f"test_reward_{uuid.uuid4().hex[:6]}"

    @register(name)
    def mine(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    assert resolve_reward(name) is mine
    with pytest.raises(ValueError, match="already registered"):
        register(name)(lambda prompts, completions, **kw: [])


def test_bad_module_names_module_and_reason(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def f(:\n")
    with pytest.raises(UserError, match=rf"cannot import module '{mod}'.*SyntaxError"):
        resolve_reward(f"{mod}:f")
    with pytest.raises(UserError, match=r"cannot import module 'no_such_mod_xyz'.*ModuleNotFoundError"):
        resolve_reward("no_such_mod_xyz.fn")


def test_missing_attr_not_callable_bad_signature():
    with pytest.raises(UserError, match=r"has no attribute 'nope'.*sleepy_reward"):
        resolve_reward(f"{HERE}:nope")
    with pytest.raises(UserError, match="not callable"):
        resolve_reward(f"{HERE}:NOT_CALLABLE")
    with pytest.raises(UserError, match=r"must accept \*\*kwargs"):
        resolve_reward(f"{HERE}.no_kwargs")


def test_user_reward_from_temp_module(tmp_path, monkeypatch):
    mod = f"user_rewards_{uuid.uuid4().hex[:8]}"
    code = textwrap.dedent("""
        def starts_with_four(prompts, completions, **kwargs):
            return [float(c.startswith("4")) for c in completions]
    """)
    (tmp_path / f"{mod}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = RewardRunner([RewardSpec(name=f"{mod}:starts_with_four")], RewardConfig())
    assert r.score(["q", "q"], ["46", "5"], {}).totals == [1.0, 0.0]
    # the same file referenced by file path
    r = RewardRunner([RewardSpec(name=f"{tmp_path / mod}.py:starts_with_four")], RewardConfig())
    assert r.score(["q"], ["4"], {}).totals == [1.0]
    with pytest.raises(UserError, match="file not found"):
        resolve_reward(f"{tmp_path}/missing.py:f")


# ---------------------------------------------------------------- runner


def test_totals_are_weighted_and_none_counts_zero():
    r = runner("exact_match", "length_budget", weights=[2.0, 0.5])
    cols = {"answer": ["46", "46", "46"], "budget": [4, 4, None], "num_tokens": [2, 6, 9]}
    s = r.score(["q"] * 3, ["46", "46", "1"], cols)
    assert s.parts == {"exact_match": [1.0, 1.0, 0.0], "length_budget": [0.0, -0.5, None]}
    assert s.totals == [2.0, 2.0 - 0.25, 0.0]
    assert (s.num_errors, s.num_timeouts, s.failed) == (0, 0, [False] * 3)


def test_bad_names_fail_at_construction():
    with pytest.raises(UserError, match="unknown reward"):
        RewardRunner([RewardSpec(name="exact_match"), RewardSpec(name="nonexistent")], RewardConfig())
    with pytest.raises(UserError, match="more than once"):
        runner("exact_match", "exact_match")


def test_timeout_raises_quickly():
    r = runner("sleepy_reward", timeout_s=0.2)
    t = time.monotonic()
    with pytest.raises(UserError, match=r"'.*sleepy_reward' timed out after 0.2 s"):
        r.score(["q"], ["a"], {})
    assert time.monotonic() - t < 1.5


def test_timeout_none_scores_none_and_counts():
    r = runner("sleepy_reward", "exact_match", on_error="none", timeout_s=0.2)
    t = time.monotonic()
    s = r.score(["q", "q"], ["1", "2"], {"answer": ["1", "1"]})
    assert time.monotonic() - t < 1.5
    assert s.parts[f"{HERE}:sleepy_reward"] == [None, None]
    assert s.num_timeouts == 2 and s.failed == [True, True]
    assert s.totals == [1.0, 0.0]


def test_per_sample_timeout_under_none():
    r = runner("hangs_on_slow", on_error="none", timeout_s=0.3)
    s = r.score(["q"] * 3, ["ok", "slow", "ok"], {})
    assert s.parts[f"{HERE}:hangs_on_slow"] == [None, None, None]  # the batch call itself timed out
    assert s.num_timeouts == 3


def test_raising_function_names_sample_index():
    r = runner("fails_on_bad")
    with pytest.raises(UserError, match=r"fails_on_bad' failed on sample 2: ValueError: cannot score 'bad'"):
        r.score(["q"] * 3, ["a", "b", "bad"], {})


def test_raising_function_none_policy():
    r = runner("fails_on_bad", on_error="none")
    s = r.score(["q"] * 3, ["a", "bad", "c"], {})
    assert s.parts[f"{HERE}:fails_on_bad"] == [1.0, None, 1.0]
    assert (s.num_errors, s.num_timeouts, s.failed) == (1, 0, [False, True, False])


@pytest.mark.parametrize("name,match", [
    ("wrong_length", "returned 1 values for 2 completions"),
    ("wrong_type", "returned str 'yes' at index 0"),
    ("not_a_list", "returned float"),
])
def test_bad_return_always_raises(name, match):
    r = runner(name, on_error="none")
    with pytest.raises(UserError, match=match):
        r.score(["q", "q"], ["a", "b"], {})


def test_missing_column_is_reported():
    r = runner("needs_column", on_error="none")
    with pytest.raises(UserError, match=r"needs column\(s\) \['difficulty'\].*available columns: \['answer'\]"):
        r.score(["q"], ["a"], {"answer": ["1"]})
    assert r.score(["q"], ["a"], {"difficulty": [3]}).totals == [3.0]


def test_async_reward():
    r = runner("async_reward")
    assert r.score(["q", "q"], ["1", "2"], {"answer": ["1", "1"]}).totals == [1.0, 0.0]


def test_trl_rewards_by_import_path():
    """TRL's functions take completions first and read completion[0]['content']: called by keyword
    with messages (their `completions` annotation asks for them), they work on a plain-text model."""
    r = RewardRunner([RewardSpec(name="trl.rewards:think_format_reward"), RewardSpec(name="trl.rewards.accuracy_reward")],
                     RewardConfig(), conversational=False)
    comps = [r"<think>hmm</think> \boxed{\frac{1}{3}}", r"no think \boxed{\frac{1}{2}}"]
    s = r.score(["q", "q"], comps, {"solution": [r"\frac{1}{3}"] * 2})
    assert s.parts["trl.rewards:think_format_reward"] == [1.0, 0.0]
    assert s.parts["trl.rewards.accuracy_reward"] == [1.0, 0.0]
    assert s.totals == [2.0, 0.0]


def test_completion_format_rule():
    from trl.rewards import think_format_reward

    def plain(prompts, completions: list[str], **kw): ...
    def bare(prompts, completions, **kw): ...

    assert completion_format(think_format_reward, conversational=False) == "messages"
    assert completion_format(plain, conversational=True) == "text"
    assert completion_format(bare, conversational=True) == "messages"
    assert completion_format(bare, conversational=False) == "text"
    # built-ins accept both forms
    r = runner("exact_match", conversational=True)
    assert r.score(["q"], ["46"], {"answer": ["46"]}).totals == [1.0]


def test_build_columns():
    ps = [Prompt("a", "d", "1+1=", "2", columns={"difficulty": 1}), Prompt("b", "d", "2+2=", "4")]
    cols = build_columns(ps, num_tokens=[3, 4])
    assert cols == {"answer": ["2", "4"], "difficulty": [1, None], "num_tokens": [3, 4]}


def test_reward_specs_default_to_env():
    assert reward_specs(None, ("math_verify",)) == [RewardSpec(name="math_verify")]
    mine = [RewardSpec(name="format", weight=0.2)]
    assert reward_specs(mine, ("math_verify",)) == mine


# ---------------------------------------------------------------- registry module, user files, params


def test_registry_import_graph_is_acyclic():
    """The name table lives in its own module: builtin.py registers into it, registry.py looks
    names up in it; builtin.py does not import registry.py and the table imports neither."""
    import ast
    from pathlib import Path

    import rlcurr.rewards.table as table

    def imports(mod):
        tree = ast.parse(Path(mod.__file__).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
               {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert "rlcurr.rewards.registry" not in imports(builtin)
    assert not {m for m in imports(table) if m and m.startswith("rlcurr.rewards")}
    assert register is table.register  # the public path rlcurr.rewards.registry.register still works
    assert "overlong_penalty" in registered_names()


@pytest.mark.parametrize("kind, expected", [
    ("syntax", "SyntaxError"),
    ("latin1", "not UTF-8"),
    ("directory", "is a directory"),
    ("unreadable", "cannot read"),
])
def test_broken_user_reward_file_is_one_clean_error(tmp_path, monkeypatch, kind, expected):
    path = tmp_path / f"rw_{kind}_{uuid.uuid4().hex[:6]}.py"
    good = "def f(prompts, completions, **kwargs):\n    return [0.0] * len(completions)\n"
    if kind == "syntax":
        path.write_text("def f(:\n")
    elif kind == "latin1":
        path.write_bytes(b"# r\xe9compense\n" + good.encode())  # cp1252 e-acute, no coding cookie
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text(good)
        real = type(path).read_bytes
        # root reads chmod-000 files, so the OS error is simulated

        def deny(self):
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)
        monkeypatch.setattr(type(path), "read_bytes", deny)
    with pytest.raises(UserError) as e:
        resolve_reward(f"{path}:f")
    msg = str(e.value)
    assert str(path) in msg and expected in msg, msg
    assert "\n" not in msg.strip() and "Traceback" not in msg


def test_user_reward_file_with_coding_cookie_loads(tmp_path):
    path = tmp_path / f"rw_cookie_{uuid.uuid4().hex[:6]}.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\nS = '\xe9'\ndef f(prompts, completions, **kwargs):\n"
                     b"    return [float(S == '\\u00e9')] * len(completions)\n")
    assert resolve_reward(f"{path}:f")(prompts=["q"], completions=["a"]) == [1.0]


def test_reward_params_are_bound_and_checked():
    fn = resolve_reward("length_budget", {"penalty": 0.5, "penalty_cap": 0.4})
    # budget 10: 12 tokens -> over 0.2 -> -0.5 * 0.2 = -0.1; 15 -> over 0.5, capped 0.4 -> -0.2; 30 -> -0.2
    assert fn(prompts=None, completions=["a"] * 3, budget=[10] * 3, num_tokens=[12, 15, 30]) == \
        pytest.approx([-0.1, -0.2, -0.2])
    assert fn.__name__ == "length_budget"
    from rlcurr.rewards.registry import required_columns
    assert required_columns(fn) == []
    with pytest.raises(UserError, match=r"reward 'length_budget'.*'penalty_kap'.*penalty_cap"):
        resolve_reward("length_budget", {"penalty_kap": 0.4})


def test_length_budget_penalty_and_cap():
    f = builtin.length_budget
    # defaults penalty 1, cap 1 (as before): budget 10, 15 tokens -> -(5 / 10) = -0.5
    assert f(None, ["a"], budget=[10], num_tokens=[15]) == [-0.5]
    # penalty 0.5, cap 0.4: 15 tokens -> -0.5 * min(0.5, 0.4) = -0.2; 11 tokens -> -0.5 * 0.1 = -0.05
    assert f(None, ["a", "b"], budget=[10, 10], num_tokens=[15, 11], penalty=0.5, penalty_cap=0.4) == \
        pytest.approx([-0.2, -0.05])


def test_curriculum_budget_penalty_reaches_length_budget():
    from pathlib import Path

    from rlcurr.config import load_config

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "budget_arith.yaml"
    cfg = load_config(recipe, ["curriculum.budget.penalty=0.5", "curriculum.budget.penalty_cap=0.4"])
    spec = [s for s in cfg.rewards if s.name == "length_budget"][0]
    assert spec.params == {"penalty": 0.5, "penalty_cap": 0.4}
    fn = resolve_reward(spec.name, spec.params)
    assert fn(prompts=None, completions=["a"], budget=[10], num_tokens=[15]) == pytest.approx([-0.2])
    # a resolved config.yaml (params written out) loads again unchanged
    from rlcurr.config import build_config, dump_config
    import yaml
    assert build_config(yaml.safe_load(dump_config(cfg))) == cfg
    with pytest.raises(UserError, match=r"rewards\[1\].params.penalty.*curriculum.budget.penalty"):
        load_config(recipe, ["curriculum.budget.penalty=0.5",
                             "rewards=[{name: exact_match}, {name: length_budget, params: {penalty: 0.3}}]"])


def test_overlong_penalty_hand_derived():
    f = builtin.overlong_penalty
    # DAPO: min(-(len - (L_max - L_buf)) / L_buf, 0); L_max 20, L_buf 4 -> free up to 16 tokens
    # 10 -> 0; 16 -> 0; 18 -> -(18 - 16) / 4 = -0.5; 20 -> -1
    assert f(None, ["a"] * 4, num_tokens=[10, 16, 18, 20], L_max=20, L_buf=4) == [0.0, 0.0, -0.5, -1.0]
    # L_max from the budget column: budget 12, L_buf 4 -> free up to 8; 10 -> -0.5; no budget -> None
    assert f(None, ["a"] * 2, num_tokens=[10, 10], budget=[12, None], L_buf=4) == [-0.5, None]
    with pytest.raises(ValueError, match="L_buf"):
        f(None, ["a"], num_tokens=[3], L_max=20)


def test_overlong_penalty_from_the_recipe():
    from pathlib import Path

    from rlcurr.config import load_config

    quick = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
    cfg = load_config(quick, ["rewards=[{name: exact_match}, {name: overlong_penalty, params: {L_buf: 4}}]",
                              "rollout.max_tokens=20"])
    spec = cfg.rewards[1]
    assert spec.params == {"L_buf": 4, "L_max": 20}  # no budget: L_max = rollout.max_tokens
    fn = resolve_reward(spec.name, spec.params)
    assert fn(prompts=None, completions=["a"] * 2, num_tokens=[18, 5]) == [-0.5, 0.0]
    with pytest.raises(UserError, match=r"rewards\[1\].params.L_buf"):
        load_config(quick, ["rewards=[{name: exact_match}, {name: overlong_penalty}]"])
    with pytest.raises(UserError, match=r"rewards\[1\].params.L_buf"):
        load_config(quick, ["rewards=[{name: exact_match}, {name: overlong_penalty, params: {L_buf: 30}}]"])


def test_recipe_params_reach_the_reward_function():
    # overlong_penalty with L_max 10, L_buf 4: answers of 6, 8, 12 tokens score
    # min(-(len - 6) / 4, 0) = 0, -0.5, -1.5 (RewardRunner binds the recipe's params).
    from rlcurr.rewards.runner import RewardRunner

    runner = RewardRunner([RewardSpec(name="overlong_penalty", params={"L_max": 10, "L_buf": 4})], RewardConfig())
    scores = runner.score(["q"] * 3, ["a", "b", "c"], {"num_tokens": [6, 8, 12]})
    assert scores.totals == [0.0, -0.5, -1.5]
