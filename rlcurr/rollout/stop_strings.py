"""Where an answer ends on a stop string: one rule for both engines (transformers and vLLM).

The rule. An answer that hits a stop string keeps every token up to and including the token that
completes the string's first occurrence, and no token after it; its text is exactly the decoding
of the kept token ids (`skip_special_tokens=True`). So `Completion.text == decode(token_ids)`,
the logprobs are those of the kept tokens, and reward functions read exactly what the learner
trains on. When the completing token holds more than the end of the stop string (a merged token
"]=" completing the stop "]"), the text runs past the stop string by the rest of that token
("[1+2]="): the model did sample "]=", so the answer contains it.

Which string, when several complete in the same token: the one whose occurrence ends first in
the text, ties by the request's order (vLLM's `check_stop_strings` picks the same).

Multi-turn tools (rlcurr/rollout/multiturn.py) read the trajectory cut right after the stop
string (`through_stop`): the tool call as written, without the rest of the completing token.
That rest stays in the answer, before the tool's output, because the model's next turn is
conditioned on it.

Variants not taken: vLLM's own output (text cut at the stop string, token ids kept through the
completing token: the reward reads "...]" while the learner trains on "...]="); dropping the
completing token (the stop string would not be in the answer, and the tool call would not end
with it); re-tokenising the cut text (ids the model never sampled, with no sampling logprobs).

Left out: a stop string whose characters are split by a token that decodes to nothing (a special
token, skipped when decoding) is searched only within the last max(len(stop)) + 1 tokens, which
such empty tokens can push it out of; and decoders whose text of a token depends on tokens more
than one position before it.
"""

from __future__ import annotations

from typing import Callable, Sequence


def find_stop(token_ids: Sequence[int], decode: Callable[[list[int]], str], stops: Sequence[str],
              clear: int = 0) -> tuple[int, str] | None:
    """`(k, stop)`: the fewest leading tokens `token_ids[:k]` whose decoded text contains one of
    `stops`, and that string; None when no stop string occurs.

    `clear`: a number of leading tokens already known to hold no stop string. The transformers
    engine checks after every token, so it passes len(token_ids) - 1 and only the last token is
    tried (one short decode). vLLM hands back a finished answer: clear = 0, and a binary search
    over the end (its answer normally ends at the completing token: two whole decodes and a short one).

    Only the tokens from `clear - max(len(stop))` on are decoded for a test: every character of an
    occurrence that the first `clear` tokens do not hold lies in the last max(len(stop)) tokens
    before its end (a token is at least one character); one more token is decoded so that a
    decoder which drops a leading space at the start of a text (SentencePiece) keeps it.
    """
    if not stops or len(token_ids) <= clear:
        return None
    span = max(map(len, stops))

    def first_stop(end: int, clear_until: int) -> str | None:
        text = decode(list(token_ids[max(0, clear_until - span) : end]))
        ends = [(text.find(s) + len(s), i) for i, s in enumerate(stops) if s in text]
        return stops[min(ends)[1]] if ends else None

    lo, hi = clear, len(token_ids)  # invariant: token_ids[:lo] holds no stop; token_ids[:hi] holds one
    if first_stop(hi, lo) is None:
        return None
    if hi - lo > 1 and first_stop(hi - 1, lo) is None:  # the usual case: the last token completes it
        lo = hi - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if first_stop(mid, lo) is None:
            lo = mid
        else:
            hi = mid
    return hi, first_stop(hi, lo)


def through_stop(text: str, stop: str) -> str:
    """`text` cut right after the first occurrence of `stop` (all of `text` if it has none): a
    tool call as the model wrote it, without the rest of the token that completed the stop."""
    at = text.find(stop)
    return text if at < 0 else text[: at + len(stop)]
