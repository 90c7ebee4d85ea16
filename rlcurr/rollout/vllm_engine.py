"""A vLLM generation engine (same interface as `HFEngine`), for vLLM 0.32 (CPU or GPU builds).

Choices:
- `logprobs_mode="processed_logprobs"`: with `SamplingParams(logprobs=0)` vLLM returns the logprob
  of each sampled token under the distribution it was drawn from (after temperature and top-p),
  which is what `HFEngine` returns and what the learner's importance ratios need. Greedy requests
  (temperature 0) get the untempered logprob, as in `HFEngine`.
- Prompts go in as token ids (`TokensPrompt`). Each request is expanded into `n` vLLM requests
  with n=1 (vLLM rejects n > 1 for greedy sampling); the k-th copy gets seed + k, as vLLM's own
  parallel sampling does. The prefix cache shares the prompt's KV between the copies.
- `enforce_eager=True` (no CUDA graphs/compile: fast start, weights reloadable in place) and
  `max_model_len` = the model's `max_position_embeddings`, capped, to keep the KV cache small.
- Weight sync: the workers' `reload_weights` (via `collective_rpc`, `is_checkpoint_format=True`)
  takes HF checkpoint names/shapes and repacks them (fused qkv, gate_up) in place. With the
  engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, tp=1) the tensors are passed
  directly (`weights_iterator=`). Otherwise (vLLM's default: engine core and workers are other
  processes) the RPC kwargs go through vLLM's msgpack encoder, which rejects iterators and
  turns tensors into plain lists, so the weights are written as one safetensors file to a temp
  dir (/dev/shm when present) and reloaded with `weights_path=`. The prefix cache is reset
  afterwards so no KV computed with the old weights is reused.
  Tied embeddings: the reload breaks vLLM's lm_head/embed_tokens tie, and without an explicit
  `lm_head.weight` the head keeps the OLD weights (measured: logprobs off by ~0.8). So for tied
  models we add `lm_head.weight` = the new embeddings when the caller left it out.
- Resume is NOT draw-for-draw reproducible with this engine (it is with `HFEngine`, whose
  generator state the trainer checkpoints). The trainer sends no per-request seeds
  (`GenRequest.seed` is None), so vLLM samples from the engine's own RNG, seeded once by
  `LLM(seed=...)`. That state lives in vLLM's engine core (another process by default) and vLLM
  has no public API to read or set it, so this class has no `get_rng_state`/`set_rng_state`:
  the checkpoint stores None for a vLLM worker and a resumed run restarts its sampling stream
  from the seed (the learner, curriculum and driver RNGs are still restored). Per-request seeds
  derived from (seed, step, request) would make the draws replayable, at the cost of vLLM's
  per-request-generator sampling path; even then outputs depend on how vLLM batches and
  schedules requests (its kernels are not batch-invariant by default), so equality with an
  uninterrupted run would not be guaranteed. Not done.
On CPU `gpu_memory_utilization` is the share of RAM reserved for the KV cache; keep it low.
Scripts that build this engine need an `if __name__ == "__main__":` guard (spawned workers).

GPU only (written against vLLM 0.32's documented API, not run here: no GPU in CI):
- tensor_parallel_size > 1 uses vLLM's multiprocessing executor (`distributed_executor_backend=
  "mp"`) over the GPUs Ray gave the RolloutWorker actor, so a tp engine fits one Ray bundle.
- Colocated mode (`sleep_mode=True`): `LLM(enable_sleep_mode=True)`; `sleep()` = `llm.sleep(
  level=1)` (weights offloaded to CPU RAM, KV cache dropped), `wake_up()` = `llm.wake_up()`.
  vLLM's CPU platform refuses sleep mode ("Sleep mode is not supported on current platform"),
  so `RolloutPool`/`placement` reject `resources.colocate` on a cluster without GPUs.
- NCCL weight transfer (vLLM's weight-transfer engine, docs/training/weight_transfer): the
  engine is built with `weight_transfer_config=WeightTransferConfig(backend="nccl")` when CUDA
  is present, and `weight_transfer(method, payload)` forwards the four phases
  (init_weight_transfer_engine, start_weight_update, update_weights, finish_weight_update) to
  vLLM's workers via `collective_rpc`. The learner side is `nccl_weight_sender` below: vLLM's
  `NCCLTrainerWeightTransferEngine` (rank 0 broadcasts every parameter, packed) with
  `RolloutWorkersClient` as its control plane; rollout worker k joins at ranks 1 + k*tp ...
  What is NOT wired yet: the learner actor does not build the sender and `Trainer.sync` always
  uses the object-store path (`named_weights` -> `load_weights` -> reload_weights), which also
  works on GPUs and across nodes, only slower. Wiring it needs, in LearnerWorker, `self.sender =
  nccl_weight_sender(model, rollout_handles, ...)` once and `self.sender.send_weights()` per
  step; and, after a rollout-worker restart, a new NCCL group (groups are fixed-membership), so
  the pool's replacement path keeps using the object-store weights.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from rlcurr.types import Completion, GenRequest


class VLLMEngine:
    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0,
                 gpu_memory_utilization: float = 0.25, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, sleep_mode: bool = False):
        from vllm import LLM, envs

        config = json.loads((Path(model_path) / "config.json").read_text())
        self.tied = bool(config.get("tie_word_embeddings", False))
        if max_model_len is None:
            max_model_len = min(int(config.get("max_position_embeddings", 4096)), 4096)
        gpu_kw = {}
        if torch.cuda.is_available():  # GPU-only options; see the module docstring
            from vllm.config import WeightTransferConfig

            gpu_kw = dict(enable_sleep_mode=sleep_mode, weight_transfer_config=WeightTransferConfig(backend="nccl"))
            if tensor_parallel_size > 1:
                gpu_kw["distributed_executor_backend"] = "mp"
        self.sleep_mode = sleep_mode
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=seed, enforce_eager=True,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len, logprobs_mode="processed_logprobs", **gpu_kw)
        self.tokenizer = self.llm.get_tokenizer()
        # Is the model in this process? Else the engine core/workers are separate processes.
        self.in_process = not envs.VLLM_ENABLE_V1_MULTIPROCESSING and tensor_parallel_size == 1

    def generate(self, requests: list[GenRequest]) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        rows = [(i, r, k) for i, r in enumerate(requests) for k in range(r.n)]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for _, r, _ in rows]
        params = [SamplingParams(n=1, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                 seed=None if r.seed is None else r.seed + k, logprobs=0, skip_special_tokens=True,
                                 stop=list(r.stop) or None, include_stop_str_in_output=True)
                  for _, r, k in rows]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        result: list[list[Completion]] = [[] for _ in requests]
        for (i, _, _), out in zip(rows, outputs):
            result[i].append(self._completion(out.outputs[0]))
        return result

    @staticmethod
    def _completion(o) -> Completion:
        ids = list(o.token_ids)
        lps = [float(pos[tok].logprob) for tok, pos in zip(ids, o.logprobs)]
        finish = "length" if o.finish_reason == "length" else "stop"
        stop = o.stop_reason if isinstance(o.stop_reason, str) else None  # a stop string (not a stop token id)
        return Completion(token_ids=ids, logprobs=lps, finish_reason=finish, text=o.text, stop_reason=stop)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        weights, seen = [], set()
        for name, t in named_tensors:
            t = t.detach().cpu().contiguous()
            if t.data_ptr() in seen:  # tied weights share storage; safetensors refuses that
                t = t.clone()
            seen.add(t.data_ptr())
            weights.append((name, t))
        names = {name for name, _ in weights}
        if self.tied and "lm_head.weight" not in names and "model.embed_tokens.weight" in names:
            weights.append(("lm_head.weight", dict(weights)["model.embed_tokens.weight"].clone()))
        if self.in_process:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        else:
            from safetensors.torch import save_file

            root = "/dev/shm" if Path("/dev/shm").is_dir() else None
            with tempfile.TemporaryDirectory(prefix="rlcurr-weights-", dir=root) as d:
                save_file(dict(weights), str(Path(d) / "model.safetensors"))
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": d, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()

    def weight_transfer(self, method: str, payload: dict | None = None) -> None:
        """One phase of vLLM's weight-transfer protocol on every vLLM worker of this engine (GPU)."""
        kwargs = {} if payload is None else {"init_info" if method == "init_weight_transfer_engine"
                                             else "update_info": payload}
        self.llm.collective_rpc(method, kwargs=kwargs)
        if method == "finish_weight_update":
            self.llm.reset_prefix_cache()


