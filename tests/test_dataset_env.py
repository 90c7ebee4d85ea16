"""The `dataset` environment (envs/dataset.py): local Hugging Face datasets as prompts.

A tiny dataset written with `datasets.save_to_disk` (one Dataset, and a DatasetDict), and the
same rows as JSONL / CSV / Parquet files: distributions, held-out eval rows, columns for reward
functions, every error, and one short real training run through the CLI on a save_to_disk
directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlcurr.config import build_config, dump_config, load_config
from rlcurr.errors import UserError
from rlcurr.rewards.runner import build_columns

datasets = pytest.importorskip("datasets")

ROWS = {
    "question": [f"{i % 7}+{i % 3}=" for i in range(30)],
    "answer": [i % 7 + i % 3 for i in range(30)],  # ints: the env turns them into text
    "level": ["easy", "hard", "mid"] * 10,
    "solution": [f"{i % 7} plus {i % 3}" for i in range(30)],
    "tip": [str(i % 7) if i % 2 else "" for i in range(30)],
}
TINY = {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    table = datasets.Dataset.from_dict(ROWS)
    table.save_to_disk(str(root / "single"))
    splits = {"train": table.select(range(24)), "test": table.select(range(24, 30))}
    datasets.DatasetDict(splits).save_to_disk(str(root / "dict"))
    with open(root / "rows.jsonl", "w") as f:
        for row in table.to_list():
            f.write(json.dumps(row) + "\n")
    table.to_csv(str(root / "rows.csv"), index=False)
    table.to_parquet(str(root / "rows.parquet"))
    return root


def env_of(env: dict, recipe_dir: Path | None = None):
    return build_config({"name": "t", "model": {"tiny": {}}, "env": env}, recipe_dir=recipe_dir).env


def build(env: dict, seed: int = 0):
    return env_of(env).build(seed)


# ---------------------------------------------------------------- prompts, distributions, splits


def test_save_to_disk_directory_gives_distributions_held_out_eval_and_columns(data):
    env = build({"name": "dataset", "path": str(data / "single"), "distribution_column": "level",
                 "hint_column": "tip", "eval_size": 3})
    assert env.distributions() == ["easy", "hard", "mid"]
    assert env.default_rewards == ("exact_match",)
    for d in env.distributions():
        train, held = env.train_prompts(d), env.eval_prompts(d)
        assert (len(train), len(held)) == (8, 2)  # 10 rows: eval_size 3, capped at eval_fraction 0.2
        assert not {p.uid for p in train} & {p.uid for p in held}
        assert all(p.distribution == d for p in train + held)
    p = next(p for p in env.train_prompts("hard") if p.uid == "train/1")
    assert (p.question, p.answer, p.hint) == ("1+1=", "2", "1")
    assert p.columns == {"answer": "2", "level": "hard", "solution": "1 plus 1", "tip": "1"}
    assert next(p for p in env.train_prompts("easy") if p.uid == "train/0").hint is None  # empty tip: no hint
    # Reward functions get every column but the question, as keyword lists (TRL's way).
    cols = build_columns(env.train_prompts("hard")[:2])
    assert sorted(cols) == ["answer", "level", "solution", "tip"] and all(isinstance(a, str) for a in cols["answer"])


def test_held_out_rows_depend_on_the_seed_only(data):
    cfg = {"name": "dataset", "path": str(data / "single"), "eval_size": 5}
    a, b, c = build(cfg, 0), build(cfg, 0), build(cfg, 1)
    assert a.distributions() == ["all"] and len(a.eval_prompts("all")) == 5 and len(a.train_prompts("all")) == 25
    assert [p.uid for p in a.eval_prompts("all")] == [p.uid for p in b.eval_prompts("all")]
    assert [p.uid for p in a.eval_prompts("all")] != [p.uid for p in c.eval_prompts("all")]


def test_dataset_dict_trains_on_train_and_evaluates_on_test(data):
    env = build({"name": "dataset", "path": str(data / "dict"), "eval_size": 4})
    assert [p.uid for p in env.train_prompts("all")] == [f"train/{i}" for i in range(24)]
    held = env.eval_prompts("all")
    assert len(held) == 4 and all(p.uid.startswith("test/") for p in held)  # sampled down to eval_size
    swapped = build({"name": "dataset", "path": str(data / "dict"), "split": "test", "eval_split": "train"})
    assert len(swapped.train_prompts("all")) == 6 and swapped.eval_prompts("all")[0].uid.startswith("train/")
    other = build({"name": "dataset", "path": str(data / "dict"), "eval_path": str(data / "dict"), "eval_split": "train"})
    assert all(p.uid.startswith("eval/train/") for p in other.eval_prompts("all"))  # uids unique in the env


@pytest.mark.parametrize("file", ["rows.jsonl", "rows.csv", "rows.parquet"])
def test_files_read_through_datasets_give_the_same_prompts(data, file):
    ref = build({"name": "dataset", "path": str(data / "single"), "distribution_column": "level"})
    env = build({"name": "dataset", "path": str(data / file), "distribution_column": "level"})
    for d in ref.distributions():
        for a, b in zip(ref.train_prompts(d) + ref.eval_prompts(d), env.train_prompts(d) + env.eval_prompts(d)):
            assert (a.uid, a.question, a.answer, a.columns["solution"]) == \
                (b.uid, b.question, b.answer, b.columns["solution"])


def test_eval_path_train_size_and_other_column_names(data, tmp_path):
    datasets.Dataset.from_dict({"prompt": ["9+9="], "target": ["18"]}).save_to_disk(str(tmp_path / "held"))
    train = datasets.Dataset.from_dict({"prompt": ROWS["question"], "target": ROWS["answer"]})
    train.save_to_disk(str(tmp_path / "train"))
    env = build({"name": "dataset", "path": str(tmp_path / "train"), "eval_path": str(tmp_path / "held"),
                 "question_column": "prompt", "answer_column": "target", "train_size": 7,
                 "default_reward": "math_verify"})
    assert len(env.train_prompts("all")) == 7 and [p.uid for p in env.eval_prompts("all")] == ["eval/0"]
    assert env.eval_prompts("all")[0].columns == {"target": "18", "answer": "18"}
    assert env.default_rewards == ("math_verify",)


def test_relative_path_is_found_from_the_recipe_and_stored_absolute(data, tmp_path, monkeypatch):
    recipe = data / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"tiny": {}}, "env": {"name": "dataset", "path": "single"}}))
    monkeypatch.chdir(tmp_path)  # not where the data is
    cfg = load_config(recipe)
    assert cfg.env.path == str(data / "single")
    resumed = tmp_path / "run" / "config.yaml"
    resumed.parent.mkdir()
    resumed.write_text(dump_config(cfg))
    assert load_config(resumed) == cfg


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("env, expected", [
    ({"path": "openai/gsm8k"}, "'openai/gsm8k' is not a local path"),
    ({"path": "missing.jsonl"}, "data not found"),
    ({"path": "{data}/single", "question_column": "prompt"},
     "has no column 'prompt' (env.question_column); its columns: question, answer, level, solution, tip"),
    ({"path": "{data}/single", "distribution_column": "topic"}, "no column 'topic' (env.distribution_column)"),
    ({"path": "{data}"}, "not one written by datasets' save_to_disk"),
    ({"path": "{data}/bad.txt"}, "unsupported file type '.txt'"),
    ({"path": "{data}/bad.jsonl"}, "cannot read"),
    ({"path": "{data}/dict", "split": "dev"}, "has no split 'dev' (env.split); its splits: train, test"),
    ({"path": "{data}/single", "eval_split": "test"}, "env.eval_split 'test' needs a DatasetDict"),
    ({"path": "{data}/empty_answer.jsonl"}, "empty_answer.jsonl row 1: column 'answer' (the answer) is empty"),
], ids=["hub_name", "missing_file", "missing_column", "missing_distribution_column", "plain_directory",
        "unsupported_type", "bad_json", "missing_split", "eval_split_without_dict", "empty_answer"])
def test_errors_name_the_problem(data, env, expected):
    (data / "bad.txt").write_text("question,answer\n")
    (data / "bad.jsonl").write_text('{"question": "1+1=", "answer": 2}\n{"question": \n')
    (data / "empty_answer.jsonl").write_text('{"question": "1+1=", "answer": 2}\n{"question": "2+2=", "answer": ""}\n')
    env = {"name": "dataset", **{k: v.format(data=data) if isinstance(v, str) else v for k, v in env.items()}}
    with pytest.raises(UserError) as e:
        build(env)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_hub_name_is_one_error_line_through_the_cli(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "hub", "model": TINY, "env": {"name": "dataset", "path": "openai/gsm8k"},
                                      "trainer": {"steps": 1, "output_dir": str(tmp_path / "run")}}))
    out = subprocess.run([sys.executable, "-m", "rlcurr.cli", "train", str(recipe)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'openai/gsm8k' is not a local path" in errors[0], out.stderr[-2000:]
    assert "save_to_disk(DIR)" in errors[0]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a real run


def test_training_on_a_save_to_disk_directory(ray_session, data, tmp_path, monkeypatch, capsys):
    from rlcurr.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "ds", "model": {**TINY, "warmup": {"steps": 10, "batch_size": 16}},
        "env": {"name": "dataset", "path": str(data / "single"), "distribution_column": "level", "eval_size": 2},
        "rollout": {"n": 4, "max_tokens": 4},
        "trainer": {"steps": 2, "prompts_per_step": 4, "output_dir": str(tmp_path / "run")},
        "eval": {"every": 0}, "logging": {"progress": False, "tensorboard": False}}))
    monkeypatch.chdir(tmp_path)
    code = main(["train", str(recipe)])
    assert code == 0, capsys.readouterr().err[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [-1, 0, 1]
    assert {"eval/accuracy/easy", "eval/accuracy/hard", "eval/accuracy/mid"} <= set(rows[-1])
    assert "reward/mean" in rows[1]
