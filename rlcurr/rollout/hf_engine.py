"""A transformers generation engine: batched sampling with a KV cache, written out plainly.

Why not `model.generate`: we need the exact sampling logprobs (after temperature/top-p), a
per-request max_tokens, per-request seeds and stop strings, and this loop is short.

The variant here (one batch of B rows; a request with n answers is n rows):
- Shared prefill: each distinct prompt is prefilled once (left-padded to the longest); the KV
  cache, attention mask, positions and last logits are then expanded to the B rows by index.
  Rows with equal prompt_ids share, whether they are copies of one request or different requests.
- Live-row decode: after a step in which rows finished (EOS, their own max_tokens, a stop
  string), those rows are dropped from the cache and every row-indexed tensor; outputs are mapped
  back to the original row numbers.
- Inverse-CDF sampling from one uniform per original row per step: each decode step draws
  `torch.rand(B)` from the engine's generator for all B rows, live or not, and a row's token is
  the first index where the cumulative sum (vocab order) of its temperature/top-p distribution
  exceeds its uniform. So a row's answer does not depend on which other rows are still live or
  whether prompts were shared. A call in which every row is greedy at every step draws nothing.
Left out: a padding-free (ragged) prefill, a static cache / torch.compile, prompt sharing across
`max_batch` chunks, and per-request top-p (the first request's top_p holds for the batch).
Answers are not the same draws as the earlier torch.multinomial engine's for the same seed.

EOS, as vLLM: an answer stops on any id of the model's generation_config.json `eos_token_id` (an
int or a list, e.g. Llama 3's end-of-turn and end-of-text) or the tokenizer's eos_token_id.
Stop strings: checked after every token with rlcurr.rollout.stop_strings (the rule both engines
share): the answer ends with the token that completes a stop string, also one that holds the
string and more (a merged "]=" for the stop "]"), and its text is the decoding of its token ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from rlcurr.learner.models import load_causal_lm, load_tokenizer
from rlcurr.rollout.stop_strings import find_stop
from rlcurr.types import Completion, GenRequest


def sample_next(logits_BV: torch.Tensor, temperature: float | torch.Tensor, top_p: float,
                u_B: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row; return (tokens_B, logprobs_B) under the sampling distribution.

    `temperature` is one number or one per row (temp_B, for EAD's per-position schedule). A row
    at temperature 0 is greedy, and its logprob is that of the untempered distribution.
    `u_B` holds one uniform [0, 1) per row (may be None when every row is greedy): the token is the
    first index whose cumulative probability (vocab order) exceeds u, i.e. whose CDF interval
    [cdf - p, cdf) contains u.
    """
    temp_B = torch.as_tensor(temperature, dtype=torch.float32, device=logits_BV.device).expand(logits_BV.shape[0])
    greedy_B = temp_B == 0
    if greedy_B.all():
        untempered_BV = torch.log_softmax(logits_BV.float(), dim=-1)
        tokens_B = untempered_BV.argmax(dim=-1)
        return tokens_B, untempered_BV.gather(1, tokens_B[:, None])[:, 0]
    logprobs_BV = torch.log_softmax(logits_BV.float() / temp_B.clamp(min=1e-6)[:, None], dim=-1)
    if top_p < 1.0:
        sorted_lp, order = logprobs_BV.sort(dim=-1, descending=True)
        cum = sorted_lp.exp().cumsum(dim=-1)
        drop_sorted = cum - sorted_lp.exp() > top_p  # keep the smallest prefix with mass >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logprobs_BV = torch.log_softmax(logprobs_BV.masked_fill(drop, float("-inf")), dim=-1)
    tokens_B = inverse_cdf(logprobs_BV.exp(), u_B)
    logprobs_B = logprobs_BV.gather(1, tokens_B[:, None])[:, 0]
    if greedy_B.any():
        untempered_BV = torch.log_softmax(logits_BV.float(), dim=-1)
        argmax_B = untempered_BV.argmax(dim=-1)
        tokens_B = torch.where(greedy_B, argmax_B, tokens_B)
        logprobs_B = torch.where(greedy_B, untempered_BV.gather(1, argmax_B[:, None])[:, 0], logprobs_B)
    return tokens_B, logprobs_B


