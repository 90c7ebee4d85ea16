"""`rlcurr plan`: the memory estimate (hand-derived numbers, parameter counts against transformers)
and the real placement of the GPU recipes on a Ray that is told it has 8 GPUs.

The plan runs in subprocesses: each starts its own local Ray (`address="local"`), so it never
meets the test session's shared Ray (tests/conftest.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlcurr.config import build_config, load_config
from rlcurr.errors import UserError
from rlcurr.plan import (CUDA_CONTEXT_BYTES, GIB, LOGIT_CHUNK_BYTES, QWEN25_SHAPES, ModelShape, check_gpus_fit,
                         count_params, estimate_memory, lora_params, model_shape)

ROOT = Path(__file__).resolve().parent.parent
GPU8 = ROOT / "recipes" / "dump_kk_8gpu.yaml"
COLOCATE = ROOT / "recipes" / "dump_kk_2gpu_colocate.yaml"

# H=8, 1 layer, I=16, 2 heads of dim 4, 1 KV head, V=10, tied embeddings, qkv biases (qwen2).
SMALL = ModelShape(hidden_size=8, num_layers=1, intermediate_size=16, vocab_size=10, num_heads=2, num_kv_heads=1,
                   head_dim=4, tie_word_embeddings=True, qkv_bias=True, source="hand-made")


def small_config(**sections):
    data = {"name": "small", "model": {"tiny": {}, "dtype": "float32"}, "env": {"name": "arith"},
            "rollout": {"engine": "hf", "num_workers": 1, "n": 2, "max_tokens": 10},
            "algo": {"micro_batch_size": 2}, "trainer": {"prompts_per_step": 2}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return build_config(data)


def test_small_model_memory_by_hand():
    # Parameters:
    #   q_proj 8x8 + bias 8 = 72; k_proj 8x4 + 4 = 36; v_proj 36; o_proj 8x8 = 64  -> attention 208
    #   MLP gate/up/down 3 x 8 x 16 = 384; two RMSNorms 2 x 8 = 16            -> layer 608
    #   embeddings 10 x 8 = 80 (tied: no LM head), final norm 8                -> root 88; total 696
    assert count_params(SMALL) == 696
    # LoRA r=2 on q_proj (8 -> 8) and v_proj (8 -> 4): 2 x (8 + 8) + 2 x (8 + 4) = 56
    assert lora_params(SMALL, small_config(model={"lora": {"r": 2, "target_modules": ["q_proj", "v_proj"]}})
                       .model.lora) == 56

    # Learner, fp32 (4 B), DDP, one rank:
    #   weights 696 x 4 = 2784; gradients 2784; AdamW 2 x 2784 = 5568
    #   micro-batch: 2 answers x (6 prompt + 10 answer tokens) = 32 tokens
    #   per token and layer: norms 2 x (4x8 + 2x4x8) = 192, attention 4 x (3x8 + 2x4) = 128,
    #   MLP 4 x 4 x 16 = 256 -> 576; + embedding output and answer hidden 2 x 8 x 4 = 64 -> 640
    #   activations 32 x 640 = 20480; + 4 logit chunks of 32 MiB + 0.5 GiB CUDA context
    m = estimate_memory(small_config(), gpu_memory_gib=80, prompt_tokens=6, shape=SMALL)
    rollout, learner = m.gpus
    lines = {name: n for name, n, _ in learner.lines}
    assert lines["weights"] == lines["gradients"] == 2784 and lines["AdamW state"] == 5568
    assert lines["activations"] == 20480
    assert learner.total_bytes == 2784 * 4 + 20480 + 4 * LOGIT_CHUNK_BYTES + CUDA_CONTEXT_BYTES
    # HF rollout: 2 prompts x 2 answers on one worker decode as one batch of 4 x 16 tokens;
    # KV per token: 2 (k, v) x 1 layer x 1 KV head x 4 dims x 4 B = 32 -> 4 x 16 x 32 = 2048
    assert {name: n for name, n, _ in rollout.lines} == {"weights": 2784, "KV cache": 2048,
                                                         "CUDA context": CUDA_CONTEXT_BYTES}
    assert not m.warnings

    # vLLM on a 1 MiB GPU at utilization 0.5: 524288 B, minus the weights 2784 = 521504 B of KV
    # cache = 521504 // 32 = 16297 tokens
    m = estimate_memory(small_config(rollout={"engine": "vllm", "gpu_memory_utilization": 0.5}),
                        gpu_memory_gib=1 / 1024, prompt_tokens=6, shape=SMALL)
    kv = next(line for line in m.gpus[0].lines if line[0] == "KV cache")
    assert kv[1] == 521504 and "16297 tokens" in kv[2]
    assert any("more than the" in w for w in m.warnings)  # the learner's CUDA context alone exceeds 1 MiB

    # FSDP over 2 ranks halves weights, gradients and AdamW (696 / 2 = 348 params x 4 B = 1392)
    m = estimate_memory(small_config(learner={"num_workers": 2, "strategy": "fsdp"}), prompt_tokens=6, shape=SMALL)
    lines = {name: n for name, n, _ in m.gpus[1].lines}
    assert lines["weights"] == lines["gradients"] == 1392 and lines["AdamW state"] == 2784
    assert lines["fsdp gathered units"] == (608 + 88) * 4


def test_bf16_counts_fp32_masters_and_frees_gradients_when_colocated():
    # model.dtype bfloat16 = compute dtype; trained weights stay fp32 (rlcurr.learner.precision):
    #   weights 696 x 4 = 2784 (masters), gradients 2784, AdamW 2 x 2784 = 5568 (all fp32);
    #   DDP: autocast's bf16 copy of the weights during a forward, 696 x 2 = 1392;
    #   KL on: a frozen bf16 reference, 696 x 2 = 1392
    m = estimate_memory(small_config(model={"dtype": "bfloat16"}, algo={"kl_coef": 0.1}), prompt_tokens=6,
                        shape=SMALL)
    lines = {name: n for name, n, _ in m.gpus[1].lines}
    assert lines["weights"] == lines["gradients"] == 2784 and lines["AdamW state"] == 5568
    assert lines["compute copy"] == 1392 and lines["reference model"] == 1392
    # FSDP over 2 ranks: fp32 shards 348 x 4 = 1392, units gathered in bf16: (608 + 88) x 2 = 1392, no autocast copy
    m = estimate_memory(small_config(model={"dtype": "bfloat16"}, learner={"num_workers": 2, "strategy": "fsdp"}),
                        prompt_tokens=6, shape=SMALL)
    lines = {name: n for name, n, _ in m.gpus[1].lines}
    assert lines["weights"] == 1392 and lines["fsdp gathered units"] == (608 + 88) * 2 and "compute copy" not in lines


def test_param_counts_match_transformers():
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cases = [(Qwen2Config, ModelShape(**QWEN25_SHAPES[size])) for size in ("0.5b", "7b")]
    cases.append((LlamaConfig, ModelShape(hidden_size=64, num_layers=2, intermediate_size=96, vocab_size=50,
                                          num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=False,
                                          qkv_bias=False)))
    for config_cls, s in cases:
        config = config_cls(hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
                            intermediate_size=s.intermediate_size, vocab_size=s.vocab_size,
                            num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                            tie_word_embeddings=s.tie_word_embeddings)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert count_params(s) == sum(p.numel() for p in model.parameters()), config_cls.__name__
    assert count_params(ModelShape(**QWEN25_SHAPES["7b"])) == 7_615_616_512  # Qwen2.5-7B's published 7.61B


def test_model_shape_sources(tmp_path):
    shape = model_shape(load_config(GPU8).model)
    assert shape.hidden_size == 3584 and "estimated from the model name" in shape.source
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "intermediate_size": 16, "vocab_size": 10,
         "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}))
    cfg = load_config(GPU8, [f"model.path={tmp_path / 'm'}"])
    assert count_params(model_shape(cfg.model)) == 696 - 16  # SMALL without the q/k/v biases
    with pytest.raises(UserError, match="names no Qwen2.5 size"):
        model_shape(load_config(GPU8, ["model.path=/nowhere/my-model"]).model)


def test_too_few_gpus_names_the_fields():
    with pytest.raises(UserError) as err:
        check_gpus_fit(load_config(GPU8), 6, [6])
    for text in ("needs 8 GPUs", "rollout.num_workers (4)", "learner.num_workers (4)",
                 "resources.gpus_per_learner_worker (1)", "has 6"):
        assert text in str(err.value)


def _actor_rows(text: str) -> list[list[str]]:
    """The placement table's rows, split on whitespace."""
    return [line.split() for line in text.splitlines() if re.match(r"\s+(rollout worker|learner rank) \d+ ", line)]


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_too_few_gpus_is_one_error_line():
    out = _run(["-m", "rlcurr.cli", "plan", str(GPU8), "--gpus", "4"])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the recipe needs 8 GPUs"), out.stderr
    assert "rollout.num_workers" in lines[0] and "Traceback" not in out.stderr


