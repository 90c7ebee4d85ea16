"""`rlcurr profile` and `curriculum.prompts.prior` / `keep_pass` (rlcurr/profile.py).

The pure pieces by hand (reading a profile back and every way it can be malformed, the keep_pass
filter, the expected zero-variance share, the summary), then the real command on the quickstart
(a short SFT warm-up, the first 16 prompts, 8 answers each), a training run seeded and filtered
by that profile (and its resume, without the profile file), and the command on an environment
defined outside rlcurr (the "Environments" example of docs/extending.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from rlcurr.config import load_config
from rlcurr.errors import UserError
from rlcurr.profile import (HISTOGRAM_FILE, KIND, PRIOR_FILE, PROFILE_FILE, SUMMARY_FILE, filter_pools, load_profile,
                            prior_for, summarize, zero_variance_share)
from rlcurr.types import Prompt

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
PROMPTS, SAMPLES = 16, 8


def _rows(*rows) -> str:
    return "".join(json.dumps(dict(zip(("uid", "distribution", "passes", "answers"), r))) + "\n" for r in rows)


def _prompt(uid: str) -> Prompt:
    return Prompt(uid=uid, distribution=uid.split("/")[0], question="q", answer="a")


# ---------------------------------------------------------------- load_profile


def test_load_profile_from_a_file_or_its_directory(tmp_path):
    (tmp_path / PROFILE_FILE).write_text(_rows(("a/0", "a", 0, 8), ("a/1", "a", 3, 8)) + "\n"
                                         + _rows(("b/0", "b", 8, 8)))
    want = {"a/0": ("a", 0, 8), "a/1": ("a", 3, 8), "b/0": ("b", 8, 8)}
    assert load_profile(tmp_path / PROFILE_FILE) == want
    assert load_profile(tmp_path) == want  # the directory `rlcurr profile` wrote


@pytest.mark.parametrize("content, expected", [
    (None, "profile not found"),
    ("directory", "is a directory without a profile.jsonl"),
    (b"\xff\xfe" + _rows(("a/0", "a", 0, 8)).encode(), ":1: not UTF-8"),
    (_rows(("a/0", "a", 0, 8)) + '{"uid": "a/1", "distribution": "a", "passes": 1,\n', ":2: not valid JSON"),
    ('["a/0", "a", 0, 8]\n', ":1: each line must be a JSON object"),
    ('{"uid": "a/0", "distribution": "a", "passes": 1}\n', ":1: missing 'answers'"),
    ('{"uid": 7, "distribution": "a", "passes": 1, "answers": 8}\n', "must be strings"),
    ('{"uid": "a/0", "distribution": "a", "passes": true, "answers": 8}\n', "must be integers"),
    (_rows(("a/0", "a", 9, 8)), "need 0 <= passes <= answers"),
    (_rows(("a/0", "a", 0, 0)), "need 0 <= passes <= answers and answers >= 1"),
    (_rows(("a/0", "a", 0, 8), ("a/1", "a", 1, 8), ("a/0", "a", 2, 8)),
     ":3: uid 'a/0' is listed twice (first on line 1)"),
    ("\n\n", "no profiled prompts"),
], ids=["missing", "dir_without_profile", "not_utf8", "bad_json", "not_object", "missing_key", "uid_not_str",
        "bool_passes", "passes_above_answers", "no_answers", "duplicate_uid", "empty"])
def test_load_profile_errors_name_the_file_and_line(tmp_path, content, expected):
    path = tmp_path / "p.jsonl"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as e:
        load_profile(path)
    assert str(path) in str(e.value) and expected in str(e.value)
    assert str(e.value).startswith("curriculum.prompts.prior: ") and "\n" not in str(e.value)


# ---------------------------------------------------------------- filter_pools, prior_for


def test_filter_pools_drops_pass_rates_outside_the_band_and_keeps_unprofiled_prompts():
    pools = {"a": [_prompt(f"a/{i}") for i in range(6)], "b": [_prompt(f"b/{i}") for i in range(2)]}
    prior = {"a/0": ("a", 0, 8),    # 0.0: dropped
             "a/1": ("a", 8, 8),    # 1.0: dropped
             "a/2": ("a", 4, 8),    # 0.5: kept
             "a/3": ("a", 1, 10),   # 0.1: on the band's edge, kept
             "a/4": ("b", 0, 8),    # profiled under another distribution: not this prompt, kept
             "b/0": ("b", 1, 1),    # 1.0: dropped
             "zz/9": ("zz", 0, 8)}  # not in any pool
    kept, dropped = filter_pools(pools, prior, (0.1, 0.9))
    assert dropped == ["a/0", "a/1", "b/0"]
    assert [p.uid for p in kept["a"]] == ["a/2", "a/3", "a/4", "a/5"] and [p.uid for p in kept["b"]] == ["b/1"]
    assert prior_for(kept, prior) == {"a/2": ("a", 4, 8), "a/3": ("a", 1, 10)}
    assert filter_pools(pools, prior, (0.0, 1.0)) == ({d: list(ps) for d, ps in pools.items()}, [])


def test_filter_pools_refuses_to_empty_a_distribution():
    pools = {"easy": [_prompt("easy/0"), _prompt("easy/1")], "hard": [_prompt("hard/0")]}
    prior = {"easy/0": ("easy", 8, 8), "easy/1": ("easy", 7, 8), "hard/0": ("hard", 2, 8)}
    with pytest.raises(UserError, match=r"keep_pass \[0, 0.5\] leaves no train prompt in distribution\(s\) easy:"):
        filter_pools(pools, prior, (0.0, 0.5))


# ---------------------------------------------------------------- expected zero variance, summary


def test_zero_variance_share_by_hand():
    assert zero_variance_share([0.5], 4) == pytest.approx(2 * 0.5**4)  # 0.125
    assert zero_variance_share([0.0], 16) == 1 and zero_variance_share([1.0], 16) == 1
    assert zero_variance_share([0.25], 2) == pytest.approx(0.25**2 + 0.75**2)  # 0.625
    assert zero_variance_share([0.5, 0.0, 1.0, 0.25], 2) == pytest.approx((0.5 + 1 + 1 + 0.625) / 4)


def test_summarize_by_hand():
    records = [{"uid": "a/0", "distribution": "a", "passes": 0, "answers": 4},
               {"uid": "a/1", "distribution": "a", "passes": 2, "answers": 4},
               {"uid": "a/2", "distribution": "a", "passes": 4, "answers": 4},
               {"uid": "a/3", "distribution": "a", "passes": 0, "answers": 4},
               {"uid": "b/0", "distribution": "b", "passes": 1, "answers": 3}]  # a failed reward left 3 answers
    s = summarize(records, {"a": 30, "b": 5}, samples=4, n=4)
    assert list(s) == ["a", "b", "all"]
    assert s["a"] == {"prompts": 4, "answers": 16, "tokens": 30, "histogram": [2, 0, 1, 0, 1], "all_fail": 0.5,
                      "all_pass": 0.25, "mixed": 0.25, "dead": 0.75,
                      "zero_variance_at_n": pytest.approx((1 + 0.125 + 1 + 1) / 4)}
    assert s["b"]["histogram"] == [0, 1, 0, 0, 0] and s["b"]["dead"] == 0
    assert s["b"]["zero_variance_at_n"] == pytest.approx((1 / 3) ** 4 + (2 / 3) ** 4)
    assert (s["all"]["prompts"], s["all"]["answers"], s["all"]["tokens"], s["all"]["dead"]) == (5, 19, 35, 0.6)


# ---------------------------------------------------------------- config


def test_prompts_section_keys(tmp_path):
    (tmp_path / "prof").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(QUICKSTART.read_text())
    cfg = load_config(recipe, ["curriculum.prompts.prior=prof", "curriculum.prompts.keep_pass=[0.1,0.9]"])
    assert cfg.curriculum.prompts.prior == str(tmp_path / "prof")  # next to the recipe, made absolute
    assert cfg.curriculum.prompts.keep_pass == (0.1, 0.9)
    for overrides, expected in [
        (["curriculum.prompts.keep_pass=[0.1,0.9]"], "curriculum.prompts: keep_pass needs curriculum.prompts.prior"),
        (["curriculum.prompts.prior=p", "curriculum.prompts.keep_pass=[0.9,0.1]"], "0 <= lo <= hi <= 1"),
        (["curriculum.prompts.prior=p", "curriculum.prompts.keep_pass=[0,1.5]"], "0 <= lo <= hi <= 1"),
        (["curriculum.prompt_memory.ema_alpha=0.3"], "curriculum.prompt_memory: unknown key"),  # renamed: prompts
    ]:
        with pytest.raises(UserError, match=re.escape(expected)):
            load_config(recipe, overrides)


# ---------------------------------------------------------------- the command, end to end


def _main(*args) -> tuple[int, str, str]:
    from rlcurr.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def profiled(ray_session, tmp_path_factory):
    """`rlcurr profile` on the quickstart with a 50-step warm-up (its own), 16 prompts x 8 answers."""
    base = tmp_path_factory.mktemp("profile")
    code, out, err = _main("profile", str(QUICKSTART), f"trainer.output_dir={base / 'run'}",
                           "--prompts", str(PROMPTS), "--samples", str(SAMPLES))
    assert code == 0, err[-3000:]
    return base / "run_profile", out, err


def test_profile_writes_the_profile_summary_and_histogram(profiled):
    out_dir, out, err = profiled
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([PROFILE_FILE, SUMMARY_FILE, HISTOGRAM_FILE])
    assert not list(out_dir.parent.glob(".*tmp*"))  # the temporary directory was renamed
    rows = [json.loads(line) for line in (out_dir / PROFILE_FILE).read_text().splitlines()]
    assert [r["uid"] for r in rows] == [f"add1/train/{i}" for i in range(PROMPTS)]  # the first N, in pool order
    assert all(r["distribution"] == "add1" and r["answers"] == SAMPLES and 0 <= r["passes"] <= SAMPLES for r in rows)
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    assert (summary["kind"], summary["samples"], summary["rollout_n"], summary["max_tokens"]) == (KIND, SAMPLES, 16, 6)
    s = summary["distributions"]["add1"]
    fail = sum(r["passes"] == 0 for r in rows) / PROMPTS
    ok = sum(r["passes"] == SAMPLES for r in rows) / PROMPTS
    assert (s["prompts"], s["answers"]) == (PROMPTS, PROMPTS * SAMPLES)
    assert (s["all_fail"], s["all_pass"], s["mixed"]) == (fail, ok, 1 - fail - ok)
    assert s["zero_variance_at_n"] == pytest.approx(zero_variance_share([r["passes"] / SAMPLES for r in rows], 16))
    assert s["histogram"] == [sum(r["passes"] == k for r in rows) for k in range(SAMPLES + 1)]
    assert s["tokens"] >= PROMPTS * SAMPLES  # every answer has at least its EOS / one token
    assert (out_dir / HISTOGRAM_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the printed table: the shares, the cost, the dead share
    row = next(line for line in out.splitlines() if line.startswith("│ add1"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells == ["add1", str(PROMPTS), f"{fail:.1%}", f"{ok:.1%}", f"{1 - fail - ok:.1%}",
                     f"{s['zero_variance_at_n']:.1%}", str(PROMPTS * SAMPLES), f"{s['tokens']:,}"]
    assert f"dead (0/{SAMPLES} or {SAMPLES}/{SAMPLES}): {fail + ok:.1%} of {PROMPTS} prompts" in out
    assert f"the profile cost {PROMPTS * SAMPLES} answers" in out and "Traceback" not in out + err


def test_another_rollout_seed_draws_fresh_answers_to_the_same_prompts(profiled, tmp_path):
    """rollout.seed: the run's seed by default (so stating it repeats the profile exactly); another
    value samples other answers to the same prompts (two profiles for a persistence check)."""
    out_dir, _, _ = profiled
    seed = load_config(QUICKSTART).seed

    def profile(rollout_seed: int) -> tuple[list[dict], int]:
        out = tmp_path / f"seed{rollout_seed}"
        code, _, err = _main("profile", str(QUICKSTART), f"trainer.output_dir={out_dir.parent / 'run'}",
                             f"rollout.seed={rollout_seed}", "--prompts", str(PROMPTS), "--samples", str(SAMPLES),
                             "--out", str(out))
        assert code == 0, err[-3000:]
        rows = [json.loads(line) for line in (out / PROFILE_FILE).read_text().splitlines()]
        return rows, json.loads((out / SUMMARY_FILE).read_text())["distributions"]["add1"]["tokens"]

    default_rows = [json.loads(line) for line in (out_dir / PROFILE_FILE).read_text().splitlines()]
    default_tokens = json.loads((out_dir / SUMMARY_FILE).read_text())["distributions"]["add1"]["tokens"]
    assert profile(seed) == (default_rows, default_tokens)
    rows, tokens = profile(seed + 1000)
    assert [r["uid"] for r in rows] == [r["uid"] for r in default_rows]
    assert (rows, tokens) != (default_rows, default_tokens)


def test_profile_refuses_an_existing_directory_unless_overwrite(profiled, tmp_path):
    out_dir, _, _ = profiled
    code, _, err = _main("profile", str(QUICKSTART), "--out", str(out_dir))
    assert code != 0 and err.count("error:") == 1 and "--overwrite" in err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("keep me")
    code, _, err = _main("profile", str(QUICKSTART), "--out", str(other), "--overwrite")
    assert code != 0 and "not a profile directory" in err and (other / "keep.txt").read_text() == "keep me"


def _train_config(run: Path, prior: Path, *overrides: str):
    return load_config(QUICKSTART, [f"trainer.output_dir={run}", "trainer.steps=2", "eval.every=0",
                                    "trainer.prompts_per_step=4", "rollout.n=4", "logging.progress=false",
                                    "logging.tensorboard=false", f"curriculum.prompts.prior={prior}", *overrides])


def test_training_with_the_prior_drops_and_seeds(profiled, tmp_path):
    """keep_pass [0.1, 0.9] drops exactly the profiled prompts at 0/8 or 8/8; the controller is
    seeded with the profiled counts of the others; profile/answers is logged at step -1; a resume
    filters the pools the same way without the profile file."""
    from rlcurr.trainer import Trainer

    out_dir, _, _ = profiled
    prior = tmp_path / "prior"
    shutil.copytree(out_dir, prior)
    rows = [json.loads(line) for line in (prior / PROFILE_FILE).read_text().splitlines()]
    dead = [r["uid"] for r in rows if not 0.1 <= r["passes"] / r["answers"] <= 0.9]
    alive = {r["uid"]: r for r in rows if r["uid"] not in dead}
    assert dead and alive, f"the profile should have both dead and mixed prompts: {rows}"

    run = tmp_path / "run"
    logs: list[str] = []
    trainer = Trainer(_train_config(run, prior, "curriculum.prompts.keep_pass=[0.1,0.9]"), log=logs.append)
    try:
        first = trainer.start()
        pool = [p.uid for p in trainer.controller.prompts["add1"]]
        assert len(pool) == len(trainer.env.train_prompts("add1")) - len(dead) and not set(dead) & set(pool)
        assert trainer.controller.prior_counts == {"seeded": len(alive), "ignored": 0}
        for uid, r in alive.items():
            assert trainer.controller.memory.get(uid)["ema"] == r["passes"] / r["answers"]
        assert any(f"seeded {len(alive)}; keep_pass [0.1, 0.9] dropped {len(dead)}" in line for line in logs)
        trainer.train(first)
    finally:
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()
    assert json.loads((run / PRIOR_FILE).read_text())["dropped"] == dead
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == -1
    profile_metrics = {k: v for k, v in metrics[0].items() if k.startswith("profile/")}
    assert profile_metrics == {"profile/answers": PROMPTS * SAMPLES, "profile/prompts_seeded": len(alive),
                               "profile/prompts_dropped": len(dead)}
    assert [m["step"] for m in metrics] == [-1, 0, 1] and "profile/answers" not in metrics[1]

    shutil.rmtree(prior)  # a resume needs the run's prior.json only
    resumed = Trainer(load_config(run / "config.yaml", [f"trainer.output_dir={run}"]), log=logs.append)
    try:
        assert resumed.start(resume=True) == 2
        assert [p.uid for p in resumed.controller.prompts["add1"]] == pool
        assert resumed.controller.memory.get(next(iter(alive))) is not None  # the checkpoint's seeded memory
    finally:
        resumed.rollout_pool.shutdown()
        resumed.learner.shutdown()


def test_profile_of_a_plugin_environment(ray_session, tmp_path, monkeypatch):
    """docs/extending.md's my_envs.py:ReverseConfig (two distributions, "## Environments"), profiled
    through the CLI from the recipe's directory, with the untrained tiny model (no warm-up)."""
    text = (ROOT / "docs" / "extending.md").read_text().split("\n## Environments\n", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "my_envs.py").write_text(re.search(r"^```python\n(.*?)^```", text, flags=re.S | re.M).group(1))
    (tmp_path / "reverse.yaml").write_text(re.search(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M).group(1))
    monkeypatch.chdir(tmp_path)
    code, out, err = _main("profile", "reverse.yaml", "model.warmup.steps=0", "--prompts", "3", "--samples", "2")
    assert code == 0, err[-3000:]
    out_dir = tmp_path / "runs" / "reverse_profile"
    rows = [json.loads(line) for line in (out_dir / PROFILE_FILE).read_text().splitlines()]
    env = load_config("reverse.yaml", ["model.warmup.steps=0"]).env.build(0)
    assert [r["uid"] for r in rows] == [p.uid for d in ("len2", "len3") for p in env.train_prompts(d)[:3]]
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    assert list(summary["distributions"]) == ["len2", "len3", "all"]
    assert summary["distributions"]["all"]["answers"] == 12
    assert all(line in out for line in ("│ len2", "│ len3", "│ all"))
