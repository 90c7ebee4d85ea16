"""Every unreadable input gives ONE clean error through the real CLI: exit code != 0, one `error:`
line naming the file, no traceback, and no run directory.

Inputs: the recipe (not UTF-8, a directory, unreadable, not a mapping, not YAML, empty), the
math environment's data files (the only environment that reads a user path: missing, a
directory, not UTF-8, unreadable, not JSON, rows that are not objects or lack keys, a broken
Parquet file, no rows) and user reward files (a SyntaxError, not UTF-8, a directory, missing).

One case of each class runs the real `python -m rlcurr.cli` in a subprocess; the others call
`rlcurr.cli.main` in this process (the same code path, without paying torch/ray imports per case;
an uncaught exception there fails the test just as a traceback would).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # chmod 000 does not stop root from reading

TINY = {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}}


def _subprocess(*args):
    return subprocess.run([sys.executable, "-m", "rlcurr.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture
def cli(cli, monkeypatch):
    """conftest's in-process CLI, run from the repository root."""
    monkeypatch.chdir(ROOT)
    return cli


def _recipe(tmp_path, env=None, rewards=None) -> Path:
    data = {"name": "bad", "model": TINY, "env": env or {"name": "arith", "distributions": ["add1"]},
            "trainer": {"steps": 1, "output_dir": str(tmp_path / "run")},
            "logging": {"progress": False, "tensorboard": False}}
    if rewards is not None:
        data["rewards"] = rewards
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _assert_clean(out, names: Path, run_dir: Path, expected: str | None = None):
    both = out.stdout + out.stderr
    assert out.returncode != 0, both[-2000:]
    assert "Traceback" not in both, both[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-2000:]
    assert str(names) in errors[0], errors[0]
    if expected is not None:
        assert expected in errors[0], errors[0]
    assert not run_dir.exists()


# ---------------------------------------------------------------- the recipe


def _not_utf8(p: Path) -> Path:
    p.write_bytes(b"name: caf\xe9\nmodel: {tiny: {}}\n")  # latin-1
    return p


def _directory(p: Path) -> Path:
    p.mkdir()
    return p


def _unreadable(p: Path) -> Path:
    p.write_text("name: x\n")
    p.chmod(0)
    return p


def _text(content: str):
    """A maker that writes `content` as the recipe."""
    def make(p: Path) -> Path:
        p.write_text(content)
        return p
    return make


@pytest.mark.parametrize("make, expected", [
    (_not_utf8, "UTF-8"),
    (_directory, "directory"),
    pytest.param(_unreadable, "cannot read", marks=pytest.mark.skipif(AS_ROOT, reason="root reads mode-000 files")),
    (_text("- a\n- b\n"), "mapping"),
    (_text("just a string\n"), "mapping"),
    (_text(""), "mapping"),
    (_text("name: [unclosed\nmodel: {\n"), "not valid YAML"),
], ids=["not_utf8", "directory", "unreadable", "list", "scalar", "empty", "bad_yaml"])
def test_bad_recipe(cli, tmp_path, make, expected):
    path = make(tmp_path / "recipe.yaml")
    try:
        out = (_subprocess if make is _not_utf8 else cli)("train", str(path), f"trainer.output_dir={tmp_path / 'run'}")
    finally:
        if path.exists() and not path.is_dir():
            path.chmod(0o644)
    _assert_clean(out, path, tmp_path / "run", expected)


def test_missing_recipe(cli, tmp_path):
    path = tmp_path / "nope.yaml"
    _assert_clean(cli("train", str(path), f"trainer.output_dir={tmp_path / 'run'}"), path, tmp_path / "run",
                  "not found")


