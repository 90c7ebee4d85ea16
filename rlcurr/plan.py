"""`rlcurr plan RECIPE`: what a recipe would start, without training.

Nothing is built, downloaded or written: the recipe is validated (`load_config`), then

1. Placement. The trainer's own `rlcurr.rollout.pool.placement(...)` is called with the arguments
   `Trainer.start` gives it, so the Ray placement group is really created; each actor's options are
   then tried by a no-op Ray task (`num_cpus=0`, the actor's GPUs and bundle), which reports the node
   and the GPU ids Ray hands it (`ray.get_gpu_ids()`: the CUDA_VISIBLE_DEVICES the real actor would
   see). Then the group is removed, and a Ray started here is shut down. Without RAY_ADDRESS a local
   Ray is started with `--gpus N` GPUs (default: what Ray detects; on a machine without GPUs, a
   recipe that sets a `resources` field gets a pretend node with the GPUs it needs), so a node you don't have can be
   planned; with RAY_ADDRESS the plan is made on that cluster (its free GPUs). A recipe that needs
   more GPUs than the cluster has is one error naming the fields and numbers, before Ray is asked.
   With no GPUs placement is a no-op (the actors run on CPU wherever Ray starts them).

2. Memory per GPU: an ESTIMATE, from the parameter count and the recipe, in GiB (2**30 bytes).
   Model shape: model.path's config.json when it exists (Qwen2 / Llama fields); model.tiny's
   config (vocabulary: the character tokenizer's 4 special + 100 printable = 104 tokens); or, for a
   path that does not exist here (the shipped GPU recipes), the published Qwen2.5 config of the size
   in the directory name ("Qwen2.5-7B-Instruct-1M" -> 7B), said as "estimated from the model name".
   Parameters are counted as a Qwen2 / Llama decoder: embeddings V*H; per layer q/k/v/o projections
   (q/k/v biases for qwen2, or Llama's attention_bias), gate/up/down MLP 3*H*I, two RMSNorms 2*H;
   final norm H; LM head V*H unless tied. Checked against transformers' own count in the tests.

   Learner rank (one GPU; divided by learner.num_workers under fsdp, which shards parameters,
   gradients and optimizer state):
     - weights: trained weights are fp32 masters (4 B) whatever model.dtype is (mixed precision,
       rlcurr.learner.precision); without FSDP, autocast's model.dtype copies of them during a
       forward; a reference copy in model.dtype when algo.kl_coef > 0 (no LoRA);
     - gradients: trainable params x 4 B;
     - AdamW: exp_avg and exp_avg_sq, 2 x trainable x 4 B. LoRA: only the adapter (r x (in + out)
       per targeted projection) is trained (fp32, as peft keeps it); the frozen base stays in
       model.dtype;
     - PPO's critic: the base transformer without the LM head + Linear(H, 1), all trained
       (fp32 weights, gradients, 2 moments);
     - fsdp: one decoder layer and the root unit (embeddings, LM head, final norm) gathered whole
       during forward / backward;
     - activations of one training micro-batch (no activation checkpointing in the learner):
       tokens = answers x (prompt + rollout.max_tokens), answers = algo.micro_batch_size, fewer
       when learner.max_tokens_per_micro_batch cuts them (rlcurr.learner.batching.cut_by_tokens).
       Saved per token and layer, roughly (bf16 / fp16 b = 2 bytes, fp32 b = 4):
         16 H (two RMSNorms: fp32 input 4H + normalised 2H + output 2H, at b = 2)
         + b (3 H + 2 kv) (attention: q, k, v after RoPE, its output and o_proj's input copy)
         + b 4 I (MLP: gate, up, silu(gate), their product)
       plus the answer hidden states [answer tokens, H] and the chunked logits: the learner scores
       answers in chunks of 2**23 fp32 logits (32 MiB, rlcurr.learner.batching); ~4 such buffers
       (logits, softmax, their gradients) at a time;
     - ~0.5 GiB CUDA context and allocator slack.
   The worst case is assumed: every answer as long as rollout.max_tokens and every prompt
   `prompt_tokens` long (default 512; pass --prompt-tokens).

   Rollout engine, per GPU of a worker:
     - vllm: the engine takes rollout.gpu_memory_utilization x GPU memory and no more: weights /
       tensor_parallel_size, the rest (minus nothing else: vLLM's own activation reserve and CUDA
       graphs are left out) is KV cache, shown with how many tokens it holds (2 x layers x kv heads
       on this GPU x head_dim x b bytes per token). Weights that leave no KV cache are an error
       vLLM would raise at start: reported as a warning;
     - hf: weights + a KV cache for the worker's whole share of a step's answers (the HF engine
       decodes all requests of a call in one batch) at prompt + max_tokens tokens, + 0.5 GiB.
   Colocated (resources.colocate): one GPU holds a rollout worker and a learner rank. vLLM sleeps
   during the learner step (weights to CPU, KV cache dropped), so the peak is the larger of
   "while generating" (learner weights + optimizer state + reference, + vLLM's share: the learner
   drops its gradients and empties the CUDA cache after each update, `Learner.release_memory`,
   before vLLM wakes) and "during the learner step" (the whole learner estimate, vLLM asleep).
   A per-GPU total above the GPU memory (--gpu-memory-gib, default 80) is a warning.

Left out: the driver process, eval batches, vLLM's CUDA graphs and activation reserve, memory
fragmentation, the NCCL buffers, host (CPU) memory, multi-node tensor parallelism, and any
architecture other than Qwen2 / Llama decoders (MoE, sliding windows are counted as dense).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlcurr.errors import UserError

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4  # peft keeps LoRA adapter weights in fp32 (autocast_adapter_dtype) even on a bf16 model
MASTER_BYTES = 4  # trained weights, their gradients and AdamW moments are fp32 (rlcurr.learner.precision)
CUDA_CONTEXT_BYTES = GIB // 2
LOGIT_CHUNK_BYTES = 2**23 * 4  # rlcurr.learner.batching.LOGIT_CHUNK_ELEMENTS fp32 logits
LOGIT_CHUNK_BUFFERS = 4
DEFAULT_PROMPT_TOKENS = 512
TINY_VOCAB_SIZE = 4 + 100  # rlcurr.learner.models: SPECIAL_TOKENS + string.printable characters


# ---------------------------------------------------------------- model shape and parameter count


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


# ---------------------------------------------------------------- memory estimate


@dataclass
class GpuEstimate:
    """One kind of GPU in the plan (e.g. "learner rank"), its memory lines in bytes and total."""

    kind: str
    count: int  # how many GPUs of this kind the plan uses (0 on a CPU-only run it still describes)
    lines: list[tuple[str, int, str]] = field(default_factory=list)  # (what, bytes, how)
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class MemoryEstimate:
    params: int
    trainable_params: int
    shape: ModelShape
    gpu_memory_bytes: int
    gpus: list[GpuEstimate]
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [w for g in self.gpus for w in g.warnings]


def micro_batch_tokens(cfg, prompt_tokens: int) -> int:
    """Padded prompt+answer tokens of the largest training micro-batch (every answer at max_tokens)."""
    sequence = prompt_tokens + cfg.rollout.max_tokens
    answers = cfg.algo.micro_batch_size
    cap = cfg.learner.max_tokens_per_micro_batch
    if cap is not None:
        answers = min(answers, max(1, cap // sequence))  # cut_by_tokens: a longer answer goes alone
    return answers * sequence


def activation_bytes_per_token_layer(s: ModelShape, dtype_bytes: int) -> int:
    kv_dim = s.num_kv_heads * s.head_dim
    norms = 2 * (4 * s.hidden_size + 2 * dtype_bytes * s.hidden_size)  # fp32 input, normalised, output
    attention = dtype_bytes * (3 * s.hidden_size + 2 * kv_dim)
    mlp = dtype_bytes * 4 * s.intermediate_size
    return norms + attention + mlp


def activation_bytes_per_token(s: ModelShape, dtype_bytes: int) -> int:
    """All layers, plus the embedding output and the answer hidden states (counted for every token)."""
    return s.num_layers * activation_bytes_per_token_layer(s, dtype_bytes) + 2 * s.hidden_size * dtype_bytes


def learner_lines(cfg, s: ModelShape, prompt_tokens: int) -> tuple[list[tuple[str, int, str]], int]:
    """The learner rank's memory lines, and how many of their bytes stay between steps (colocation).

    Mixed precision (rlcurr.learner.precision): trained weights are fp32 masters with fp32
    gradients and AdamW moments whatever model.dtype is; frozen weights (LoRA's base, the KL
    reference) stay in model.dtype; compute (activations, FSDP's gathered units, autocast's weight
    copies) is in model.dtype."""
    b = DTYPE_BYTES[cfg.model.dtype]
    mixed = b != MASTER_BYTES
    params = count_params(s)
    ranks = cfg.learner.num_workers
    fsdp = cfg.learner.strategy == "fsdp"
    shard = ranks if fsdp else 1
    per = f" / {ranks} ranks (fsdp)" if fsdp else ""
    lora = cfg.model.lora
    if lora is not None:
        trainable, tb = lora_params(s, lora), LORA_BYTES
        lines = [("weights", params * b + trainable * tb,
                  f"frozen base {params / 1e9:.2f}B x {b} B + LoRA {trainable / 1e6:.1f}M x {tb} B (fp32)")]
        what = f"LoRA adapter only: {trainable / 1e6:.1f}M params x {tb} B"
    else:
        trainable, tb = math.ceil(params / shard), MASTER_BYTES
        what = f"{params / 1e9:.2f}B params x {tb} B{per}"
        master = " (fp32 masters; compute in " + cfg.model.dtype + ")" if mixed else ""
        lines = [("weights", trainable * tb, what + master)]
        if mixed and not fsdp:  # FSDP's gathered units are the bf16 copies, counted below
            lines.append(("compute copy", params * b, f"autocast's {cfg.model.dtype} copies of the weights during "
                                                      f"a forward: {params / 1e9:.2f}B x {b} B"))
    if cfg.algo.kl_coef > 0 and lora is None:
        lines.append(("reference model", math.ceil(params / shard) * b, f"algo.kl_coef > 0: a frozen copy in "
                                                                        f"{cfg.model.dtype}{per}"))
    lines.append(("gradients", trainable * tb, what))
    lines.append(("AdamW state", 2 * trainable * tb, f"exp_avg + exp_avg_sq in fp32: 2 x {what}"))
    freed = ["gradients", "fsdp gathered units", "compute copy"]  # released after each update
    if cfg.algo.name == "ppo":
        critic = math.ceil((params - (0 if s.tie_word_embeddings else s.vocab_size * s.hidden_size)
                            + s.hidden_size + 1) / shard)
        lines.append(("PPO critic", 3 * critic * MASTER_BYTES,
                      f"{critic * shard / 1e9:.2f}B params: fp32 weights + 2 AdamW moments{per}"))
        lines.append(("PPO critic gradients", critic * MASTER_BYTES, "fp32"))
        freed.append("PPO critic gradients")
    if fsdp:
        gathered = (layer_params(s) + root_params(s)) * b
        lines.append(("fsdp gathered units", gathered, f"one decoder layer + embeddings/LM head/final norm, whole, "
                                                       f"in {cfg.model.dtype}"))
    # between steps (Learner.release_memory): gradients dropped, the cache emptied, units resharded
    persistent = sum(n for name, n, _ in lines if name not in freed)
    tokens = micro_batch_tokens(cfg, prompt_tokens)
    per_layer = activation_bytes_per_token_layer(s, b)
    lines.append(("activations", tokens * activation_bytes_per_token(s, b),
                  f"{tokens} tokens/micro-batch x {s.num_layers} layers x ~{per_layer / 1024:.0f} KiB"))
    lines.append(("logit chunks", LOGIT_CHUNK_BUFFERS * LOGIT_CHUNK_BYTES, f"{LOGIT_CHUNK_BUFFERS} x 32 MiB fp32"))
    lines.append(("CUDA context", CUDA_CONTEXT_BYTES, "context and allocator slack"))
    return lines, persistent + CUDA_CONTEXT_BYTES


def kv_bytes_per_token(s: ModelShape, dtype_bytes: int, tensor_parallel_size: int) -> int:
    kv_heads_here = math.ceil(s.num_kv_heads / tensor_parallel_size)  # fewer heads than GPUs: replicated
    return 2 * s.num_layers * kv_heads_here * s.head_dim * dtype_bytes


def rollout_lines(cfg, s: ModelShape, gpu_memory_bytes: int, prompt_tokens: int) -> list[tuple[str, int, str]]:
    """One GPU of a rollout worker."""
    b = DTYPE_BYTES[cfg.model.dtype]
    r = cfg.rollout
    tp = r.tensor_parallel_size if r.engine == "vllm" else 1
    weights = math.ceil(count_params(s) / tp) * b
    per_token = kv_bytes_per_token(s, b, tp)
    split = f" / tp {tp}" if tp > 1 else ""
    weights_line = ("weights", weights, f"{count_params(s) / 1e9:.2f}B params x {b} B{split}")
    if r.engine == "vllm":
        share = int(r.gpu_memory_utilization * gpu_memory_bytes)
        kv = share - weights
        tokens = max(kv, 0) // per_token
        sequences = tokens // (prompt_tokens + r.max_tokens)
        how = (f"{r.gpu_memory_utilization:g} x {gpu_memory_bytes / GIB:g} GiB - weights: ~{tokens} tokens = "
               f"{sequences} answers of prompt+max_tokens")
        return [weights_line, ("KV cache", kv, how)]
    answers = math.ceil(cfg.trainer.prompts_per_step * r.n / r.num_workers)
    kv = answers * (prompt_tokens + r.max_tokens) * per_token
    how = f"{answers} answers decoded in one batch x {prompt_tokens + r.max_tokens} tokens"
    return [weights_line, ("KV cache", kv, how), ("CUDA context", CUDA_CONTEXT_BYTES, "context and allocator slack")]


def micro_batch_hint(cfg, s: ModelShape, llines, gpu_bytes: int, prompt_tokens: int) -> str:
    """When the learner's activations are what overflows: the learner.max_tokens_per_micro_batch that fits."""
    activations = next(n for name, n, _ in llines if name == "activations")
    learner_total = sum(n for _, n, _ in llines)
    if learner_total <= gpu_bytes or activations < learner_total / 2:
        return ""
    room = gpu_bytes - (learner_total - activations)
    fit = max(room, 0) // activation_bytes_per_token(s, DTYPE_BYTES[cfg.model.dtype])
    sequence = prompt_tokens + cfg.rollout.max_tokens
    if fit < sequence:
        return (f"; the activations of one answer of {sequence} tokens alone do not fit: lower rollout.max_tokens "
                f"(activation checkpointing is not implemented)")
    answers = fit // sequence
    return (f"; mostly activations of the worst-case micro-batch: learner.max_tokens_per_micro_batch="
            f"{answers * sequence} would fit ({answers} answer(s) of {sequence} tokens)")


