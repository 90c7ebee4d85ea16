"""A vLLM generation engine (same interface as `HFEngine`), for vLLM 0.32 (CPU or GPU builds).

Choices:
- `logprobs_mode="processed_logprobs"`: with `SamplingParams(logprobs=0)` vLLM returns the logprob
  of each sampled token under the distribution it was drawn from (after temperature and top-p),
  which is what `HFEngine` returns and what the learner's importance ratios need. Greedy requests
  (temperature 0) get the untempered logprob, as in `HFEngine`.
- Prompts go in as token ids (`TokensPrompt`). Each request is expanded into `n` vLLM requests
  with n=1 (vLLM rejects n > 1 for greedy sampling); the k-th copy gets seed + k, as vLLM's own
  parallel sampling does. The prefix cache shares the prompt's KV between the copies.
- `enforce_eager=True` (no CUDA graphs/compile: fast start, weights reloadable in place).
- `max_model_len`: the trainer passes the longest prompt + the largest max_tokens of the run
  (rlcurr.rollout.context), since vLLM caps a longer request quietly (finish reason "length").
  Without one (direct use, tests): the model's `max_position_embeddings`, capped at 4096 to keep
  the KV cache small.
- Stop strings (multi-turn tool calls): the answer ends with the token that completes the stop
  string and its text is the decoding of its token ids (rlcurr.rollout.stop_strings, the rule the
  transformers engine shares), not vLLM's text, which ends at the stop string mid-token.
- Weight sync: the workers' `reload_weights` (via `collective_rpc`, `is_checkpoint_format=True`)
  takes HF checkpoint names/shapes and repacks them (fused qkv, gate_up) in place. With the
  engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, tp=1) the tensors are passed
  directly (`weights_iterator=`). Otherwise (vLLM's default: engine core and workers are other
  processes) the RPC kwargs go through vLLM's msgpack encoder, which rejects iterators and
  turns tensors into plain lists, so the weights are written as one safetensors file to a temp
  dir and reloaded with `weights_path=`: in /dev/shm ($RLCURR_SHM_DIR) when `os.statvfs` says it
  has room for the file, else in the regular temp dir (a full tmpfs makes the write fail; Docker
  gives 64 MB), said once in the log. The prefix cache is reset
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
- Weight transfer (vLLM's weight-transfer engines): built with `weight_transfer="nccl"`, "ipc" or
  "gloo", the engine gets `WeightTransferConfig(backend=...)` and `weight_transfer(method,
  payload)` forwards each phase of vLLM's protocol to its workers via `collective_rpc`; the
  learner's side and the choice of path are in rlcurr.rollout.weight_transfer. "ipc" payloads
  carry CUDA IPC handles, which vLLM's RPC encoder cannot: they are pickled into
  `ipc_handles_pickled`, and the engine sets VLLM_ALLOW_INSECURE_SERIALIZATION=1 so its workers
  accept them. The nccl and ipc paths need GPUs and are not run here; "gloo" (CPU) is tested.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from rlcurr.rollout.stop_strings import find_stop
from rlcurr.types import Completion, GenRequest


class VLLMEngine:
    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0,
                 gpu_memory_utilization: float = 0.25, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, sleep_mode: bool = False, weight_transfer: str | None = None):
        """`weight_transfer`: the vLLM weight-transfer backend ("nccl", "ipc", "gloo") this engine
        takes part in (rlcurr.rollout.weight_transfer), None for none; `load_weights` works either way."""
        from vllm import LLM, envs

        from rlcurr.rollout.weight_transfer import engine_options

        config = json.loads((Path(model_path) / "config.json").read_text())
        self.tied = bool(config.get("tie_word_embeddings", False))
        if max_model_len is None:
            max_model_len = min(int(config.get("max_position_embeddings", 4096)), 4096)
        gpu_kw = {}
        if torch.cuda.is_available():  # GPU-only options; see the module docstring
            gpu_kw = dict(enable_sleep_mode=sleep_mode)
            if tensor_parallel_size > 1:
                gpu_kw["distributed_executor_backend"] = "mp"
        if weight_transfer == "ipc":
            # CUDA IPC handles reach vLLM's workers only pickled (`weight_transfer` below), which
            # vLLM refuses unless this is set before its processes start. They are ours.
            os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
        gpu_kw.update(engine_options(weight_transfer))
        self.sleep_mode = sleep_mode
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=seed, enforce_eager=True,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len, logprobs_mode="processed_logprobs", **gpu_kw)
        self.tokenizer = self.llm.get_tokenizer()
        # Is the model in this process? Else the engine core/workers are separate processes.
        self.in_process = not envs.VLLM_ENABLE_V1_MULTIPROCESSING and tensor_parallel_size == 1
        self.writes_weight_file = not self.in_process  # load_weights copies the weights to a file
        self.copy_warned = False

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
        for (i, r, _), out in zip(rows, outputs):
            result[i].append(self._completion(out.outputs[0], r.stop))
        return result

    def _completion(self, o, stops: tuple[str, ...]) -> Completion:
        """Our `Completion` of vLLM's output `o`, under the stop-string rule both engines share
        (rlcurr.rollout.stop_strings): vLLM cuts `o.text` right after a stop string but keeps the
        whole completing token in `o.token_ids`; here the token ids end at that token and the text
        is their decoding, so it may run past the stop string by the rest of the token. Every
        answer's text is the decoding of its token ids, as in the transformers engine (vLLM's
        incremental detokenisation is not used)."""
        ids = list(o.token_ids)
        lps = [float(pos[tok].logprob) for tok, pos in zip(ids, o.logprobs)]
        finish = "length" if o.finish_reason == "length" else "stop"
        stop = o.stop_reason if isinstance(o.stop_reason, str) else None  # a stop string (not a stop token id)
        if stop is not None:
            # None only if vLLM's incremental text and the full decoding disagree: keep vLLM's end
            k, stop = find_stop(ids, self._decode, stops) or (len(ids), stop)
            ids, lps = ids[:k], lps[:k]
        return Completion(token_ids=ids, logprobs=lps, finish_reason=finish, text=self._decode(ids), stop_reason=stop)

    def _decode(self, ids: list[int]) -> str:
        """An answer's text, decoded as `HFEngine` decodes it."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
        """Reload the model from HF-named tensors (see the module docstring). Returns a warning
        line the first time this engine's weight copy could not go to shared memory, else None."""
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
        note = None
        if self.in_process:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        else:
            note = self._reload_from_file(weights)
        self.llm.reset_prefix_cache()
        if note is not None and not self.copy_warned:
            self.copy_warned = True
            return note
        return None

    def _reload_from_file(self, weights: list[tuple[str, torch.Tensor]]) -> str | None:
        """The weights as one safetensors file in a temp dir, reloaded by vLLM's workers from
        there. The dir is in shared memory when it has room for the file
        (rlcurr.rollout.shared_weights.room), else in the regular temp dir; safetensors writes
        with write(), so a tmpfs that fills up anyway raises ENOSPC and the regular temp dir is
        tried too. Returns the warning for a fallback (None if shared memory took it, or there is
        no shared-memory directory at all)."""
        from safetensors.torch import save_file

        from rlcurr.rollout.shared_weights import room

        shm = room(sum(t.numel() * t.element_size() for _, t in weights))
        regular = tempfile.gettempdir()
        roots = ([shm.directory] if shm.enough else []) + [None]  # None: the regular temp dir
        note = None if shm.enough or shm.free is None else (
            shm.shortage("this vLLM engine's weight copy") + f"; writing it to {regular} instead")
        for root in roots:
            try:
                with tempfile.TemporaryDirectory(prefix="rlcurr-weights-", dir=root) as d:
                    save_file(dict(weights), str(Path(d) / "model.safetensors"))
                    self.llm.collective_rpc("reload_weights", kwargs={"weights_path": d, "is_checkpoint_format": True})
                return note
            except OSError as err:
                if root is None:
                    raise
                note = (f"warning: writing this vLLM engine's weight copy to {root} failed ({err}); writing it "
                        f"to {regular} instead")
        return note

    def dtype_name(self) -> str:
        """The dtype vLLM computes in ("float32", "bfloat16", ...)."""
        return str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")

    def sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()

    def weight_transfer(self, method: str, payload: dict | None = None) -> None:
        """One phase of vLLM's weight-transfer protocol (init_weight_transfer_engine,
        start_weight_update, update_weights, finish_weight_update, shutdown_weight_transfer_engine)
        on every vLLM worker of this engine; rlcurr.rollout.weight_transfer drives them. The prefix
        cache is reset after an update, as after `load_weights`."""
        if payload is not None and payload.get("ipc_handles") is not None and not self.in_process:
            # vLLM's RPC encoder (msgpack) cannot carry CUDA IPC handles; its own HTTP client
            # pickles them into this field, which the worker unpickles (see __init__)
            import base64
            import pickle

            handles = payload["ipc_handles"]
            payload = {k: v for k, v in payload.items() if k != "ipc_handles"}
            payload["ipc_handles_pickled"] = base64.b64encode(pickle.dumps(handles)).decode()
        kwargs = {} if payload is None else {"init_info" if method == "init_weight_transfer_engine"
                                             else "update_info": payload}
        self.llm.collective_rpc(method, kwargs=kwargs)
        if method == "finish_weight_update":
            self.llm.reset_prefix_cache()
