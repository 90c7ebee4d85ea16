"""The generation-engine protocol that rollout workers wrap (transformers or vLLM)."""

from __future__ import annotations

from typing import Iterable, Protocol

import torch

from rlcurr.types import Completion, GenRequest


class Engine(Protocol):
    def generate(self, requests: list[GenRequest]) -> list[list[Completion]]:
        """For each request, `request.n` completions with per-token sampling logprobs."""
        ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the model's weights (full HF checkpoint names and shapes)."""
        ...

    def sleep(self) -> None:
        """Colocated mode: free accelerator memory until `wake_up` (weights may be kept on CPU)."""
        ...

    def wake_up(self) -> None:
        """Undo `sleep`; the next call may be `load_weights` or `generate`."""
        ...

    # Optional (checkpoints): `get_rng_state() -> JSON-able` / `set_rng_state(state)` snapshot and
    # restore the sampling RNG so a resumed run draws what the uninterrupted run would have drawn.
    # HFEngine has them; VLLMEngine cannot (see its docstring), and RolloutWorker returns None then.