def context_note(cfg, prompt_tokens: int) -> str:
    """vLLM's context as the trainer sizes it (rlcurr.rollout.context): the longest prompt (here
    --prompt-tokens) + the largest max_tokens, against the model's positions where known."""
    from rlcurr.rollout.context import largest_max_tokens, max_position_embeddings, model_len_needed

    max_tokens, setting = largest_max_tokens(cfg)
    needed = model_len_needed(prompt_tokens, max_tokens)
    if cfg.model.tiny is not None:
        positions = cfg.model.tiny.max_position_embeddings
    else:
        path = Path(cfg.model.path).expanduser()
        positions = max_position_embeddings(path) if (path / "config.json").is_file() else None
    known = (f"fits the model's {positions} positions" if positions and needed <= positions
             else f"EXCEEDS the model's {positions} positions: training refuses it" if positions
             else "the model's positions are not known here (no config.json): checked at training start")
    return (f"vLLM context (max_model_len): {prompt_tokens} prompt tokens (--prompt-tokens) + {max_tokens} "
            f"({setting}) = {needed}; {known}")


def estimate_memory(cfg, *, gpu_memory_gib: float = 80, prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
                    shape: ModelShape | None = None) -> MemoryEstimate:
    """Memory per GPU of the recipe's learner ranks and rollout workers (see the module docstring)."""
    s = shape or model_shape(cfg.model)
    gpu_bytes = int(gpu_memory_gib * GIB)
    res, r, learner = cfg.resources, cfg.rollout, cfg.learner
    llines, persistent = learner_lines(cfg, s, prompt_tokens)
    rlines = rollout_lines(cfg, s, gpu_bytes, prompt_tokens)
    params = count_params(s)
    trainable = lora_params(s, cfg.model.lora) if cfg.model.lora is not None else params
    notes = [f"model: {s.source}"]
    if r.engine == "vllm":
        notes.append(context_note(cfg, prompt_tokens))
    gpus = []
    if res.colocate:
        share = int(r.gpu_memory_utilization * gpu_bytes)
        learner_total = sum(n for _, n, _ in llines)
        generating = persistent + share
        g = GpuEstimate("shared GPU (rollout worker + learner rank)", r.num_workers,
                        [(f"learner: {name}", n, how) for name, n, how in llines]
                        + [(f"vLLM: {name}", n, how) for name, n, how in rlines])
        g.lines += [("while generating", generating,
                     "learner weights + optimizer state (gradients freed) + vLLM's share"),
                    ("during learner step", learner_total, "the whole learner; vLLM asleep (weights on CPU, no KV)")]
        g.total_bytes = max(generating, learner_total)
        gpus.append(g)
        notes.append("colocated: vLLM sleeps during the learner step, so the peak is the larger phase, not the sum")
    else:
        tp_gpus = r.tensor_parallel_size if r.engine == "vllm" else 1
        gpus.append(GpuEstimate(f"rollout worker GPU ({r.engine}, tp {tp_gpus})", r.num_workers * tp_gpus, rlines))
        gpus.append(GpuEstimate(f"learner rank GPU ({learner.strategy})", learner.num_workers, llines))
        for g in gpus:
            g.total_bytes = sum(n for _, n, _ in g.lines)
    for g in gpus:
        if g.total_bytes > gpu_bytes:
            hint = micro_batch_hint(cfg, s, llines, gpu_bytes, prompt_tokens)
            g.warnings.append(f"{g.kind}: ~{g.total_bytes / GIB:.1f} GiB estimated, more than the "
                              f"{gpu_memory_gib:g} GiB GPU{hint}")
        for name, n, _ in g.lines:
            if name.endswith("KV cache") and r.engine == "vllm" and n <= 0:
                g.warnings.append(f"{g.kind}: rollout.gpu_memory_utilization {r.gpu_memory_utilization:g} x "
                                  f"{gpu_memory_gib:g} GiB leaves no room for vLLM's KV cache after the weights")
    return MemoryEstimate(params, trainable, s, gpu_bytes, gpus, notes)


