"""Model loading: local Hugging Face directories, a tiny-model factory, and LoRA wrapping.

The tiny model is a random-init Qwen2 or Llama causal LM with a character-level tokenizer built
with `tokenizers` (a BPE model with no merges = one token per character). It is saved as a
normal HF directory (config.json, model.safetensors, tokenizer.json), so transformers and vLLM
both load it. Nothing is downloaded.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from rlcurr.errors import UserError

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARSET = string.printable  # digits, letters, punctuation, whitespace incl. newline

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character, in GPT-2 byte-level form (space = 'Ġ').

    Byte-level because transformers' AutoTokenizer (and so vLLM) re-applies the Qwen2/Llama
    tokenizer's own byte-level pre-tokenizer when it loads a qwen2/llama directory; a vocabulary
    of raw characters would then lose spaces and newlines.
    """
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte-level symbols
    to_symbol = {chr(b): c for b, c in zip(range(256), _bytes_to_unicode())}
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARSET:
        vocab.setdefault(to_symbol[ch], len(vocab))
    assert set(vocab) - set(SPECIAL_TOKENS) <= set(byte_to_char)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable-unicode table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def build_tiny_model(cfg, out_dir: Path, seed: int) -> Path:
    """Write a random-init tiny model + character tokenizer to `out_dir` (an HF model dir)."""
    from transformers import LlamaConfig, Qwen2Config

    tokenizer = build_char_tokenizer()
    common = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, torch_dtype="float32",
    )
    config = Qwen2Config(**common) if cfg.arch == "qwen2" else LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"model.path: {path} is not a Hugging Face model directory (no config.json)")
    return path


def load_tokenizer(path: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str | Path, dtype: str = "float32") -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    model.config.use_cache = False
    return model


def apply_lora(model: torch.nn.Module, lora_cfg) -> torch.nn.Module:
    """Wrap with a peft LoRA adapter: only adapter weights train."""
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)
