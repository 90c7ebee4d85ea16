"""Stop strings inside a token: both engines end the answer with the token that completes the stop
string, and its text is the decoding of its token ids (rlcurr/rollout/stop_strings.py), so the
reward reads exactly what the learner trains on; a multi-turn tool still reads its call.

The model: a BPE tokenizer whose merge "]" + "=" -> "]=" puts the stop string "]" inside a token,
and a one-layer Qwen2 whose next token is a fixed function of the current token (attention and
MLP outputs zeroed, one-hot embeddings, an LM head that maps each token to its successor with a
logit of ~230): it writes a chosen text, at temperature 1 as greedily, in both engines.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from envs.calc import tool_output
from rlcurr.learner.models import build_char_tokenizer
from rlcurr.rewards.builtin import last_line_match
from rlcurr.rollout.multiturn import generate_with_tools
from rlcurr.rollout.stop_strings import find_stop, through_stop
from rlcurr.types import GenRequest, Prompt

HAS_VLLM = importlib.util.find_spec("vllm") is not None

# The model's text after a prompt "x": a calculator call ending in the merged token "]=", which
# goes on with "9"s when nothing stops it; after a tool output "3\n" it answers "3" and ends.
NEXT = {"x": "[", "[": "1", "1": "+", "+": "2", "2": "]=", "]=": "9", "9": "9", "\n": "3", "3": "</s>"}


# ----------------------------------------------------------------------------- the rule, by hand


def _pieces_decoder(pieces: list[str]):
    """Token i decodes to pieces[i]; the ids are indices into `pieces`."""
    return lambda ids: "".join(pieces[i] for i in ids)


@pytest.mark.parametrize("pieces, stops, expected", [
    (["[", "1", "]=", "9"], ["]"], (3, "]")),            # inside a merged token: ends with that token
    (["[", "1", "]", "9"], ["]"], (3, "]")),             # a token of its own
    (["a", "<", "/c", "al", "l>", "x"], ["</call>"], (5, "</call>")),  # across tokens
    (["a", "]>", "b"], [">", "]"], (2, "]")),           # same token: the one that ends first wins...
    (["a", "]]", "b"], ["]]", "]"], (2, "]")),
    (["a", "]", "b"], ["]", "a]"], (2, "]")),            # ...ties by the request's order
    (["a", "b", "c"], ["]"], None),
    ([], ["]"], None),
])
def test_find_stop_takes_the_fewest_tokens_that_hold_a_stop_string(pieces, stops, expected):
    ids = list(range(len(pieces)))
    assert find_stop(ids, _pieces_decoder(pieces), stops) == expected


def test_find_stop_binary_search_finds_an_early_stop_in_a_long_answer():
    pieces = ["a"] * 300 + ["]="] + ["]"] * 50
    decode = _pieces_decoder(pieces)
    assert find_stop(list(range(len(pieces))), decode, ["]"]) == (301, "]")
    # `clear` = tokens known to hold none: only ends after them are tried
    assert find_stop(list(range(301)), decode, ["]"], clear=300) == (301, "]")
    assert find_stop(list(range(300)), decode, ["]"], clear=299) is None


def test_through_stop_cuts_after_the_first_occurrence():
    assert through_stop("[1+2]=", "]") == "[1+2]"
    assert through_stop("[1]]", "]") == "[1]"
    assert through_stop("no call", "]") == "no call"


# ----------------------------------------------------------------------------- the model


def merged_tokenizer():
    """The character tokenizer plus one merged token "]=" (BPE merge "]" + "=")."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    base = build_char_tokenizer()
    vocab = dict(base.get_vocab())
    vocab["]="] = len(vocab)
    inner = base.backend_tokenizer
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("]", "=")], unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = inner.pre_tokenizer, inner.decoder
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


def build_successor_model(out_dir: Path, successor: dict[str, str]) -> Path:
    """A Qwen2 directory whose logits make `successor[token]` the next token (others -> EOS)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = merged_tokenizer()
    vocab = tok.get_vocab()
    assert tok.tokenize("]=") == ["]="] and tok.decode([vocab["]="]]) == "]="
    V = len(vocab)
    config = Qwen2Config(vocab_size=V, hidden_size=128, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False, torch_dtype="float32")
    assert V <= config.hidden_size  # one-hot embeddings
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream stays the current token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(V, config.hidden_size))
        head = torch.zeros(V, config.hidden_size)
        for t in range(V):
            head[tok.eos_token_id, t] = 20.0
        for cur, nxt in successor.items():
            a, b = tok.convert_tokens_to_ids(cur), tok.convert_tokens_to_ids(nxt)
            head[:, a] = 0.0
            head[b, a] = 20.0
        model.lm_head.weight.copy_(head)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def _symbols(text: str) -> str:
    return text.replace("\n", "Ċ")  # the byte-level symbol of a newline, as in the vocabulary


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_successor_model(tmp_path_factory.mktemp("merged") / "m",
                                 {_symbols(k): _symbols(v) for k, v in NEXT.items()})


class _Calculator:
    """A tool environment: "]" ends a call, envs.calc's calculator answers it."""

    tool_stop = ("]",)
    max_turns = 2

    def __init__(self):
        self.calls = []

    def turn(self, prompt, trajectory):
        self.calls.append(trajectory)
        return tool_output(trajectory)