# ---------------------------------------------------------------- placement


@dataclass
class ActorRow:
    actor: str
    role: str  # rollout | learner
    engine: str  # vllm / hf for rollout workers, ddp / fsdp for learner ranks
    tensor_parallel_size: int | None
    gpus: float
    bundle: int | None
    cpus: float
    node: str | None = None
    gpu_ids: list | None = None


@dataclass
class PlacementPlan:
    rows: list[ActorRow]
    cluster_gpus: float
    gpus_used: float
    learner_strategy: str
    learner_ranks: int
    colocate: bool
    on_cpu: bool
    bundles: list[dict] = field(default_factory=list)


def placement_arguments(cfg) -> dict:
    """The arguments `Trainer.start` gives `placement` / `placement_bundles`."""
    r, res = cfg.rollout, cfg.resources
    return dict(num_rollout=r.num_workers, num_learner=cfg.learner.num_workers, colocate=res.colocate,
                gpus_per_rollout_worker=res.gpus_per_rollout_worker or r.tensor_parallel_size,
                gpus_per_learner_worker=res.gpus_per_learner_worker, tensor_parallel_size=r.tensor_parallel_size)


def gpus_needed(cfg) -> int:
    """GPUs the recipe's placement group holds (rollout bundles + learner bundles, or shared)."""
    from rlcurr.rollout.pool import placement_bundles

    return int(sum(b["GPU"] for b in placement_bundles(**placement_arguments(cfg))["bundles"]))


