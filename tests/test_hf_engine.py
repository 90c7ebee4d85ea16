"""The transformers engine stops on every EOS id of the model's generation_config, as vLLM does; its
shared-prefill, live-row decode gives exactly the answers of a naive uncached loop."""

import json
import math

import pytest
import torch

from rlcurr.config import TinyModelConfig
from rlcurr.learner.models import build_tiny_model
from rlcurr.rollout.hf_engine import HFEngine, sample_next
from rlcurr.types import GenRequest

SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64)
PROMPT = [5, 6, 76, 7, 84]  # "12+3=" in the character tokenizer


def test_generation_stops_on_any_eos_id_of_the_generation_config(tmp_path):
    model_dir = build_tiny_model(SMALL, tmp_path / "m", seed=0)
    greedy = GenRequest(PROMPT, n=1, max_tokens=6, temperature=0.0)
    (before,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    eos = HFEngine(str(model_dir), seed=0).tokenizer.eos_token_id
    assert before.finish_reason == "length" and eos not in before.token_ids  # a random model runs on
    # Declare the third greedy token an end-of-sequence token too (a model with a turn-end token
    # next to its EOS, e.g. Llama 3's <|eot_id|> and <|end_of_text|>).
    extra = before.token_ids[2]
    path = model_dir / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**cfg, "eos_token_id": [eos, extra]}))

    (after,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    stop = before.token_ids.index(extra) + 1  # the first occurrence (may be before position 2)
    assert after.token_ids == before.token_ids[:stop]
    assert after.logprobs == before.logprobs[:stop]
    assert after.finish_reason == "stop"


def test_a_single_int_eos_in_the_generation_config_still_stops(tmp_path):
    model_dir = build_tiny_model(SMALL, tmp_path / "m", seed=0)
    greedy = GenRequest(PROMPT, n=1, max_tokens=6, temperature=0.0)
    (before,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    path = model_dir / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**cfg, "eos_token_id": before.token_ids[0]}))
    (after,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    assert after.token_ids == before.token_ids[:1] and after.finish_reason == "stop"


# ----------------------------------------------------------------------------- exactness of the fast path

EARLY_EOS = list(range(10, 24))  # 14 of 104 ids: a near-uniform random model stops ~13% per step


def _engine_with_eos(tmp_path, eos_ids):
    model_dir = build_tiny_model(SMALL, tmp_path / "m", seed=0)
    path = model_dir / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**cfg, "eos_token_id": eos_ids}))
    return HFEngine(str(model_dir), seed=0)


def _reference_draw(logits_V, temp, top_p, u):
    """One token by the engine's scheme, written independently in float64 with a Python loop:
    temperature, top-p (keep the smallest most-likely prefix with mass >= top_p), then the first
    vocab index whose cumulative probability exceeds u. Greedy: argmax, untempered logprob."""
    logits_V = logits_V.double()
    if temp == 0:
        lp_V = torch.log_softmax(logits_V, -1)
        tok = int(lp_V.argmax())
        return tok, float(lp_V[tok])
    p_V = torch.softmax(logits_V / temp, -1)
    if top_p < 1.0:
        keep_V = torch.zeros_like(p_V)
        before = 0.0
        for i in p_V.argsort(descending=True).tolist():
            if before <= top_p:
                keep_V[i] = 1.0
            before += float(p_V[i])
        p_V = p_V * keep_V / (p_V * keep_V).sum()
    cdf = 0.0
    for i, p in enumerate(p_V.tolist()):
        cdf += p
        if cdf > u and p > 0:
            return i, math.log(p)
    raise AssertionError("u beyond the cdf")


