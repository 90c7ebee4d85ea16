"""VLLMEngine on CPU with a tiny random model: shapes/finish reasons, and weight reload vs transformers.

The module-scoped engine fixture runs in both of vLLM's layouts: engine core in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, start ≈ 6 s; weights passed as tensors) and vLLM's default
with the engine core in other processes (start ≈ 20 s; weights passed through a safetensors
file), as in a Ray rollout worker.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("vllm")

from rlcurr.config import TinyModelConfig  # noqa: E402
from rlcurr.learner.models import build_tiny_model, load_causal_lm  # noqa: E402
from rlcurr.types import GenRequest  # noqa: E402

VALID_FINISH = {"stop", "length"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_models")
    return build_tiny_model(TinyModelConfig(), root / "a", seed=0), build_tiny_model(TinyModelConfig(), root / "b", seed=1)


# Only vLLM's default (engine-core subprocess) mode, which rollout workers use. The in-process
# mode (VLLM_ENABLE_V1_MULTIPROCESSING=0) also works, but on CPU vLLM then counts the whole
# pytest process's memory against its KV-cache budget and refuses to start in a full test run.
@pytest.fixture(scope="module", params=["multiprocess"])
def engine(models, request):
    from rlcurr.rollout.vllm_engine import VLLMEngine

    old = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if request.param == "in_process" else "1"
    threads = torch.get_num_threads()  # vLLM lowers torch's thread count for serving
    try:
        eng = VLLMEngine(str(models[0]), dtype="float32", seed=0, gpu_memory_utilization=0.1)
    finally:
        if old is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = old
    assert eng.in_process == (request.param == "in_process")
    yield eng
    eng.llm.llm_engine.engine_core.shutdown()
    torch.set_num_threads(threads)


def test_generate_shapes_and_finish(engine):
    eos = engine.tokenizer.eos_token_id
    reqs = [GenRequest([5, 6, 7], n=3, max_tokens=8, seed=1),
            GenRequest([9, 10, 11, 12], n=2, max_tokens=3, temperature=0.0),
            GenRequest([22] * 5, n=1, max_tokens=40, temperature=0.7, top_p=0.9, seed=3)]
    out = engine.generate(reqs)
    assert [len(group) for group in out] == [3, 2, 1]
    for req, group in zip(reqs, out):
        for c in group:
            assert 1 <= len(c.token_ids) <= req.max_tokens
            assert len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0.0 for lp in c.logprobs)
            assert c.finish_reason in VALID_FINISH
            if c.finish_reason == "length":
                assert len(c.token_ids) == req.max_tokens
            else:
                assert c.token_ids[-1] == eos
            assert isinstance(c.text, str)
    # greedy copies agree; seeded sampling is reproducible; the n copies of a seeded request differ
    assert out[1][0].token_ids == out[1][1].token_ids
    again = engine.generate(reqs[:1])
    assert [c.token_ids for c in again[0]] == [c.token_ids for c in out[0]]
    assert len({tuple(c.token_ids) for c in out[0]}) > 1


@torch.no_grad()
def _hf_logprobs(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    if temperature > 0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(response)[:, None])[:, 0]


def test_load_weights_matches_transformers(engine, models):
    prompts = [[5, 6, 7, 8], [30, 31, 32], [40] * 6]
    greedy = [GenRequest(p, n=1, max_tokens=16, temperature=0.0) for p in prompts]
    engine.load_weights(load_causal_lm(models[0], "float32").state_dict().items())  # start from model a
    before = engine.generate(greedy)

    hf = load_causal_lm(models[1], "float32").eval()
    # without lm_head.weight, as save_pretrained/named_parameters give a tied model's weights
    engine.load_weights((k, v) for k, v in hf.state_dict().items() if k != "lm_head.weight")

    after = engine.generate(greedy)
    assert [g[0].token_ids for g in after] != [g[0].token_ids for g in before]
    sampled = engine.generate([GenRequest(p, n=2, max_tokens=16, temperature=0.7, seed=5) for p in prompts])

    diffs = []
    for p, group in zip(prompts, after):
        c = group[0]
        diffs.append((_hf_logprobs(hf, p, c.token_ids, 0.0) - torch.tensor(c.logprobs)).abs())
        # greedy tokens are the HF argmax
        ids = torch.tensor([p + c.token_ids])
        with torch.no_grad():
            hf_argmax = hf(input_ids=ids).logits[0, len(p) - 1 : -1].argmax(-1).tolist()
        assert hf_argmax == c.token_ids
    for p, group in zip(prompts, sampled):
        for c in group:  # logprobs of the sampling distribution (after temperature)
            diffs.append((_hf_logprobs(hf, p, c.token_ids, 0.7) - torch.tensor(c.logprobs)).abs())
    assert torch.cat(diffs).mean().item() <= 1e-3


def test_stop_strings_cut_at_the_first_occurrence(engine, models):
    # Multi-turn tool calls end on a stop string. Same seed, same draws: the stopped answer is the
    # unstopped one cut right after the string's first occurrence (kept in the answer), and says
    # which string stopped it.
    engine.load_weights(load_causal_lm(models[0], "float32").state_dict().items())
    (full,) = engine.generate([GenRequest([5, 6, 7], n=1, max_tokens=30, temperature=1.0, seed=11)])[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    (cut,) = engine.generate([GenRequest([5, 6, 7], 1, 30, 1.0, seed=11, stop=(stop, "\x00never"))])[0]
    end = full.text.index(stop) + len(stop)
    assert cut.text == full.text[:end]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop and full.stop_reason is None