def asks_for_gpus(cfg) -> bool:
    """A recipe written for GPUs: it sets a `resources` field (GPUs per worker, colocation)."""
    return bool(cfg.resources.model_fields_set)


def default_gpus(cfg) -> tuple[int | None, str | None]:
    """--gpus when none was given: on a machine without GPUs (and no RAY_ADDRESS), a recipe that
    asks for GPUs is planned on a pretend node with the GPUs it needs; else Ray's detection."""
    if os.environ.get("RAY_ADDRESS") or not asks_for_gpus(cfg):
        return None, None
    import torch

    if torch.cuda.is_available():
        return None, None
    n = gpus_needed(cfg)
    return n, (f"no GPU on this machine: planned on a pretend node with the {n} GPUs the recipe needs "
               f"(--gpus N for another node, --gpus 0 for CPU)")


def check_gpus_fit(cfg, cluster_gpus: float, node_gpus: list[float]) -> None:
    """One UserError naming the fields when the recipe's bundles cannot fit the cluster's GPUs."""
    from rlcurr.rollout.pool import placement_bundles

    plan = placement_bundles(**placement_arguments(cfg))
    needed = sum(b["GPU"] for b in plan["bundles"])
    r, res, learner = cfg.rollout, cfg.resources, cfg.learner
    if res.colocate:
        how = (f"resources.colocate: rollout.num_workers ({r.num_workers}) GPUs, each shared with one of "
               f"learner.num_workers ({learner.num_workers})")
    else:
        rollout_gpus = res.gpus_per_rollout_worker or r.tensor_parallel_size
        field_name = ("resources.gpus_per_rollout_worker" if res.gpus_per_rollout_worker
                      else "rollout.tensor_parallel_size")
        how = (f"rollout.num_workers ({r.num_workers}) x {field_name} ({rollout_gpus}) + learner.num_workers "
               f"({learner.num_workers}) x resources.gpus_per_learner_worker ({res.gpus_per_learner_worker})")
    if needed > cluster_gpus:
        raise UserError(f"the recipe needs {needed:g} GPUs = {how}, the Ray cluster has {cluster_gpus:g}; "
                        f"lower those fields, or plan for a bigger node with --gpus {needed:g}")
    biggest = max(b["GPU"] for b in plan["bundles"])
    if node_gpus and biggest > max(node_gpus):
        raise UserError(f"one worker needs {biggest:g} GPUs on one node ({how}); the largest node has "
                        f"{max(node_gpus):g}")


