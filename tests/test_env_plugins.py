"""Environments by import path (rlcurr/env_registry.py `env_config_class`), as docs/extending.md "Environments"
shows them: its ```python block is saved as my_envs.py and its first ```yaml block
as reverse.yaml, outside the repository, and used exactly as a reader would -- validation, the
Environment it builds, a short real `rlcurr train`, a resume-style reload of the run's
config.yaml from another directory -- then every way an import path can be wrong, each one
clean error line through the CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlcurr.config import dump_config, load_config
from rlcurr.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TINY = {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}}


def docs_blocks(language: str, section: str = "Environments") -> list[str]:
    """The ```<language> blocks of docs/extending.md's "## <section>" section, in order."""
    text = (ROOT / "docs" / "extending.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```", body, flags=re.S | re.M)


@pytest.fixture
def example(tmp_path) -> Path:
    """docs/extending.md's my_envs.py and reverse.yaml in a directory of their own; returns the recipe."""
    (tmp_path / "my_envs.py").write_text(docs_blocks("python")[0])
    recipe = tmp_path / "reverse.yaml"
    recipe.write_text(docs_blocks("yaml")[0])
    return recipe


def test_readme_environment_validates_and_builds(example, tmp_path, monkeypatch):
    from rlcurr import EnvConfigBase, Environment

    monkeypatch.chdir(ROOT)  # elsewhere: my_envs.py is found next to the recipe
    cfg = load_config(example)
    assert isinstance(cfg.env, EnvConfigBase) and type(cfg.env).__name__ == "ReverseConfig"
    assert cfg.env.name == f"{tmp_path / 'my_envs.py'}:ReverseConfig"  # absolute: resumable from anywhere
    assert (cfg.env.lengths, cfg.env.eval_size) == ([2, 3], 20)
    env = cfg.env.build(cfg.seed)
    assert isinstance(env, Environment) and env.distributions() == ["len2", "len3"]
    assert [len(env.train_prompts(d)) for d in env.distributions()] == [400, 400]
    assert [len(env.eval_prompts(d)) for d in env.distributions()] == [20, 20]
    p = env.train_prompts("len3")[0]
    assert p.question == p.columns["word"] + ">" and p.answer == p.columns["word"][::-1]


def test_readme_environment_fields_are_checked_like_built_ins(example, monkeypatch):
    monkeypatch.chdir(example.parent)
    with pytest.raises(UserError) as e:
        load_config(example, ["env.lengths=[9]", "env.train_size=0", "env.colour=red"])
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid config:"
    assert sorted(lines[1:]) == ["  env.colour: unknown key",
                                 "  env.lengths.0: Input should be less than or equal to 8 (got 9)",
                                 "  env.train_size: Input should be greater than or equal to 1 (got 0)"]
    # docs/extending.md quotes the first of these as the CLI prints it
    assert "env.lengths.0: Input should be less than or equal to 8 (got 9)" in docs_blocks("bash")[0]


def test_run_config_reloads_from_another_directory(example, tmp_path, monkeypatch):
    """`rlcurr train --resume RUN` re-reads RUN/config.yaml, wherever it is started from."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(example)
    run = tmp_path / "elsewhere" / "runs" / "reverse"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    monkeypatch.chdir(ROOT)
    again = load_config(run / "config.yaml", [f"trainer.output_dir={run}"])
    assert again.env == cfg.env and type(again.env) is type(cfg.env)
    assert again.env.build(0).train_prompts("len2") == cfg.env.build(0).train_prompts("len2")


def test_module_import_path(example, tmp_path, monkeypatch):
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "envs.py").write_text((tmp_path / "my_envs.py").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(example, ["env.name=my_pkg.envs:ReverseConfig"])
    assert cfg.env.name == "my_pkg.envs:ReverseConfig"
    assert cfg.env.build(0).distributions() == ["len2", "len3"]


def test_readme_example_trains_through_the_cli(ray_session, example, tmp_path, monkeypatch, capsys):
    """`rlcurr train reverse.yaml` from the example's directory, shortened (10 warm-up steps, 3 RL steps)."""
    from rlcurr.cli import main

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "reverse"
    code = main(["train", "reverse.yaml", "trainer.steps=3", "model.warmup.steps=10", "eval.every=0",
                 "logging.progress=false", f"trainer.output_dir={run}"])
    assert code == 0, capsys.readouterr().err[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [-1, 0, 1, 2]
    assert {"eval/accuracy/len2", "eval/accuracy/len3"} <= set(rows[-1]) and "reward/mean" in rows[1]
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["env"]["name"] == f"{tmp_path / 'my_envs.py'}:ReverseConfig"


# ---------------------------------------------------------------- errors, through the CLI


def _recipe(tmp_path: Path, env_name: str) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "bad", "model": TINY, "env": {"name": env_name},
                                      "trainer": {"steps": 1, "output_dir": str(tmp_path / "run")}}))
    return recipe


def _assert_one_error(out, tmp_path: Path, *expected: str) -> None:
    both = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in both, both[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-2000:]
    for text in expected:
        assert text in errors[0], errors[0]
    assert not (tmp_path / "run").exists()