def _check_engine(engine):
    """One engine on the successor model: single-turn, then the calculator through the turn loop."""
    tok = engine.tokenizer
    prompt = tok("x", add_special_tokens=False)["input_ids"]
    merged = tok.convert_tokens_to_ids("]=")
    (plain,) = engine.generate([GenRequest(prompt, 1, 8, temperature=1.0, seed=0)])[0]
    assert plain.text == "[1+2]=999" and plain.finish_reason == "length"

    (c,) = engine.generate([GenRequest(prompt, 1, 8, temperature=1.0, seed=0, stop=("]",))])[0]
    assert c.token_ids == plain.token_ids[:5] and c.token_ids[-1] == merged
    assert c.text == "[1+2]=" == tok.decode(c.token_ids, skip_special_tokens=True)
    assert c.logprobs == pytest.approx(plain.logprobs[:5])
    assert c.finish_reason == "stop" and c.stop_reason == "]"

    env = _Calculator()
    p = Prompt(uid="u", distribution="d", question="x", answer="3")
    (answer,) = generate_with_tools(engine.generate, [GenRequest(prompt, 1, 20, temperature=1.0, seed=0)], [p], env,
                                    lambda text: tok(text, add_special_tokens=False)["input_ids"])[0]
    assert env.calls == ["[1+2]"]  # the call up to the stop string, without the "=" of its token
    assert answer.text == "[1+2]=3\n3" == tok.decode(answer.token_ids, skip_special_tokens=True)
    assert answer.tool_mask == [False] * 5 + [True, True] + [False, False]  # "3", "\n"; "3", EOS
    assert last_line_match(None, [answer.text], answer=["3"]) == [1.0]


def test_hf_engine_ends_on_a_stop_string_inside_a_token(model_dir):
    from rlcurr.rollout.hf_engine import HFEngine

    _check_engine(HFEngine(str(model_dir), seed=0))


def test_vllm_completion_keeps_text_and_token_ids_together(model_dir):
    # vLLM's own output for a stop inside the last token: text cut at the stop, the token kept.
    from rlcurr.rollout.vllm_engine import VLLMEngine

    engine = object.__new__(VLLMEngine)  # only the completion-building part, no vLLM start
    engine.tokenizer = merged_tokenizer()
    ids = engine.tokenizer("[1+2]=", add_special_tokens=False)["input_ids"]
    logprobs = [{t: SimpleNamespace(logprob=-0.1 * (i + 1))} for i, t in enumerate(ids)]
    o = SimpleNamespace(token_ids=ids, logprobs=logprobs, finish_reason="stop", stop_reason="]", text="[1+2]")
    c = engine._completion(o, ("]",))
    assert c.token_ids == ids and c.text == "[1+2]=" and c.stop_reason == "]"
    assert c.logprobs == pytest.approx([-0.1, -0.2, -0.3, -0.4, -0.5])
    # Tokens after the completing one (several tokens in one step, e.g. speculative decoding) go.
    more = ids + engine.tokenizer("9", add_special_tokens=False)["input_ids"]
    o = SimpleNamespace(token_ids=more, logprobs=logprobs + [{more[-1]: SimpleNamespace(logprob=-1.0)}],
                        finish_reason="stop", stop_reason="]", text="[1+2]")
    c = engine._completion(o, ("]",))
    assert c.token_ids == ids and c.text == "[1+2]=" and len(c.logprobs) == 5


@pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")
def test_vllm_engine_ends_on_a_stop_string_inside_a_token(model_dir):
    from rlcurr.rollout.vllm_engine import VLLMEngine

    threads = torch.get_num_threads()  # vLLM lowers torch's thread count for serving
    engine = VLLMEngine(str(model_dir), dtype="float32", seed=0, gpu_memory_utilization=0.05)
    try:
        _check_engine(engine)
    finally:
        engine.llm.llm_engine.engine_core.shutdown()
        torch.set_num_threads(threads)