def _probe_resources():
    """Runs where an actor with the same options would: its node and Ray's GPU ids for it."""
    import ray

    return ray.get_runtime_context().get_node_id(), [str(i) for i in ray.get_gpu_ids()]


def plan_placement(cfg, ready_timeout_s: float = 60, probe_timeout_s: float = 120) -> PlacementPlan:
    """Create the trainer's placement group on the connected Ray cluster, read it back, remove it."""
    import ray
    from ray.util.placement_group import placement_group_table, remove_placement_group

    from rlcurr.rollout.pool import placement

    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    node_gpus = [n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")]
    r, learner = cfg.rollout, cfg.learner
    tp = r.tensor_parallel_size if r.engine == "vllm" else None
    if cluster_gpus:
        check_gpus_fit(cfg, cluster_gpus, node_gpus)
    try:
        placed = placement(**placement_arguments(cfg), ready_timeout_s=ready_timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"Ray could not place the recipe's GPUs within {ready_timeout_s:g} s although the cluster "
                        f"has {cluster_gpus:g}: they are in use, or spread over nodes so a worker does not fit one "
                        f"(placement group removed)") from None
    rows = [ActorRow(f"rollout worker {i}", "rollout", r.engine, tp, 0, None, 0) for i in range(r.num_workers)]
    rows += [ActorRow(f"learner rank {j}", "learner", learner.strategy, None, 0, None, 0)
             for j in range(learner.num_workers)]
    options = placed.rollout + placed.learner
    bundles: list[dict] = []
    try:
        if placed.group is not None:
            bundles = [dict(b) for b in placed.group.bundle_specs]
            table = placement_group_table(placed.group)
            to_node = table.get("bundles_to_node_id", {})
            probe = ray.remote(num_cpus=0)(_probe_resources)
            futures = [probe.options(**opts).remote() for opts in options]
            found = ray.get(futures, timeout=probe_timeout_s)
            for row, opts, (node, gpu_ids) in zip(rows, options, found):
                strategy = opts["scheduling_strategy"]
                row.bundle = strategy.placement_group_bundle_index
                row.gpus = opts["num_gpus"]
                row.cpus = bundles[row.bundle].get("CPU", 0)
                row.node = to_node.get(row.bundle, node)
                row.gpu_ids = gpu_ids
    finally:
        if placed.group is not None:
            remove_placement_group(placed.group)
    return PlacementPlan(rows, cluster_gpus, sum(b.get("GPU", 0) for b in bundles), learner.strategy,
                         learner.num_workers, cfg.resources.colocate, placed.group is None, bundles)


def start_ray(gpus: int | None) -> bool:
    """Connect to RAY_ADDRESS, or start a private local Ray with `gpus` GPUs. True if started here."""
    import ray

    if ray.is_initialized():
        if gpus is not None:
            raise UserError("--gpus pretends a local Ray node; Ray is already running in this process")
        return False
    address = os.environ.get("RAY_ADDRESS")
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address:
        if gpus is not None:
            raise UserError(f"--gpus pretends a local Ray node; RAY_ADDRESS={address} plans on that cluster instead "
                            f"(unset RAY_ADDRESS to pretend)")
        ray.init(address=address, **quiet)
    else:
        # address="local": a new Ray of our own, never another session's cluster found on this machine
        ray.init(address="local", num_gpus=gpus, num_cpus=os.cpu_count() or 1,
                 object_store_memory=80 * 2**20, **quiet)
    return True


# ---------------------------------------------------------------- printing


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def format_placement(p: PlacementPlan) -> list[str]:
    out = ["placement:"]
    if p.on_cpu:
        out.append("  no GPUs in the Ray cluster: everything runs on CPU, placement is a no-op "
                   "(actors take num_cpus=0 and run wherever Ray starts them)")
    header = f"  {'actor':<18} {'engine':<7} {'tp':>3} {'GPUs':>5} {'bundle':>6} {'CPUs':>4}  GPU ids  node"
    out.append(header)
    for row in p.rows:
        tp = "-" if row.tensor_parallel_size is None else str(row.tensor_parallel_size)
        bundle = "-" if row.bundle is None else str(row.bundle)
        ids = ",".join(row.gpu_ids) if row.gpu_ids else "-"
        node = (row.node or "-")[:8]
        out.append(f"  {row.actor:<18} {row.engine:<7} {tp:>3} {row.gpus:>5g} {bundle:>6} {row.cpus:>4g}  "
                   f"{ids:<7}  {node}")
    out.append(f"  learner: {p.learner_strategy} over {p.learner_ranks} rank(s)")
    if not p.on_cpu:
        shared = " (each GPU shared by a rollout worker and a learner rank, 0.5 each)" if p.colocate else ""
        out.append(f"  GPUs used: {p.gpus_used:g} of {p.cluster_gpus:g} in the cluster, "
                   f"{len(p.bundles)} bundles in one PACK placement group{shared}")
    return out


def format_memory(m: MemoryEstimate, on_cpu: bool = False) -> list[str]:
    out = [f"memory per GPU (estimate, GiB of a {m.gpu_memory_bytes / GIB:g} GiB GPU; assumptions: rlcurr/plan.py"
           f"{'; for a run on GPUs' if on_cpu else ''}):"]
    out += [f"  {note}" for note in m.notes]
    out.append(f"  parameters: {m.params / 1e9:.3f}B, trainable {m.trainable_params / 1e9:.3f}B")
    for g in m.gpus:
        out.append(f"  {g.kind} x {g.count}:")
        for name, n, how in g.lines:
            out.append(f"    {name:<28} {_gib(n):>7}  {how}")
        out.append(f"    {'total':<28} {_gib(g.total_bytes):>7}")
    out += [f"warning: {w}" for w in m.warnings]
    return out


def plan_to_json(p: PlacementPlan, m: MemoryEstimate) -> dict:
    return {"placement": {**asdict(p)},
            "memory": {"params": m.params, "trainable_params": m.trainable_params, "shape": asdict(m.shape),
                       "gpu_memory_bytes": m.gpu_memory_bytes, "notes": m.notes, "warnings": m.warnings,
                       "gpus": [{"kind": g.kind, "count": g.count, "total_bytes": g.total_bytes,
                                 "lines": [{"what": a, "bytes": n, "how": h} for a, n, h in g.lines]}
                                for g in m.gpus]}}


# ---------------------------------------------------------------- command


def cmd_plan(args) -> None:
    from rlcurr.config import load_config

    cfg = load_config(args.recipe, args.overrides)
    if args.gpus is not None and args.gpus < 0:
        raise UserError(f"--gpus must be >= 0 (got {args.gpus})")
    memory = estimate_memory(cfg, gpu_memory_gib=args.gpu_memory_gib, prompt_tokens=args.prompt_tokens)
    gpus, pretend_note = (args.gpus, None) if args.gpus is not None else default_gpus(cfg)
    if gpus and not os.environ.get("RAY_ADDRESS"):
        check_gpus_fit(cfg, gpus, [gpus])  # before starting Ray: a local node of --gpus GPUs
    import ray

    started = start_ray(gpus)
    try:
        placed = plan_placement(cfg)
    finally:
        if started:
            ray.shutdown()
    if args.json:
        print(json.dumps(plan_to_json(placed, memory), indent=1))
        return
    print(f"plan for {cfg.name} ({args.recipe}): nothing started, nothing written")
    if pretend_note:
        print(pretend_note)
    print("\n".join(format_placement(placed)))
    print("\n".join(format_memory(memory, on_cpu=placed.on_cpu)))


def add_plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="show a recipe's Ray placement and per-GPU memory estimate, without training")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. rollout.num_workers=2 learner.num_workers=2")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs the local Ray pretends to have (default: detected; on a machine without GPUs, "
                        "what a recipe that sets resources.* needs; not with RAY_ADDRESS)")
    p.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU (default 80)")
    p.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS,
                   help=f"prompt length assumed for the memory estimate (default {DEFAULT_PROMPT_TOKENS})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_plan)