def test_cli_plan_8gpu_recipe_on_8_gpus():
    out = _run(["-m", "rlcurr.cli", "plan", str(GPU8), "--gpus", "8"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "GPUs used: 8 of 8" in text
    rows = _actor_rows(text)
    assert len(rows) == 8
    # actor (3 words), engine, tp, GPUs, bundle, CPUs, GPU ids, node
    assert [r[3] for r in rows] == ["vllm"] * 4 + ["fsdp"] * 4
    assert [r[5] for r in rows] == ["1"] * 8 and [r[6] for r in rows] == [str(i) for i in range(8)]
    assert sorted(r[8] for r in rows) == [str(i) for i in range(8)]  # each actor its own GPU
    assert "learner: fsdp over 4 rank(s)" in text and "estimated from the model name" in text


def test_cli_plan_colocated_and_cpu_only():
    # One subprocess, two plans, each on its own local Ray: colocated on 8 GPUs, then CPU only.
    script = ("import sys; from rlcurr.cli import main; "
              f"rc = main(['plan', {str(COLOCATE)!r}, '--gpus', '8']); print('=====', flush=True); "
              f"sys.exit(rc or main(['plan', {str(GPU8)!r}, '--gpus', '0']))")
    out = _run(["-c", script])
    assert out.returncode == 0, out.stderr
    colocated, cpu = out.stdout.split("=====\n")
    assert "GPUs used: 2 of 8" in colocated and "0.5 each" in colocated
    rows = _actor_rows(colocated)
    gpu_of = {" ".join(r[:3]): (r[5], r[8]) for r in rows}  # actor -> (GPUs, GPU ids)
    assert gpu_of["rollout worker 0"] == gpu_of["learner rank 0"] == ("0.5", gpu_of["rollout worker 0"][1])
    assert gpu_of["rollout worker 0"][1] != gpu_of["rollout worker 1"][1]  # two GPUs, one pair each
    assert "while generating" in colocated and "during learner step" in colocated
    assert "everything runs on CPU" in cpu
    assert len(_actor_rows(cpu)) == 8
    assert "memory per GPU" in cpu


def test_default_gpus_pretends_the_node_a_gpu_recipe_needs(monkeypatch):
    # On a machine without GPUs and without --gpus: a recipe that sets resources.* is planned on a
    # pretend node with exactly the GPUs its placement group holds (4 + 4; colocated: 2 shared);
    # a CPU recipe (no resources.*) keeps Ray's detection (None); RAY_ADDRESS always does.
    import torch

    from rlcurr.plan import default_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    n8, note = default_gpus(load_config(ROOT / "recipes" / "dump_kk_8gpu.yaml"))
    assert n8 == 8 and "8 GPUs the recipe needs" in note
    assert default_gpus(load_config(ROOT / "recipes" / "dump_kk_2gpu_colocate.yaml"))[0] == 2
    assert default_gpus(load_config(ROOT / "recipes" / "quickstart.yaml")) == (None, None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert default_gpus(load_config(ROOT / "recipes" / "dump_kk_8gpu.yaml")) == (None, None)


def test_plan_shows_vllms_context_against_the_model_positions():
    # the trainer's rule (rlcurr.rollout.context): longest prompt + largest max_tokens = 6 + 10 = 16
    fits = estimate_memory(small_config(rollout={"engine": "vllm"}, model={"tiny": {"max_position_embeddings": 16}}),
                           prompt_tokens=6, shape=SMALL)
    line = next(n for n in fits.notes if n.startswith("vLLM context"))
    assert "= 16; fits the model's 16 positions" in line and "rollout.max_tokens" in line
    # a 7-token prompt: 7 + 10 = 17 > 16
    over = estimate_memory(small_config(rollout={"engine": "vllm"}, model={"tiny": {"max_position_embeddings": 16}}),
                           prompt_tokens=7, shape=SMALL)
    assert any("= 17; EXCEEDS the model's 16 positions" in n for n in over.notes)
    assert not any(n.startswith("vLLM context") for n in estimate_memory(small_config(), prompt_tokens=6,
                                                                          shape=SMALL).notes)
