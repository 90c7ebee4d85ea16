"""`rlcurr plan`'s memory per GPU: an ESTIMATE, from the parameter count (rlcurr.plan.shape) and the
recipe, in GiB (2**30 bytes). See docs/scaling.md.

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

Reward actors (model rewards: `reward_model`, `judge`, rlcurr.rewards.model_rewards), per actor:
  - weights: the parameter count from the model directory's config.json (`params.path`; with
    `params.build`, the tiny demonstration model's shape) x the reward's dtype bytes (frozen, no
    optimizer state); a classifier's head adds num_labels x hidden;
  - judge: + a KV cache for its share of a step's answers (prompts_per_step x rollout.n /
    num_actors) at prompt + rollout.max_tokens + the judge's max_tokens, as the HF rollout engine;
  - + the CUDA context when the actor takes a GPU (num_gpus > 0); count 0 on CPU.
The judge's rendered template is assumed as long as the prompt + answer (its own text is left out).

Left out: the driver process, eval batches, vLLM's CUDA graphs and activation reserve, memory
fragmentation, the NCCL buffers, host (CPU) memory, multi-node tensor parallelism, and any
architecture other than Qwen2 / Llama decoders (MoE, sliding windows are counted as dense).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from rlcurr.plan.shape import ModelShape, count_params, layer_params, lora_params, model_shape, root_params

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4  # peft keeps LoRA adapter weights in fp32 (autocast_adapter_dtype) even on a bf16 model
MASTER_BYTES = 4  # trained weights, their gradients and AdamW moments are fp32 (rlcurr.learner.precision)
CUDA_CONTEXT_BYTES = GIB // 2
LOGIT_CHUNK_BYTES = 2**23 * 4  # rlcurr.learner.batching.LOGIT_CHUNK_ELEMENTS fp32 logits
LOGIT_CHUNK_BUFFERS = 4
DEFAULT_PROMPT_TOKENS = 512


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
    rewards, reward_notes = reward_estimates(cfg, prompt_tokens)  # model rewards' actors
    gpus += rewards
    notes += reward_notes
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


def reward_shape(spec) -> tuple[ModelShape | None, str]:
    """The shape of a model reward's model (None, why not when it cannot be read without building)."""
    import json

    from rlcurr.plan.shape import TINY_VOCAB_SIZE, shape_from_hf_config

    p = spec.params
    if p.get("path") is not None:
        config = Path(str(p["path"])).expanduser() / "config.json"
        if not config.is_file():
            return None, f"{spec.name}: {config} not found"
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return None, f"{spec.name}: {config}: {e}"
        return shape_from_hf_config(data, str(config)), str(config)
    if p.get("build"):
        from rlcurr.rewards.tiny_scorers import build_spec

        b = build_spec(p["build"], spec.name)
        return ModelShape(hidden_size=b["hidden_size"], num_layers=b["num_layers"],
                          intermediate_size=b["intermediate_size"], vocab_size=TINY_VOCAB_SIZE,
                          num_heads=b["num_heads"], num_kv_heads=b["num_heads"],
                          head_dim=b["hidden_size"] // b["num_heads"], tie_word_embeddings=True, qkv_bias=True,
                          source="params.build (tiny demonstration model)"), "params.build"
    return None, f"{spec.name}: no params.path"


def reward_estimates(cfg, prompt_tokens: int) -> tuple[list[GpuEstimate], list[str]]:
    """One GpuEstimate per model reward of the recipe (see the module docstring), and notes."""
    from rlcurr.plan.placement import MODEL_REWARDS

    out, notes = [], []
    for spec in cfg.rewards or []:
        if spec.name not in MODEL_REWARDS:
            continue
        p = spec.params
        s, source = reward_shape(spec)
        if s is None:
            notes.append(f"reward actor memory not estimated: {source}")
            continue
        b = DTYPE_BYTES.get(str(p.get("dtype", "float32")), 4)
        actors, gpus = int(p.get("num_actors", 1)), float(p.get("num_gpus", 0))
        params = count_params(s) + (s.hidden_size * int(p.get("num_labels", 2)) if spec.name == "reward_model" else 0)
        lines = [("weights", params * b, f"{params / 1e6:.2f}M params x {b} B (frozen; {source})")]
        if spec.name == "judge":
            answers = math.ceil(cfg.trainer.prompts_per_step * cfg.rollout.n / actors)
            tokens = prompt_tokens + cfg.rollout.max_tokens + int(p.get("max_tokens", 8))
            lines.append(("KV cache", answers * tokens * kv_bytes_per_token(s, b, 1),
                          f"{answers} judgements decoded in one batch x {tokens} tokens"))
        if gpus > 0:
            lines.append(("CUDA context", CUDA_CONTEXT_BYTES, "context and allocator slack"))
        where = f"{gpus:g} GPU" if gpus > 0 else f"CPU, {float(p.get('num_cpus', 1)):g} cores"
        g = GpuEstimate(f"reward actor ({spec.name}, {where})", actors if gpus > 0 else 0, lines)
        g.total_bytes = sum(n for _, n, _ in lines)
        out.append(g)
    return out, notes
