"""`rlcurr plan`'s model shape and parameter count (used by its memory estimate and by `rlcurr doctor`).

Model shape: model.path's config.json when it exists (Qwen2 / Llama fields); model.tiny's
config (vocabulary: the character tokenizer's 4 special + 100 printable = 104 tokens); or, for a
path that does not exist here (the shipped GPU recipes), the published Qwen2.5 config of the size
in the directory name ("Qwen2.5-7B-Instruct-1M" -> 7B), said as "estimated from the model name".
Parameters are counted as a Qwen2 / Llama decoder: embeddings V*H; per layer q/k/v/o projections
(q/k/v biases for qwen2, or Llama's attention_bias), gate/up/down MLP 3*H*I, two RMSNorms 2*H;
final norm H; LM head V*H unless tied. Checked against transformers' own count in the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rlcurr.errors import UserError

TINY_VOCAB_SIZE = 4 + 100  # rlcurr.learner.models: SPECIAL_TOKENS + string.printable characters


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    qkv_bias: bool
    source: str = ""  # where the shape came from, for the printout


def _qwen25(hidden, layers, inter, heads, kv_heads, vocab, tied) -> dict:
    return dict(hidden_size=hidden, num_layers=layers, intermediate_size=inter, num_heads=heads,
                num_kv_heads=kv_heads, head_dim=hidden // heads, vocab_size=vocab, tie_word_embeddings=tied,
                qkv_bias=True)


# The published config.json of each Qwen2.5 size (the -Instruct and -1M variants share them).
QWEN25_SHAPES = {
    "0.5b": _qwen25(896, 24, 4864, 14, 2, 151936, True),
    "1.5b": _qwen25(1536, 28, 8960, 12, 2, 151936, True),
    "3b": _qwen25(2048, 36, 11008, 16, 2, 151936, True),
    "7b": _qwen25(3584, 28, 18944, 28, 4, 152064, False),
    "14b": _qwen25(5120, 48, 13824, 40, 8, 152064, False),
    "32b": _qwen25(5120, 64, 27648, 40, 8, 152064, False),
    "72b": _qwen25(8192, 80, 29568, 64, 8, 152064, False),
}


def shape_from_hf_config(config: dict, source: str) -> ModelShape:
    """A Qwen2 / Llama config.json's fields -> ModelShape."""
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        model_type = config.get("model_type", "")
        return ModelShape(
            hidden_size=hidden, num_layers=int(config["num_hidden_layers"]),
            intermediate_size=int(config["intermediate_size"]), vocab_size=int(config["vocab_size"]),
            num_heads=heads, num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=model_type.startswith("qwen2") or bool(config.get("attention_bias", False)),
            source=source)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{source}: not a Qwen2/Llama-style config.json (missing or bad field {e})") from None


def shape_from_name(name: str) -> ModelShape | None:
    """A Qwen2.5 size named in a directory name ("Qwen2.5-7B-Instruct-1M" -> 7B), else None."""
    if "qwen" not in name.lower():
        return None
    for size in re.findall(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", name):
        if size.lower() + "b" in QWEN25_SHAPES:
            return ModelShape(**QWEN25_SHAPES[size.lower() + "b"],
                              source=f"estimated from the model name: Qwen2.5-{size}B's published config")
    return None


def model_shape(model_cfg) -> ModelShape:
    """The shape of the recipe's model: config.json, model.tiny, or the name of a missing path."""
    if model_cfg.tiny is not None:
        t = model_cfg.tiny
        return ModelShape(hidden_size=t.hidden_size, num_layers=t.num_layers, intermediate_size=t.intermediate_size,
                          vocab_size=TINY_VOCAB_SIZE, num_heads=t.num_heads, num_kv_heads=t.num_kv_heads,
                          head_dim=t.hidden_size // t.num_heads, tie_word_embeddings=True,
                          qkv_bias=t.arch == "qwen2", source=f"model.tiny ({t.arch})")
    path = Path(model_cfg.path).expanduser()
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"model.path: cannot read {path / 'config.json'}: {e}") from None
        return shape_from_hf_config(config.get("text_config", config), f"{path / 'config.json'}")
    if path.exists():
        raise UserError(f"model.path: {path} has no config.json; point it at a Hugging Face model directory")
    shape = shape_from_name(path.name)
    if shape is None:
        sizes = ", ".join(s.upper() for s in QWEN25_SHAPES)
        raise UserError(f"model.path: {path} does not exist here and its name names no Qwen2.5 size ({sizes}) "
                        f"to estimate from; set model.path to an existing model directory (its config.json is read)")
    return shape


def layer_params(s: ModelShape) -> int:
    """One decoder layer: attention projections (+ q/k/v biases), SwiGLU MLP, two RMSNorm weights."""
    q_out, kv_out = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    attention = s.hidden_size * q_out + 2 * s.hidden_size * kv_out + q_out * s.hidden_size
    if s.qkv_bias:
        attention += q_out + 2 * kv_out
    mlp = 3 * s.hidden_size * s.intermediate_size
    return attention + mlp + 2 * s.hidden_size


def root_params(s: ModelShape) -> int:
    """Everything outside the decoder layers: embeddings, final norm, LM head unless tied."""
    embeddings = s.vocab_size * s.hidden_size
    return embeddings + s.hidden_size + (0 if s.tie_word_embeddings else embeddings)


def count_params(s: ModelShape) -> int:
    return s.num_layers * layer_params(s) + root_params(s)


def lora_params(s: ModelShape, lora_cfg) -> int:
    """peft LoRA: A [r, in] and B [out, r] per targeted projection of every layer."""
    q_out, kv_out = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    dims = {"q_proj": (s.hidden_size, q_out), "k_proj": (s.hidden_size, kv_out), "v_proj": (s.hidden_size, kv_out),
            "o_proj": (q_out, s.hidden_size), "gate_proj": (s.hidden_size, s.intermediate_size),
            "up_proj": (s.hidden_size, s.intermediate_size), "down_proj": (s.intermediate_size, s.hidden_size)}
    unknown = [m for m in lora_cfg.target_modules if m not in dims]
    if unknown:
        raise UserError(f"model.lora.target_modules: cannot estimate {', '.join(unknown)} (known: {', '.join(dims)})")
    return s.num_layers * sum(lora_cfg.r * (dims[m][0] + dims[m][1]) for m in lora_cfg.target_modules)
