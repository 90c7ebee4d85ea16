"""Turn variable-length (prompt, response) pairs into response-aligned tensors, and score answers.

Every per-token quantity the learner handles (current, old, reference and rollout logprobs,
entropy, masks) is laid out [B, T] with T = the longest response in the batch and t = 0 the
first response token. That makes a hinted answer (old logprobs computed on the prompt with the
hint) line up token for token with the same answer under the hint-free prompt.
"""

from __future__ import annotations

import torch


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids_BL = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(seqs), L), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids_BL[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask_BL[b, : len(s)] = 1
    return ids_BL, mask_BL


def pad_lists(rows: list[list[float]], T: int, dtype=torch.float32) -> torch.Tensor:
    out_BT = torch.zeros((len(rows), T), dtype=dtype)
    for b, r in enumerate(rows):
        out_BT[b, : len(r)] = torch.tensor(r[:T], dtype=dtype)
    return out_BT


def response_mask(response_lens: list[int], T: int, tool_masks: list[list[bool] | None] | None = None) -> torch.Tensor:
    """1.0 at each row's answer tokens, [B, T]; with `tool_masks`, 0.0 also at tool-output tokens
    (multi-turn answers: what a tool wrote is context, never trained on or compared)."""
    mask_BT = (torch.arange(T)[None, :] < torch.tensor(response_lens)[:, None]).to(torch.float32)
    for b, tool in enumerate(tool_masks or ()):
        if tool is not None:
            mask_BT[b, : len(tool)] *= 1.0 - torch.tensor(tool[:T], dtype=torch.float32)
    return mask_BT


def policy_mask(samples, T: int) -> torch.Tensor:
    """`response_mask` of TrainSamples: the tokens the policy generated, [B, T]."""
    return response_mask([len(s.response_ids) for s in samples], T, [s.tool_mask for s in samples])


def policy_tokens(sample) -> int:
    """How many of a TrainSample's answer tokens the policy generated (the loss's token count)."""
    return len(sample.response_ids) - sum(sample.tool_mask or ())


def response_logits(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]],
                    pad_id: int) -> torch.Tensor:
    """Logits that predict each response token, [B, T, V], response-aligned."""
    device = next(model.parameters()).device
    ids_BL, mask_BL = right_pad([p + r for p, r in zip(prompts, responses)], pad_id)
    logits_BLV = model(input_ids=ids_BL.to(device), attention_mask=mask_BL.to(device), use_cache=False).logits
    T = max(len(r) for r in responses)
    start_B = torch.tensor([len(p) - 1 for p in prompts])  # the position whose logits predict response[0]
    idx_BT = (start_B[:, None] + torch.arange(T)[None, :]).clamp(max=ids_BL.shape[1] - 1).to(device)
    return logits_BLV.gather(1, idx_BT[..., None].expand(-1, -1, logits_BLV.shape[-1]))


def token_logprobs(logits_BTV: torch.Tensor, responses: list[list[int]], pad_id: int) -> torch.Tensor:
    T = logits_BTV.shape[1]
    targets_BT, _ = right_pad([r + [pad_id] * (T - len(r)) for r in responses], pad_id)
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    return logp_BTV.gather(-1, targets_BT.to(logits_BTV.device)[..., None])[..., 0]


