"""vLLM's context length (rlcurr/rollout/context.py): sized from the run's longest prompt and largest
max_tokens, refused in one line when the model's positions are too few, and given to the real
vLLM engine the trainer starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rlcurr.config import load_config
from rlcurr.errors import UserError
from rlcurr.learner.models import build_char_tokenizer
from rlcurr.rollout.context import (check_model_len, largest_max_tokens, longest_prompt_tokens, model_len_needed,
                                    max_position_embeddings)
from rlcurr.types import Prompt

ROOT = Path(__file__).resolve().parent.parent
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}


def test_model_len_is_the_longest_prompt_plus_max_tokens():
    assert model_len_needed(312, 4096) == 4408
    assert check_model_len(312, 4096, 4408) == 4408  # exactly the model's positions: fits
    assert check_model_len(312, 4096, None) == 4408  # the model does not say: nothing to check
    with pytest.raises(UserError) as err:
        check_model_len(313, 4096, 4408)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("rollout.max_tokens (4096)", "longest prompt (313 tokens)", "4409 tokens",
                 "max_position_embeddings (4408)"):
        assert part in msg, msg
    with pytest.raises(UserError, match=r"^eval.max_tokens \(5000\)"):
        check_model_len(10, 5000, 4096, "eval.max_tokens")


def _cfg(overrides: list[str]):
    return load_config(ROOT / "recipes" / "quickstart.yaml", overrides)


def test_largest_max_tokens_over_training_budget_and_eval():
    assert largest_max_tokens(_cfg(["rollout.max_tokens=100"])) == (100, "rollout.max_tokens")
    assert largest_max_tokens(_cfg(["rollout.max_tokens=100", "eval.max_tokens=300"])) == (300, "eval.max_tokens")
    assert largest_max_tokens(_cfg(["rollout.max_tokens=400", "eval.max_tokens=300"])) == (400, "rollout.max_tokens")
    # budget: linear from 50 up to 400 for one distribution (the largest start/end), + slack 8
    budget = ("curriculum.budget={shape: linear, start: 256, end: 64, slack: 8, "
              "per_distribution: {add1: {start: 50, end: 400}}}")
    value, setting = largest_max_tokens(_cfg(["rollout.max_tokens=1000", "eval.max_tokens=100", budget]))
    assert value == 408 and setting.startswith("curriculum.budget")
    # evaluation without eval.max_tokens uses rollout.max_tokens, even when training uses a budget
    assert largest_max_tokens(_cfg(["rollout.max_tokens=1000", budget])) == (1000, "rollout.max_tokens")


class _Env:
    def distributions(self):
        return ["a", "b"]

    def train_prompts(self, d):
        return {"a": [Prompt("a0", "a", "12+3=", "15", hint="think")],  # "Hint: think\n12+3=" = 17 chars
                "b": [Prompt("b0", "b", "1+1=", "2")]}[d]

    def eval_prompts(self, d):
        return {"a": [], "b": [Prompt("b1", "b", "123+45=", "168", hint="a much longer hint")]}[d]


def test_longest_prompt_counts_eval_prompts_hints_and_the_chat_template():
    tok = build_char_tokenizer()  # one token per character, no BOS
    plain = SimpleNamespace(system_prompt=None, instruction="")
    assert longest_prompt_tokens(tok, plain, _Env(), hints=False) == 7  # "123+45=" (eval)
    assert longest_prompt_tokens(tok, plain, _Env(), hints=True) == 17  # train hints only (guidance)
    with_system = SimpleNamespace(system_prompt="sys", instruction="Go.")
    assert longest_prompt_tokens(tok, with_system, _Env(), hints=False) == len("sys\n123+45=\nGo.")
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    assert longest_prompt_tokens(tok, plain, _Env(), hints=False) == len("<user>123+45=<assistant>")


def test_max_position_embeddings_from_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 8192}')
    assert max_position_embeddings(tmp_path) == 8192
    (tmp_path / "config.json").write_text('{"n_positions": 1024}')
    assert max_position_embeddings(tmp_path) == 1024
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    assert max_position_embeddings(tmp_path) is None


def _recipe(tmp_path, positions: int, max_tokens: int) -> Path:
    data = {"name": "ctx", "model": {"tiny": {**TINY, "max_position_embeddings": positions}},
            "env": {"name": "arith", "distributions": ["add1"], "eval_size": 4},  # "3+4=": 4 tokens
            "rollout": {"engine": "vllm", "n": 2, "max_tokens": max_tokens, "gpu_memory_utilization": 0.05},
            "trainer": {"steps": 1, "prompts_per_step": 2, "output_dir": str(tmp_path / "run")},
            "eval": {"every": 0}, "logging": {"progress": False, "tensorboard": False}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_run_longer_than_the_model_is_refused_in_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = cli("train", str(_recipe(tmp_path, positions=64, max_tokens=61)))  # 4 + 61 = 65 > 64
    both = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in both, both[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rollout.max_tokens (61) + the longest prompt (4 tokens) = 65 tokens exceeds the "
                      "model's max_position_embeddings (64); lower rollout.max_tokens or use shorter prompts"], both
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_the_trainer_gives_vllm_the_computed_context(ray_session, tmp_path, monkeypatch):
    # max_position_embeddings 8192 and 4 + 5000 tokens: the engine is sized 5004, not capped at 4096
    from rlcurr.trainer import Trainer

    monkeypatch.chdir(ROOT)
    cfg = load_config(_recipe(tmp_path, positions=8192, max_tokens=5000))
    trainer = Trainer(cfg, log=lambda *_: None)
    assert trainer.max_model_len == 5004
    try:
        trainer.start()
        (worker,) = trainer.rollout_workers
        served = ray_session.get(worker.__ray_call__.remote(
            lambda w: w.engine.llm.llm_engine.vllm_config.model_config.max_model_len))
        assert served == 5004
    finally:
        trainer.rollout_pool.shutdown()