def inverse_cdf(probs_BV: torch.Tensor, u_B: torch.Tensor) -> torch.Tensor:
    """The first index per row where cumsum(probs) > u. A zero-probability token never is: its
    cdf equals its predecessor's. Float64 so the cdf of a large vocab stays close to 1."""
    cdf_BV = probs_BV.double().cumsum(dim=-1)
    tokens_B = torch.searchsorted(cdf_BV, u_B.double().to(cdf_BV.device)[:, None], right=True)[:, 0]
    # Round-off can leave cdf[-1] <= u: take the last token with probability > 0, not V-1 (which
    # top-p may have removed).
    V = probs_BV.shape[1]
    last_B = V - 1 - (probs_BV > 0).flip(-1).int().argmax(dim=-1)
    return torch.minimum(tokens_B, last_B)


def temperature_table(reqs: list[GenRequest], steps: int) -> torch.Tensor:
    """temp_BT: the temperature of every row at every decode step (EAD schedule, else constant)."""
    table = torch.empty(len(reqs), steps)
    for b, r in enumerate(reqs):
        if r.temperatures:
            temps = list(r.temperatures[:steps])
            table[b] = torch.tensor(temps + [temps[-1]] * (steps - len(temps)))
        else:
            table[b] = r.temperature
    return table


