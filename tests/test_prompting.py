"""Prompt formatting with and without a chat template (tokenizers built locally, no downloads)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlcurr.prompting import format_env_prompt, format_prompt, has_chat_template, prompt_messages, user_text

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<eos>": 1, **{ch: i + 2 for i, ch in enumerate("0123456789+=")}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    if chat_template:
        hf.chat_template = chat_template
    return hf


@pytest.fixture(scope="module")
def plain():
    return _tokenizer()


@pytest.fixture(scope="module")
def chat():
    return _tokenizer(CHAT_TEMPLATE)


def test_plain_template_returns_question_unchanged(plain):
    assert not has_chat_template(plain)
    assert format_prompt(plain, "12+34=", system_prompt=None, instruction="", hint=None) == "12+34="


def test_plain_template_parts_and_no_trailing_newline(plain):
    got = format_prompt(plain, "12+34=", system_prompt="You add.", instruction="Answer only.", hint="4")
    assert got == "You add.\nHint: 4\n12+34=\nAnswer only."
    got = format_prompt(plain, "12+34=", system_prompt=None, instruction="", hint="4")
    assert got == "Hint: 4\n12+34="  # still ends where the answer starts
    assert not got.endswith("\n")


def test_chat_template(chat):
    assert has_chat_template(chat)
    got = format_prompt(chat, "12+34=", system_prompt="You add.", instruction="", hint=None)
    assert got == "<|system|>You add.<|end|><|user|>12+34=<|end|><|assistant|>"
    got = format_prompt(chat, "12+34=", system_prompt=None, instruction="Be brief.", hint="4")
    assert got == "<|user|>Hint: 4\n12+34=\nBe brief.<|end|><|assistant|>"


def test_hint_placement_is_the_same_in_both_templates(plain, chat):
    body = user_text("Q?", instruction="I.", hint="H")
    assert format_prompt(plain, "Q?", system_prompt=None, instruction="I.", hint="H") == body
    assert f"<|user|>{body}<|end|>" in format_prompt(chat, "Q?", system_prompt=None, instruction="I.", hint="H")
    assert prompt_messages("Q?", system_prompt=None, instruction="I.", hint="H") == [{"role": "user", "content": body}]


def test_format_env_prompt_uses_env_config(plain):
    from envs.arith import ArithConfig

    cfg = ArithConfig(instruction="", system_prompt=None)
    assert format_env_prompt(plain, cfg, "1+2=") == "1+2="
    assert format_env_prompt(plain, cfg, "1+2=", hint="3") == "Hint: 3\n1+2="
