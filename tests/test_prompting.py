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


# ----------------------------------------------------------------------------- BOS convention


def _bos_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A tokenizer with a BOS token that its post-processor adds (as Llama's does)."""
    from tokenizers import processors

    vocab = {"<unk>": 0, "<eos>": 1, "<s>": 2, **{ch: i + 3 for i, ch in enumerate("0123456789+=")}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", bos_token="<s>")
    if chat_template:
        hf.chat_template = chat_template
    return hf


def _trainer_encode(tokenizer, question):
    """Trainer.encode on a stand-in trainer (only its tokenizer and env config are read)."""
    from types import SimpleNamespace

    from rlcurr.trainer import Trainer
    from rlcurr.types import Prompt

    env = SimpleNamespace(system_prompt=None, instruction="")
    stub = SimpleNamespace(tokenizer=tokenizer, cfg=SimpleNamespace(env=env))
    return Trainer.encode(stub, Prompt(uid="u", distribution="d", question=question, answer="4"))


def test_without_a_chat_template_the_prompt_starts_with_bos():
    tok = _bos_tokenizer()
    assert tok("1+3=")["input_ids"] == [2, 4, 13, 6, 14]  # what the tokenizer itself does: <s> 1 + 3 =
    ids, text = _trainer_encode(tok, "1+3=")
    assert ids == [2, 4, 13, 6, 14] and text == "1+3="


def test_with_a_chat_template_bos_comes_from_the_template_once():
    tok = _bos_tokenizer("<s>{% for m in messages %}{{ m['content'] }}{% endfor %}")
    ids, text = _trainer_encode(tok, "1+3=")
    assert text == "<s>1+3="
    assert ids == [2, 4, 13, 6, 14]  # one BOS: the template's, the tokenizer adds none on top