@torch.no_grad()
def _reference_generate(engine, requests, seed):
    """The naive loop: no KV cache (a full forward over prompt + answer so far, one row at a time),
    no prompt sharing, no pruning; one uniform per row per step from a generator seeded alike."""
    gen = torch.Generator().manual_seed(seed)
    rows = [r for r in requests for _ in range(r.n)]
    top_p = requests[0].top_p
    answers = [([], []) for _ in rows]
    done = [False] * len(rows)
    for t in range(max(r.max_tokens for r in rows)):
        u_B = torch.rand(len(rows), generator=gen)
        for b, r in enumerate(rows):
            if done[b]:
                continue
            ids, lps = answers[b]
            logits_V = engine.model(input_ids=torch.tensor([r.prompt_ids + ids])).logits[0, -1]
            temp = r.temperatures[min(t, len(r.temperatures) - 1)] if r.temperatures else r.temperature
            tok, lp = _reference_draw(logits_V, temp, top_p, float(u_B[b]))
            ids.append(tok)
            lps.append(lp)
            done[b] = tok in engine.eos_ids or len(ids) == r.max_tokens
        if all(done):
            break
    return answers


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_engine_matches_the_naive_uncached_loop(tmp_path, top_p):
    engine = _engine_with_eos(tmp_path, EARLY_EOS)
    short = [5, 6, 76, 7, 84]  # "12+3="
    longer = [5, 6, 76, 7, 84, 9, 76, 5, 5]
    requests = [
        GenRequest(short, n=3, max_tokens=7, temperature=1.0, top_p=top_p, seed=11),
        GenRequest(short, n=2, max_tokens=4, temperature=0.7, top_p=top_p),  # same prompt, another request
        GenRequest(longer, n=3, max_tokens=9, top_p=top_p, temperatures=(1.5, 0.0, 0.7, 1.0)),  # EAD, one greedy step
    ]
    got = [c for comps in engine.generate(requests) for c in comps]
    want = _reference_generate(engine, requests, seed=11)
    for c, (ids, lps) in zip(got, want, strict=True):
        assert c.token_ids == ids
        assert c.logprobs == pytest.approx(lps, abs=1e-5)
    # The scenario really has rows that stop early by EOS and rows that run to their max_tokens.
    assert any(c.finish_reason == "stop" and len(c.token_ids) < r.max_tokens
               for c, r in zip(got, [r for r in requests for _ in range(r.n)]))
    assert any(c.finish_reason == "length" for c in got)


def test_a_row_does_not_change_when_another_row_stops_sooner(tmp_path):
    engine = _engine_with_eos(tmp_path, [2])  # no early stops: pruning comes from max_tokens alone
    a = GenRequest([5, 6, 76, 7, 84], n=2, max_tokens=8)
    b_long = GenRequest([9, 76, 5, 84], n=2, max_tokens=8, seed=5)
    b_short = GenRequest([9, 76, 5, 84], n=2, max_tokens=2, seed=5)
    # b's rows come first, so dropping them shifts the live positions of a's rows.
    b8, a_long = engine.generate([b_long, a])
    b2, a_short = engine.generate([b_short, a])
    assert [c.token_ids for c in a_short] == [c.token_ids for c in a_long]
    for x, y in zip(a_short, a_long):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)
    assert [c.token_ids for c in b2] == [c.token_ids[:2] for c in b8]  # b's first draws are its own too


def _logits(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float32))


@pytest.mark.parametrize("u, token", [(0.65, 1), (0.75, 2), (0.05, 0)])
def test_sample_next_takes_the_token_whose_cdf_interval_holds_u(u, token):
    # probs [0.1, 0.6, 0.3]: cdf [0.1, 0.7, 1.0], intervals [0, 0.1) [0.1, 0.7) [0.7, 1.0).
    # u = 0.65 -> token 1, u = 0.75 -> token 2, u = 0.05 -> token 0.
    tok_B, lp_B = sample_next(_logits([0.1, 0.6, 0.3]), 1.0, 1.0, torch.tensor([u]))
    assert int(tok_B[0]) == token
    assert float(lp_B[0]) == pytest.approx(math.log([0.1, 0.6, 0.3][token]), abs=1e-6)


def test_top_p_removes_tail_tokens_from_the_draw():
    # top_p 0.8 on [0.1, 0.6, 0.3]: sorted 0.6, 0.3 (0.6 before it <= 0.8) stay; 0.1 (0.9 before it)
    # goes. Renormalised [0, 2/3, 1/3]: cdf [0, 2/3, 1], so u = 0.05 can no longer give token 0.
    logits_BV = _logits([0.1, 0.6, 0.3]).expand(3, 3)
    tok_B, lp_B = sample_next(logits_BV, 1.0, 0.8, torch.tensor([0.05, 0.6, 0.7]))
    assert tok_B.tolist() == [1, 1, 2]
    assert lp_B.tolist() == pytest.approx([math.log(2 / 3), math.log(2 / 3), math.log(1 / 3)], abs=1e-6)
    # A removed token at the END of the vocab is never drawn, even for u at the top (round-off
    # can leave the float cdf below u): [0.3, 0.6, 0.1] keeps tokens 0, 1 only.
    tok_B, _ = sample_next(_logits([0.3, 0.6, 0.1]).expand(3, 3), 1.0, 0.8, torch.tensor([0.5, 0.999999, 1.0]))
    assert tok_B.tolist() == [1, 1, 1]


def test_sample_next_greedy_rows_ignore_their_uniform():
    logits_BV = _logits([0.1, 0.6, 0.3]).expand(2, 3)
    tok_B, lp_B = sample_next(logits_BV, torch.tensor([0.0, 1.0]), 1.0, torch.tensor([0.05, 0.05]))
    assert tok_B.tolist() == [1, 0]
    assert float(lp_B[0]) == pytest.approx(math.log(0.6), abs=1e-6)