def eos_token_ids(model_path: str, tokenizer) -> set[int]:
    """Every end-of-sequence id: generation_config.json's `eos_token_id` (int or list), when the
    model directory has one, plus the tokenizer's."""
    ids = set()
    if (Path(model_path) / "generation_config.json").is_file():
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class HFEngine:
    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, max_batch: int = 256):
        self.model = load_causal_lm(model_path, dtype).eval()
        self.tokenizer = load_tokenizer(model_path)
        self.eos_ids = eos_token_ids(model_path, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        self.max_batch = max_batch
        self.generator = torch.Generator().manual_seed(seed)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = dict(named_tensors)
        missing = set(self.model.state_dict()) - set(state)
        if any(not k.endswith("lm_head.weight") for k in missing):
            raise ValueError(f"weights missing for {sorted(missing)[:5]}")
        self.model.load_state_dict(state, strict=False)

    def sleep(self) -> None:
        """Nothing to free: the transformers engine is for CPU runs, never colocated."""

    def wake_up(self) -> None:
        pass

    def generate(self, requests: list[GenRequest]) -> list[list[Completion]]:
        rows = [(i, req) for i, req in enumerate(requests) for _ in range(req.n)]
        out: list[list[Completion]] = [[] for _ in requests]
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start : start + self.max_batch]
            for (i, _), completion in zip(chunk, self._generate_rows([r for _, r in chunk])):
                out[i].append(completion)
        return out

    @torch.no_grad()
    def _generate_rows(self, reqs: list[GenRequest]) -> list[Completion]:
        # top-p differs only between calls in practice (train vs eval): one per batch. Temperatures
        # are per row and decode step (EAD).
        top_p = reqs[0].top_p
        B = len(reqs)
        max_new_B = torch.tensor([r.max_tokens for r in reqs])
        temp_BT = temperature_table(reqs, int(max_new_B.max()))
        sampling = bool((temp_BT > 0).any())  # an all-greedy call leaves the generator as it was
        if reqs[0].seed is not None:
            self.generator.manual_seed(reqs[0].seed)

        eos_E = torch.tensor(sorted(self.eos_ids), dtype=torch.long)
        past, mask_LP, next_pos_L, logits_LV = self._prefill_shared(reqs)
        row_L = torch.arange(B)  # the original row of each live row
        done_B = torch.zeros(B, dtype=torch.bool)
        tokens, logprobs = [], []  # per step, over all B rows (pad / 0 for rows already finished)
        stopped: dict[int, tuple[int, str]] = {}  # row -> (answer length, the stop string it ends with)
        for t in range(int(max_new_B.max())):
            # Uniforms for all B rows, live or not: a row's draw never depends on the other rows.
            u_B = torch.rand(B, generator=self.generator) if sampling else None
            tok_L, lp_L = sample_next(logits_LV, temp_BT[row_L, t], top_p, None if u_B is None else u_B[row_L])
            tokens.append(torch.full((B,), self.pad_id, dtype=torch.long).index_copy(0, row_L, tok_L))
            logprobs.append(torch.zeros(B).index_copy(0, row_L, lp_L))
            eos_L = torch.isin(tok_L, eos_E)
            done_B[row_L] = eos_L | (t + 1 >= max_new_B[row_L])
            live_B = torch.zeros(B, dtype=torch.bool).index_fill(0, row_L[~eos_L], True)
            for b, stop in self._stop_strings(reqs, tokens, live_B):
                stopped[b] = (t + 1, stop)
                done_B[b] = True
            keep_L = ~done_B[row_L]
            if not keep_L.any():
                break
            if not keep_L.all():  # select only when a row finished: each select copies the cache
                keep_K = keep_L.nonzero()[:, 0]
                past.batch_select_indices(keep_K)
                row_L, mask_LP, next_pos_L, tok_L = row_L[keep_K], mask_LP[keep_K], next_pos_L[keep_K], tok_L[keep_K]
            mask_LP = torch.cat([mask_LP, torch.ones(len(row_L), 1, dtype=torch.long)], dim=1)
            out = self.model(input_ids=tok_L[:, None], attention_mask=mask_LP, position_ids=next_pos_L[:, None],
                             past_key_values=past, use_cache=True)
            past, next_pos_L, logits_LV = out.past_key_values, next_pos_L + 1, out.logits[:, -1]
        return [self._completion(b, tokens, logprobs, *stopped.get(b, (int(max_new_B[b]), None))) for b in range(B)]

    def _prefill_shared(self, reqs: list[GenRequest]):
        """Prefill each distinct prompt once (left-padded); return the KV cache, mask_BP, the next
        position_B and the last logits_BV, expanded to the B rows."""
        slot: dict[tuple[int, ...], int] = {}
        prompt_of_B = torch.tensor([slot.setdefault(tuple(r.prompt_ids), len(slot)) for r in reqs])
        prompts = list(slot)  # in slot order
        U, P = len(prompts), max(map(len, prompts))
        input_ids_UP = torch.full((U, P), self.pad_id, dtype=torch.long)
        mask_UP = torch.zeros((U, P), dtype=torch.long)
        for u, ids in enumerate(prompts):
            input_ids_UP[u, P - len(ids):] = torch.tensor(ids)
            mask_UP[u, P - len(ids):] = 1
        position_UP = (mask_UP.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids_UP, attention_mask=mask_UP, position_ids=position_UP, use_cache=True,
                         logits_to_keep=1)
        past = out.past_key_values
        if U < len(reqs):  # else prompt_of_B is 0..B-1; repeated indices copy a prompt's cache rows
            past.batch_select_indices(prompt_of_B)
        return past, mask_UP[prompt_of_B], position_UP[prompt_of_B, -1] + 1, out.logits[prompt_of_B, -1]

    def _stop_strings(self, reqs: list[GenRequest], tokens: list[torch.Tensor], live_B: torch.Tensor):
        """(row, stop string) for each live row whose newest token completes one of its request's
        stop strings, wherever in the token the string ends (`find_stop`). Only the row's last
        max(len(stop)) + 1 tokens are decoded: the tokens before the newest held no stop string."""
        for b, r in enumerate(reqs):
            if r.stop and bool(live_B[b]):
                tail = [int(tok_B[b]) for tok_B in tokens[-(max(map(len, r.stop)) + 1):]]
                hit = find_stop(tail, self._decode, r.stop, clear=len(tail) - 1)
                if hit is not None:
                    yield b, hit[1]

    def _decode(self, ids: list[int]) -> str:
        """An answer's text: what `Completion.text` holds and stop strings are searched in."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _completion(self, b: int, tokens: list[torch.Tensor], logprobs: list[torch.Tensor], max_new: int,
                    stop_reason: str | None = None) -> Completion:
        ids, lps = [], []
        for tok_B, lp_B in zip(tokens, logprobs):
            if len(ids) == max_new:
                break
            ids.append(int(tok_B[b]))
            lps.append(float(lp_B[b]))
            if ids[-1] in self.eos_ids:
                break
        finish = "stop" if stop_reason is not None or (ids and ids[-1] in self.eos_ids) else "length"
        text = self._decode(ids)  # the whole of the last token, past a stop string inside it
        return Completion(token_ids=ids, logprobs=lps, finish_reason=finish, text=text, stop_reason=stop_reason)

    def get_rng_state(self) -> list[int]:
        """The sampling generator's state as plain ints (JSON-able), for checkpoints."""
        return self.generator.get_state().tolist()

    def set_rng_state(self, state: list[int]) -> None:
        """Restore `get_rng_state`'s snapshot: the next `generate` draws as the saved run would have."""
        self.generator.set_state(torch.tensor(state, dtype=torch.uint8))
