"""Turn variable-length (prompt, response) pairs into response-aligned tensors.

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


def response_mask(response_lens: list[int], T: int) -> torch.Tensor:
    return (torch.arange(T)[None, :] < torch.tensor(response_lens)[:, None]).to(torch.float32)


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
