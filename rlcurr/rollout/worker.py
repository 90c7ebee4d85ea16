"""RolloutWorker: a Ray actor that holds one generation engine. No logic lives here."""

from __future__ import annotations

import os
import time

import ray
import torch

from rlcurr.rollout.shared_weights import SharedLayout, SharedWeightsReader
from rlcurr.types import Completion, GenRequest


def make_engine(kind: str, model_path: str, *, dtype: str, seed: int, gpu_memory_utilization: float = 0.25,
                tensor_parallel_size: int = 1, sleep_mode: bool = False, max_model_len: int | None = None,
                weight_transfer: str | None = None):
    """The generation engine `kind` ("hf" or "vllm"). `max_model_len`: vLLM's tokens per sequence
    (rlcurr.rollout.context; None: VLLMEngine's default); the transformers engine has no such limit."""
    if kind == "hf":
        from rlcurr.rollout.hf_engine import HFEngine

        return HFEngine(model_path, dtype=dtype, seed=seed)
    if kind == "vllm":
        from rlcurr.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                          tensor_parallel_size=tensor_parallel_size, sleep_mode=sleep_mode,
                          max_model_len=max_model_len, weight_transfer=weight_transfer)
    raise ValueError(f"unknown engine {kind!r}")


@ray.remote(num_cpus=0)
class RolloutWorker:
    def __init__(self, kind: str, model_path: str, *, dtype: str, seed: int, threads: int | None = None, **engine_kw):
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.engine = make_engine(kind, model_path, dtype=dtype, seed=seed, **engine_kw)
        self.shared = SharedWeightsReader()

    def generate(self, requests: list[GenRequest]) -> tuple[list[list[Completion]], float]:
        """The completions, and the seconds the engine took (the rest of a call is Ray's)."""
        t0 = time.perf_counter()
        out = self.engine.generate(requests)
        return out, time.perf_counter() - t0

    def load_weights(self, named_tensors) -> str | None:
        """Named tensors, or the layout of the learner's shared-memory file (same node). Returns
        the engine's warning about how it loaded them, if it has one (for the driver's log)."""
        if isinstance(named_tensors, SharedLayout):
            named_tensors = self.shared.read(named_tensors)
        return self.engine.load_weights(named_tensors)

    def engine_dtype(self) -> str:
        """The dtype the engine computes in ("float32", "bfloat16", ...): what weights are sent in."""
        return self.engine.dtype_name()

    def writes_weight_file(self) -> bool:
        """Whether the engine copies the weights into a file of its own to load them (vLLM with
        its engine core in other processes; see VLLMEngine.load_weights)."""
        return bool(getattr(self.engine, "writes_weight_file", False))

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def get_rng_state(self):
        """The engine's sampling RNG state (JSON-able), or None if the engine cannot export it (vLLM)."""
        get = getattr(self.engine, "get_rng_state", None)
        return None if get is None else get()

    def set_rng_state(self, state) -> None:
        """Restore `get_rng_state`'s snapshot; None (nothing was saved) leaves the engine as it is."""
        if state is not None and hasattr(self.engine, "set_rng_state"):
            self.engine.set_rng_state(state)

    def weight_transfer(self, method: str, payload: dict | None = None) -> None:
        """One phase of vLLM's weight transfer on this engine (rlcurr.rollout.weight_transfer)."""
        self.engine.weight_transfer(method, payload)

    def ping(self) -> int:
        return os.getpid()