# ---------------------------------------------------------------------------------------------
# Memory-lean scoring: the learner's path (the two functions above remain for SFT and tests).
#
# Variant: hidden states of the whole (prompt + answer) sequence, then the output head only at
# the answer positions, and logprobs as logit[target] - logsumexp(logits) in chunks of tokens
# (TRL's selective_log_softmax, Liger's chunked head). With gradients on, each chunk is
# recomputed in the backward pass (activation checkpointing), so fp32 [tokens, V] logits exist
# one chunk at a time, never whole.
#
# Layout of the tokens through the model, the first that applies:
# 1. Shared prompts (`shared_prefix_inputs`; transformers' own classes with sdpa or eager
#    attention): the answers to one prompt (a GRPO group) follow ONE copy of it in a row, each
#    answer attending to the prompt and to itself only (a custom 4D mask; positions continue
#    from the prompt's length), so a group of G answers costs prompt + G answers tokens instead
#    of G x (prompt + answer). Logprobs and gradients are those of separate sequences (the
#    prompt's activations receive the sum of the G answers' gradients). Such segments share rows
#    of up to about PACK_ROW_TOKENS like packed sequences. Prefix sharing in the style of
#    Prefix Grouper (Liu et al. 2025), without its fused kernel: the mask is dense.
# 2. Packed (flash attention, where a custom mask is not accepted): sequences share rows of up
#    to about PACK_ROW_TOKENS (or the longest sequence; first-fit decreasing), each attending
#    only to itself (position ids restart at 0; transformers builds the block-diagonal causal
#    mask), so short answers next to a long one cost their own tokens, not the long one's.
# 3. Padded: a checkpoint's remote code, or when packing would not save tokens.
# Left out: a fused Triton kernel, varlen flash attention for layouts 1 and 2.

LOGIT_CHUNK_ELEMENTS = 2**23  # fp32 logits per chunk: 32 MiB (~55 answer tokens at V = 152k)
# Rows are filled up to this many tokens (or the longest sequence, if longer). The packed mask is
# dense, so attention costs 4 x row length x hidden per token: at 256 tokens and hidden 512 that is
# ~4 % of a layer's matmuls, while short answers stop paying for the longest one's padding.
PACK_ROW_TOKENS = 256


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face causal LM inside a peft wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def from_transformers(model: torch.nn.Module) -> bool:
    """Whether the causal LM's class is one of transformers' own (whose packed-sequence and 4D
    masks the layouts rely on), looking through peft's wrapper and FSDP2's: `fully_shard` swaps
    the class for a generated `FSDP<Name>` subclass that lives in torch's module."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(unwrap(model)).__mro__ if not issubclass(c, FSDPModule))
    return cls.__module__.startswith("transformers.")


def answer_hidden(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]],
                  pad_id: int) -> torch.Tensor:
    """Final hidden states (after the last norm) at the positions that predict each answer token,
    packed answer after answer: [N, H], N = total answer tokens.

    The model is called whole (so peft and FSDP hooks run) with logits_to_keep=1 (its own head
    then costs one position); the body's output is captured by a forward hook.
    """
    device = next(model.parameters()).device
    ids_RL, inputs, rows_N, cols_N = model_inputs(model, prompts, responses, pad_id)
    captured: list[torch.Tensor] = []
    body = unwrap(model).get_decoder()
    hook = body.register_forward_hook(lambda _m, _in, out: captured.append(out.last_hidden_state))
    try:
        model(input_ids=ids_RL.to(device), use_cache=False, logits_to_keep=1,
              **{k: v.to(device) for k, v in inputs.items()})
    finally:
        hook.remove()
    return captured[0][rows_N.to(device), cols_N.to(device)]


def model_inputs(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    """Token ids [R, L], the other model inputs (mask or position ids), and the (row, column) of
    the position that predicts each answer token, [N] each: layout 1, 2 or 3 above."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    capacity = max(PACK_ROW_TOKENS, max(map(len, seqs)))
    if shared_prefix_ok(model, capacity):
        segments = prompt_segments(prompts, responses, capacity)
        rows = best_packing(segment_lengths(prompts, responses, segments)) or [[k] for k in range(len(segments))]
        ids_RL, position_RL, allowed_RLL, rows_N, cols_N = shared_prefix_inputs(prompts, responses, segments, rows,
                                                                                 pad_id)
        return ids_RL, {"position_ids": position_RL, "attention_mask": attention_mask_4d(model, allowed_RLL)}, \
            rows_N, cols_N
    packed = best_packing([len(s) for s in seqs])
    # packed-sequence masks come from transformers' own model code; a checkpoint's remote code may not have them
    if packed is not None and from_transformers(model):
        ids_RL, position_RL, starts = packed_inputs(seqs, packed, pad_id)
        inputs = {"position_ids": position_RL}  # no attention mask: sequences from positions
    else:
        ids_RL, mask_RL = right_pad(seqs, pad_id)
        starts = [(b, 0) for b in range(len(seqs))]
        inputs = {"attention_mask": mask_RL}
    rows_N = torch.cat([torch.full((len(r),), starts[b][0], dtype=torch.long) for b, r in enumerate(responses)])
    # the position whose output predicts response[t] is len(prompt) - 1 + t into its sequence
    cols_N = torch.cat([torch.arange(len(r)) + starts[b][1] + len(p) - 1
                        for b, (p, r) in enumerate(zip(prompts, responses))])
    return ids_RL, inputs, rows_N, cols_N