def test_resume_with_a_non_utf8_config(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _not_utf8(run / "config.yaml")
    out = cli("train", "--resume", str(run))
    _assert_clean(out, run / "config.yaml", tmp_path / "nothing", "UTF-8")


# ---------------------------------------------------------------- environment data files (envs/math.py)


def _data(tmp_path, name: str, content: bytes | None) -> Path:
    p = tmp_path / name
    if content is None:
        p.mkdir()
    else:
        p.write_bytes(content)
    return p


ROW = b'{"question": "1+1?", "answer": "2"}\n'


@pytest.mark.parametrize("name, content, expected", [
    ("missing.jsonl", "missing", "not found"),
    ("dir.jsonl", None, "directory"),
    ("latin1.jsonl", ROW + '{"question": "caf\xe9?", "answer": "1"}\n'.encode("latin-1"), "UTF-8"),
    ("unreadable.jsonl", "unreadable", "cannot read"),
    ("broken.jsonl", ROW + b'{"question": "2+2?", "answer": \n', "not valid JSON"),
    ("list.jsonl", b'["1+1?", "2"]\n', "JSON object"),
    ("columns.jsonl", b'{"prompt": "1+1?", "solution": "2"}\n', "missing 'question'"),
    ("no_answer.jsonl", b'{"question": "1+1?"}\n', "missing 'answer'"),
    ("number.jsonl", b'{"question": 11, "answer": "2"}\n', "must be a string"),
    ("broken.parquet", b"PAR1 this is not parquet", "Parquet"),
    ("empty.jsonl", b"\n", "no rows"),
], ids=lambda v: v if isinstance(v, str) and "." in v else None)
def test_bad_math_data_file(cli, tmp_path, name, content, expected):
    if content == "unreadable" and AS_ROOT:
        pytest.skip("root reads mode-000 files")
    if content == "missing":
        path = tmp_path / name
    elif content == "unreadable":
        path = _data(tmp_path, name, ROW)
        path.chmod(0)
    else:
        path = _data(tmp_path, name, content)
    recipe = _recipe(tmp_path, env={"name": "math", "train_files": [str(path)]})
    out = (_subprocess if name == "latin1.jsonl" else cli)("train", str(recipe))
    _assert_clean(out, path, tmp_path / "run", expected)


def test_bad_math_eval_file(cli, tmp_path):
    train = _data(tmp_path, "train.jsonl", ROW * 3)
    bad = _data(tmp_path, "eval.jsonl", b"\xff\xfe" + ROW)
    recipe = _recipe(tmp_path, env={"name": "math", "train_files": [str(train)], "eval_files": [str(bad)]})
    _assert_clean(cli("train", str(recipe)), bad, tmp_path / "run", "UTF-8")


def test_bad_cpu_thread_cap(cli, tmp_path, monkeypatch):
    """RLCURR_CPU_THREADS that is not a whole number >= 1: one error line naming it, before the
    run directory exists."""
    monkeypatch.setenv("RLCURR_CPU_THREADS", "0")
    _assert_clean(cli("train", str(_recipe(tmp_path))), "RLCURR_CPU_THREADS", tmp_path / "run", "'0'")


# ---------------------------------------------------------------- user reward files (rlcurr/rewards/registry.py)


@pytest.mark.parametrize("name, content", [
    ("syntax.py", b"def fn(prompts, completions, **kw)\n    return [1.0] * len(completions)\n"),
    ("latin1.py", "def fn(prompts, completions, **kw):\n    return [1.0] * len(completions)  # caf\xe9\n".encode("latin-1")),
    ("dir.py", None),
    ("missing.py", "missing"),
    ("raises.py", b"raise RuntimeError('boom at import')\n"),
], ids=["syntax_error", "not_utf8", "directory", "missing", "raises_at_import"])
def test_bad_reward_file(cli, tmp_path, name, content):
    path = tmp_path / name if content == "missing" else _data(tmp_path, name, content)
    recipe = _recipe(tmp_path, rewards=[{"name": f"{path}:fn"}])
    out = (_subprocess if name == "syntax.py" else cli)("train", str(recipe))
    _assert_clean(out, path, tmp_path / "run")


# ---------------------------------------------------------------- trainer.overwrite


@pytest.mark.parametrize("content", [None, "model: {tiny: {}}\n"], ids=["no_config", "config_not_a_run"])
def test_overwrite_refuses_a_directory_that_is_not_a_run(cli, tmp_path, content):
    """trainer.overwrite deletes the output directory: one that rlcurr did not write (no
    metrics.jsonl, no run config.yaml; e.g. trainer.output_dir=.) is refused, and kept whole."""
    target = tmp_path / "project"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    if content is not None:
        (target / "config.yaml").write_text(content)
    out = cli("train", str(_recipe(tmp_path)), f"trainer.output_dir={target}", "trainer.overwrite=true")
    both = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in both
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(target) in errors[0] and "not an rlcurr run directory" in errors[0], both[-2000:]
    assert (target / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------- curriculum.prompts.prior (rlcurr/profile.py)


PROFILE_ROW = b'{"uid": "add1/train/0", "distribution": "add1", "passes": 1, "answers": 8}\n'


@pytest.mark.parametrize("name, content, expected", [
    ("missing.jsonl", None, "profile not found"),
    ("broken.jsonl", PROFILE_ROW + b'{"uid": "add1/train/1", "passes": \n', ":2: not valid JSON"),
    ("keys.jsonl", PROFILE_ROW + b'{"uid": "add1/train/1", "passes": 1}\n', ":2: missing 'distribution', 'answers'"),
    ("latin1.jsonl", PROFILE_ROW + '{"uid": "caf\xe9"}\n'.encode("latin-1"), ":2: not UTF-8"),
], ids=["missing", "malformed_line", "missing_keys", "not_utf8"])
def test_bad_prior_file(cli, tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    out = (_subprocess if name == "broken.jsonl" else cli)(
        "train", str(_recipe(tmp_path)), f"curriculum.prompts.prior={path}", "curriculum.prompts.keep_pass=[0.1,0.9]")
    _assert_clean(out, path, tmp_path / "run", expected)


def test_keep_pass_without_prior(cli, tmp_path):
    out = cli("train", str(_recipe(tmp_path)), "curriculum.prompts.keep_pass=[0.1,0.9]")
    both = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in both, both[-2000:]
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == ["error: invalid config:"]
    assert "curriculum.prompts: keep_pass needs curriculum.prompts.prior" in out.stderr
    assert not (tmp_path / "run").exists()


def test_keep_pass_that_empties_a_distribution(cli, tmp_path):
    """Every add1 train prompt profiled at 8/8 and keep_pass [0, 0.5]: refused at the start of
    training (the environment's pools are needed), before the run directory is written."""
    from envs.arith import ArithConfig

    env = ArithConfig(distributions=["add1"]).build(0)
    path = tmp_path / "profile.jsonl"
    path.write_text("".join(f'{{"uid": "{p.uid}", "distribution": "add1", "passes": 8, "answers": 8}}\n'
                            for p in env.train_prompts("add1")))
    out = cli("train", str(_recipe(tmp_path)), f"curriculum.prompts.prior={path}",
              "curriculum.prompts.keep_pass=[0,0.5]")
    _assert_clean(out, "add1", tmp_path / "run", "keep_pass [0, 0.5] leaves no train prompt in distribution(s) add1")


# ---------------------------------------------------------------- rlcurr profile


@pytest.mark.parametrize("args, expected", [
    (["trainer.stepz=3"], "trainer.stepz: unknown key"),
    (["trainer.steps"], "must look like dotted.key=value"),
    (["--samples", "1"], "--samples must be >= 2"),
], ids=["unknown_key", "bad_override", "one_sample"])
def test_profile_bad_input(cli, tmp_path, args, expected):
    out = cli("profile", str(_recipe(tmp_path)), *args)
    both = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in both, both[-2000:]
    assert expected in out.stderr and not (tmp_path / "run_profile").exists() and not (tmp_path / "run").exists()


def test_profile_missing_recipe(cli, tmp_path):
    path = tmp_path / "nope.yaml"
    _assert_clean(cli("profile", str(path), "--out", str(tmp_path / "run")), path, tmp_path / "run", "not found")