GOOD = ("from rlcurr import EnvConfigBase, Environment\n"
        "class Env(Environment):\n"
        "    def distributions(self): return []\n"
        "    def train_prompts(self, d): return []\n"
        "    def eval_prompts(self, d): return []\n"
        "def not_a_class(): pass\n"
        "class Plain: pass\n"
        "class NoBuild(EnvConfigBase): pass\n")


@pytest.mark.parametrize("source, name, expected", [
    (None, "missing.py:Config", ["file not found", "missing.py"]),
    (GOOD, "envs_file.py:Nope", ["has no attribute 'Nope'", "Names defined there: Env, NoBuild, Plain, not_a_class"]),
    ("import no_such_module_xyz\n", "envs_file.py:Config", ["cannot import", "ModuleNotFoundError"]),
    ("class Config(:\n", "envs_file.py:Config", ["is not valid Python (line 1)"]),
    (GOOD, "envs_file.py:not_a_class", ["a function in", "is not a subclass of rlcurr.EnvConfigBase"]),
    (GOOD, "envs_file.py:Plain", ["the class Plain in", "is not a subclass of rlcurr.EnvConfigBase"]),
    (GOOD, "envs_file.py:Env", ["the class Env", "point env.name at its config class"]),
    (GOOD, "envs_file.py:NoBuild", ["NoBuild in", "defines no build(self, seed)"]),
], ids=["missing_file", "no_such_class", "import_error", "syntax_error", "a_function", "a_plain_class",
        "the_environment_class", "no_build"])
def test_bad_import_path_is_one_error_naming_env_name_and_file(cli, tmp_path, source, name, expected):
    if source is not None:
        (tmp_path / "envs_file.py").write_text(source)
    recipe = _recipe(tmp_path, name)
    file = tmp_path / name.split(":")[0]
    _assert_one_error(cli("train", str(recipe)), tmp_path, f"env.name '{name}'", str(file), *expected)


def test_unknown_built_in_lists_the_built_ins_and_the_import_path_form(cli, tmp_path):
    out = cli("train", str(_recipe(tmp_path, "arithmetic")))
    _assert_one_error(out, tmp_path, "env.name 'arithmetic': unknown environment (did you mean 'arith'?)",
                      "arith, ", "dataset", "math", "reasoning_gym", "'my_envs.py:MyConfig'", "'my_pkg.envs:MyConfig'")


def test_unimportable_module_and_bare_file_name(cli, tmp_path):
    _assert_one_error(cli("train", str(_recipe(tmp_path, "no_such_pkg.envs:Config"))), tmp_path,
                      "env.name 'no_such_pkg.envs:Config'", "cannot import module 'no_such_pkg.envs'")
    _assert_one_error(cli("train", str(_recipe(tmp_path, "my_envs.py"))), tmp_path,
                      "env.name 'my_envs.py'", "'my_envs.py:MyConfig'")


def test_build_must_return_an_environment(tmp_path):
    (tmp_path / "envs_file.py").write_text("from rlcurr import EnvConfigBase\n"
                                           "class Config(EnvConfigBase):\n"
                                           "    def build(self, seed): return [seed]\n")
    cfg = load_config(_recipe(tmp_path, "envs_file.py:Config"))
    with pytest.raises(UserError, match=r"Config\.build\(seed\) returned a list, not an rlcurr\.Environment"):
        cfg.env.build(0)


def test_import_error_is_clean_in_a_real_subprocess(tmp_path):
    (tmp_path / "envs_file.py").write_text("raise RuntimeError('boom at import')\n")
    recipe = _recipe(tmp_path, "envs_file.py:Config")
    out = subprocess.run([sys.executable, "-m", "rlcurr.cli", "train", str(recipe)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    _assert_one_error(out, tmp_path, "env.name 'envs_file.py:Config'", str(tmp_path / "envs_file.py"),
                      "RuntimeError: boom at import")


def test_readme_dataset_recipe_runs_on_a_save_to_disk_directory(tmp_path, monkeypatch):
    """docs/extending.md's `env: {name: dataset, ...}` block ("Local datasets"), with data/gsm8k a local
    save_to_disk DatasetDict."""
    datasets = pytest.importorskip("datasets")
    rows = {"question": [f"What is {i} + {i}?" for i in range(12)], "answer": [str(2 * i) for i in range(12)]}
    table = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"train": table.select(range(8)), "test": table.select(range(8, 12))}).save_to_disk(
        str(tmp_path / "data" / "gsm8k"))
    recipe = tmp_path / "gsm8k.yaml"
    recipe.write_text("model: {tiny: {}}\n" + docs_blocks("yaml", "Local datasets")[0])
    monkeypatch.chdir(ROOT)
    cfg = load_config(recipe)
    assert cfg.env.path == str(tmp_path / "data" / "gsm8k")
    env = cfg.env.build(cfg.seed)
    assert env.default_rewards == ("math_verify",) and env.distributions() == ["all"]
    assert [p.uid for p in env.eval_prompts("all")] == ["test/0", "test/1", "test/2", "test/3"]
    assert env.train_prompts("all")[3].answer == "6"