def shared_prefix_ok(model: torch.nn.Module, longest_row: int) -> bool:
    """Whether the model takes layout 1's custom 4D mask as given: transformers' own classes pass
    a 4D mask through untouched to sdpa and eager attention (flash attention takes none), and a
    sliding or chunked attention window must cover the longest row, since the custom mask
    replaces the window's."""
    inner = unwrap(model)
    if not from_transformers(model):
        return False
    if getattr(inner.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    text = inner.config.get_text_config()
    windows = [getattr(text, "attention_chunk_size", None)]
    if getattr(text, "use_sliding_window", True):
        windows.append(getattr(text, "sliding_window", None))
    return all(w is None or w >= longest_row for w in windows)


def prompt_segments(prompts: list[list[int]], responses: list[list[int]], capacity: int) -> list[list[int]]:
    """Answers grouped by identical prompt tokens (first-seen order): each segment is one prompt
    and answers that follow it, at most `capacity` tokens together; an answer that does not fit
    starts a new segment (with its own copy of the prompt)."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(tuple(p), []).append(i)
    segments: list[list[int]] = []
    for members in by_prompt.values():
        used = capacity  # forces a new segment for the first answer
        for i in members:
            if used + len(responses[i]) > capacity:
                segments.append([])
                used = len(prompts[i])
            segments[-1].append(i)
            used += len(responses[i])
    return segments


def segment_lengths(prompts: list[list[int]], responses: list[list[int]], segments: list[list[int]]) -> list[int]:
    """Tokens of each segment: its prompt once, plus its answers."""
    return [len(prompts[seg[0]]) + sum(len(responses[i]) for i in seg) for seg in segments]


def shared_prefix_inputs(prompts: list[list[int]], responses: list[list[int]], segments: list[list[int]],
                         rows: list[list[int]], pad_id: int):
    """Layout 1: each row holds segments (indices into `segments`) back to back; a segment is its
    prompt once, then its answers. Returns token ids and position ids [R, L], where each token may
    attend, allowed_RLL [R, L, L] (same segment, not later, and a prompt token or the same answer;
    a row's unused tail attends to itself only), and the (row, column) predicting each answer token.

    Example, prompt [p0 p1] with answers [a0 a1] and [b0]: ids p0 p1 a0 a1 b0, positions
    0 1 2 3 2; b0 attends to p0 p1 b0; a0 is predicted by p1's output, a1 by a0's, b0 by p1's."""
    lengths = segment_lengths(prompts, responses, segments)
    L = max(sum(lengths[k] for k in row) for row in rows)
    ids_RL = torch.full((len(rows), L), pad_id, dtype=torch.long)
    position_RL = torch.zeros((len(rows), L), dtype=torch.long)
    segment_RL = -1 - torch.arange(L).repeat(len(rows), 1)  # unused tail: a segment of its own per token
    answer_RL = torch.full((len(rows), L), -1, dtype=torch.long)  # -1: a prompt token (or the tail)
    predict: list[tuple[int, list[int]]] = [(0, [])] * len(prompts)
    for r, row in enumerate(rows):
        at = 0
        for k in row:
            prompt = prompts[segments[k][0]]
            ids_RL[r, at : at + len(prompt)] = torch.tensor(prompt, dtype=torch.long)
            position_RL[r, at : at + len(prompt)] = torch.arange(len(prompt))
            segment_RL[r, at : at + lengths[k]] = k
            last_prompt, at = at + len(prompt) - 1, at + len(prompt)
            for i in segments[k]:
                n = len(responses[i])
                ids_RL[r, at : at + n] = torch.tensor(responses[i], dtype=torch.long)
                position_RL[r, at : at + n] = torch.arange(len(prompt), len(prompt) + n)
                answer_RL[r, at : at + n] = i
                predict[i] = (r, ([last_prompt] + list(range(at, at + n - 1)))[:n])
                at += n
    causal_LL = torch.ones(L, L, dtype=torch.bool).tril()
    same_segment = segment_RL[:, :, None] == segment_RL[:, None, :]
    visible = (answer_RL[:, None, :] == -1) | (answer_RL[:, :, None] == answer_RL[:, None, :])
    allowed_RLL = same_segment & visible & causal_LL
    rows_N = torch.tensor([r for r, cols in predict for _ in cols], dtype=torch.long)
    cols_N = torch.tensor([c for _, cols in predict for c in cols], dtype=torch.long)
    return ids_RL, position_RL, allowed_RLL, rows_N, cols_N


def attention_mask_4d(model: torch.nn.Module, allowed_RLL: torch.Tensor) -> torch.Tensor:
    """[R, 1, L, L] as the attention implementation takes it: sdpa a boolean (True = attend),
    eager an additive float (0 or the float32 minimum; eager adds it to the scores)."""
    if unwrap(model).config._attn_implementation == "sdpa":
        return allowed_RLL[:, None]
    return torch.zeros(allowed_RLL.shape, dtype=torch.float32).masked_fill_(
        ~allowed_RLL, torch.finfo(torch.float32).min)[:, None]


def best_packing(lengths: list[int]) -> list[list[int]] | None:
    """The rows (`pack_rows`) that put the fewest tokens through the model, rows x longest row,
    over three capacities: the longest sequence, PACK_ROW_TOKENS, and the total split evenly over
    ceil(total / PACK_ROW_TOKENS) rows; None when none beats padding (answers x longest)."""
    longest, total = max(lengths), sum(lengths)
    even = -(-total // -(-total // PACK_ROW_TOKENS))
    best, best_cost = None, len(lengths) * longest
    for capacity in sorted({longest, max(longest, PACK_ROW_TOKENS), max(longest, even)}):
        rows = pack_rows(lengths, capacity)
        cost = len(rows) * max(sum(lengths[i] for i in row) for row in rows)
        if cost < best_cost:
            best, best_cost = rows, cost
    return best


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sequence indices grouped into rows of at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if r is None:
            rows.append([])
            room.append(capacity)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


def packed_inputs(seqs: list[list[int]], rows: list[list[int]], pad_id: int):
    """Token ids [R, L] with the sequences of each row back to back, their position ids (each
    sequence counts from 0, so the model's mask keeps every sequence to itself: transformers'
    packed-sequence attention when no attention mask is given), and (row, offset) per sequence.
    A row's unused tail is one more dummy sequence (positions from 0), never read."""
    L = max(sum(len(seqs[i]) for i in row) for row in rows)
    ids_RL = torch.full((len(rows), L), pad_id, dtype=torch.long)
    position_RL = torch.zeros((len(rows), L), dtype=torch.long)
    starts: list[tuple[int, int]] = [(0, 0)] * len(seqs)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            n = len(seqs[i])
            ids_RL[r, offset : offset + n] = torch.tensor(seqs[i], dtype=torch.long)
            position_RL[r, offset : offset + n] = torch.arange(n)
            starts[i] = (r, offset)
            offset += n
        position_RL[r, offset:] = torch.arange(L - offset)
    return ids_RL, position_RL, starts


def _chunk_scores(h_CH: torch.Tensor, head: torch.nn.Module, targets_C: torch.Tensor,
                  temperature: float, entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # The head module is called (not its .weight used), so a LoRA adapter on lm_head applies.
    # In-place where autograd allows (linear's backward needs its inputs, not its output): the
    # fp32 [C, V] temporaries are this chunk's peak.
    logits_CV = head(h_CH).float()
    if temperature != 1.0:
        logits_CV = logits_CV.div_(temperature)
    lse_C = torch.logsumexp(logits_CV, dim=-1)
    logprobs_C = logits_CV.gather(-1, targets_C[:, None])[:, 0] - lse_C
    if entropy_grad and torch.is_grad_enabled():  # H = lse - sum_v p_v * logit_v, differentiable
        entropy_C = lse_C - (torch.softmax(logits_CV, dim=-1) * logits_CV).sum(-1)
    else:
        with torch.no_grad():  # a by-product: one [C, V] temporary
            p_CV = (logits_CV - lse_C[:, None]).exp_()
            entropy_C = lse_C - p_CV.mul_(logits_CV).sum(-1)
    return logprobs_C, entropy_C


def selective_logprobs(hidden_NH: torch.Tensor, head: torch.nn.Module, targets_N: torch.Tensor,
                       temperature: float = 1.0, entropy_grad: bool = False,
                       chunk_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(head(h) / temperature)[target] and the entropy of that distribution, per token,
    [N] each, in chunks of tokens. The entropy carries a gradient only if `entropy_grad`
    (entropy bonus on); otherwise it is a detached by-product of the same chunk (for D3S and
    the metric). Temperature 0 (greedy) scores at 1."""
    temperature = temperature if temperature and temperature > 0 else 1.0
    vocab = head.weight.shape[0] if hasattr(head, "weight") else head.out_features
    chunk = chunk_tokens or max(1, LOGIT_CHUNK_ELEMENTS // vocab)
    targets_N = targets_N.to(hidden_NH.device)
    lps, ents = [], []
    for s in range(0, hidden_NH.shape[0], chunk):
        args = (hidden_NH[s : s + chunk], head, targets_N[s : s + chunk], temperature, entropy_grad)
        if torch.is_grad_enabled() and hidden_NH.requires_grad:
            # recompute this chunk's logits in the backward pass instead of keeping them
            lp, ent = torch.utils.checkpoint.checkpoint(_chunk_scores, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_scores(*args)
        lps.append(lp)
        ents.append(ent)
    if not lps:
        empty = hidden_NH.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(lps), torch.cat(ents)


def answer_scores(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]], pad_id: int,
                  temperature: float = 1.0, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprobs and entropies of the answers under `model` at `temperature`, each
    response-aligned [B, T] (T = longest answer, padding 0)."""
    hidden_NH = answer_hidden(model, prompts, responses, pad_id)
    targets_N = torch.tensor([t for r in responses for t in r], dtype=torch.long)
    lp_N, ent_N = selective_logprobs(hidden_NH, unwrap(model).get_output_embeddings(), targets_N, temperature,
                                     entropy_grad)
    lens = [len(r) for r in responses]
    return unpack(lp_N, lens), unpack(ent_N, lens)


def unpack(values_N: torch.Tensor, lens: list[int]) -> torch.Tensor:
    """Packed per-token values [N] -> [B, T] response-aligned, zero-padded (differentiable)."""
    T = max(lens)
    mask_BT = response_mask(lens, T).bool().to(values_N.device)
    out_BT = values_N.new_zeros(len(lens), T)
    return out_BT.masked_scatter(mask_BT, values_N)


def cut_by_tokens(lengths: list[int], max_answers: int, max_tokens: int | None) -> list[list[int]]:
    """Contiguous groups of positions into `lengths` (each a prompt+answer length) with at most
    `max_answers` answers and, if `max_tokens`, at most that many padded tokens (answers x the
    longest sequence: what one forward allocates). An answer longer than the cap goes alone."""
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        fits = len(cur) < max_answers and (max_tokens is None or (len(cur) + 1) * max(longest, n) <= max_tokens)
        if cur and not fits:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    return out