# ---------------------------------------------------------------- NCCL weight sync (GPU, learner side)


class RolloutWorkersClient:
    """vLLM's `VLLMWeightSyncClient` protocol over our RolloutWorker actors: each phase fans out
    to every worker and waits. Worker k's vLLM ranks start at 1 + k * tp (rank 0 = the learner),
    so several independent engines share one NCCL group."""

    def __init__(self, workers: list, tensor_parallel_size: int):
        self.workers, self.tp = workers, tensor_parallel_size

    def _all(self, method: str, payloads: list) -> None:
        import ray

        ray.get([w.weight_transfer.remote(method, p) for w, p in zip(self.workers, payloads)])

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._all("init_weight_transfer_engine",
                  [{**init_info, "rank_offset": 1 + k * self.tp} for k in range(len(self.workers))])

    def start_weight_update(self) -> None:
        self._all("start_weight_update", [None] * len(self.workers))

    def update_weights(self, update_info: dict) -> None:
        self._all("update_weights", [update_info] * len(self.workers))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", [None] * len(self.workers))


def nccl_weight_sender(model: torch.nn.Module, workers: list, tensor_parallel_size: int, master_port: int):
    """Run once in the learner process (on its GPU): join an NCCL group with every rollout
    worker's vLLM ranks and return vLLM's trainer engine; `.send_weights()` after each step then
    broadcasts `model.named_parameters()` to all of them. Tied lm_head: vLLM reloads it from
    `model.embed_tokens.weight` through the model's own `load_weights` (the same caveat as the
    file path in `load_weights`; check the greedy outputs after the first sync on a new model)."""
    import ray
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    info = NCCLTrainerInitInfo(rank=0, master_address=ray.util.get_node_ip_address(), master_port=master_port,
                               world_size=1 + len(workers) * tensor_parallel_size)
    return WeightTransferTrainerFactory.trainer_init(
        info, client=RolloutWorkersClient(workers, tensor_parallel_size), source=ModuleSource(model))
