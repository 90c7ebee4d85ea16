"""Weight sync from the learner to the rollout engines: which path each sync takes, and the
direct path through vLLM's weight-transfer engines (vllm.distributed.weight_transfer, vLLM 0.32).

Paths (logged per step as `sync/path_<name>`: 1 for the path the sync took, 0 for the others):
- "nccl": vLLM engines on GPUs of their own. vLLM's `NCCLTrainerWeightTransferEngine` on learner
  rank 0 broadcasts every tensor (packed) into one NCCL group: rank 0 = the learner, rollout
  worker k's tensor-parallel ranks at 1 + k * tp. Nothing is written to /dev/shm or the object store.
- "ipc": colocated (resources.colocate), one learner rank per rollout worker, on the same GPU:
  vLLM's `IPCTrainerWeightTransferEngine` on every learner rank exports CUDA IPC handles of its
  weights (all-gathered over the learner's process group); each engine opens those of its GPU.
- "shm": one shared-memory file written by learner rank 0 (rlcurr.rollout.shared_weights), when
  every engine is on the learner's node and /dev/shm has room for the file and for the copies
  out-of-process vLLM engines write next to it; else
- "object_store": Ray's object store (engines on other nodes, a /dev/shm too small).
- "gloo": the nccl path's protocol over a torch gloo group, between CPU processes
  (rlcurr.rollout.transfer_engines). Never chosen automatically; it is what the CPU tests run.

Choice (`transfer_backend`, then `WeightSync`): vLLM engines on a cluster with GPUs use "ipc"
when colocated with as many learner ranks as rollout workers, "nccl" when not colocated; with
colocation and fewer learner ranks than engines, or no GPUs, or the HF engine, the files / object
store. $RLCURR_WEIGHT_SYNC (nccl, ipc, gloo, shm, object_store; default auto), read by the
driver, overrides the choice: "shm" means no weight-transfer engine (the shared file when it
fits, as always), "object_store" neither engine nor file.

The direct path, end to end: `WeightSync` (driver) asks `LearnerGroup.start_weight_transfer`
once; each learner rank that takes part builds a `WeightSender` (vLLM's
`WeightTransferTrainerFactory.trainer_init` with `RolloutWorkersClient` as the control plane),
which runs `init_weight_transfer_engine` on every engine. Each sync, `LearnerGroup.send_weights`
makes rank 0's sender run start_weight_update, update_weights (concurrently with the broadcast)
and finish_weight_update on every engine, through `RolloutWorker.weight_transfer` ->
`VLLMEngine.weight_transfer` -> vLLM's `collective_rpc` -> the `WeightTransferEngine` vLLM built
in each of its workers from `WeightTransferConfig(backend=...)`. Tensors leave the learner in the
engine's dtype (an fp32 learner feeding a bf16 engine sends bf16), cast one at a time on the
sending device. The call returns when every engine holds the new weights (blocking, unlike the
file path, whose loads the next generate waits for).

Fallbacks to the files / object store, each said once in the log:
- the sender could not be built: e.g. engines on another node cannot reach the learner's
  rendezvous port (vLLM's TCP store gives up after 300 s). A NCCL initialisation that hangs
  after the store rendezvous (no route for NCCL's own connections) is not caught;
- a rollout worker was replaced after dying. A transfer group has fixed members, so the
  replacement is not in it; the trainer leaves the group (every engine releases its side) and
  syncs through files / object store for the rest of the run. Rejoining (a new group with every
  current worker) is not done: it needs each old member to release its communicator first, and
  it would run only on GPUs, untested. The replacement itself loads the learner's current weights
  from the object store (`RolloutPool.latest_weights`): in a synchronous run those are the synced
  weights; in an asynchronous one the learner may be one update ahead of the other engines.
- a send failed (the error is logged, that sync and later ones use files / object store). A
  worker dying in the middle of a NCCL broadcast can leave the learner waiting in NCCL instead.

Untested on GPU (no GPU where this was written): the nccl and ipc paths themselves (NCCL groups of
real GPUs, CUDA IPC handles, sleep mode before an IPC update, FSDP ranks joining a send). They are
written against vLLM 0.32's API as installed. The gloo backend runs everything around them on CPU
against the real vLLM engine: the control plane through Ray, rank offsets, chunked broadcast,
vLLM's layerwise reload, the fallback after a restart.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import ray
import torch

from rlcurr.actors import first_line

PATHS = ("nccl", "ipc", "gloo", "shm", "object_store")
TRANSFER_BACKENDS = ("nccl", "ipc", "gloo")
OVERRIDE_ENV = "RLCURR_WEIGHT_SYNC"


def requested_path() -> str:
    """$RLCURR_WEIGHT_SYNC, or "auto"."""
    from rlcurr.errors import UserError

    value = os.environ.get(OVERRIDE_ENV, "").strip() or "auto"
    if value not in PATHS + ("auto",):
        raise UserError(f"{OVERRIDE_ENV}={value!r}: expected one of auto, {', '.join(PATHS)}")
    return value


def transfer_backend(engine: str, *, gpus: bool, colocate: bool, num_rollout: int, num_learner: int,
                     requested: str = "auto") -> str | None:
    """The vLLM weight-transfer backend to build the rollout engines with; None: every sync goes
    through the shared-memory file or the object store."""
    if engine != "vllm" or requested in ("shm", "object_store"):
        return None
    if requested in TRANSFER_BACKENDS:
        return requested
    if not gpus:
        return None
    if colocate:  # each engine opens the IPC handles of the learner rank on its own GPU
        return "ipc" if num_learner == num_rollout else None
    return "nccl"


def sync_metrics(path: str, seconds: float, nbytes: int) -> dict[str, float]:
    """A step's sync metrics: the path as one 0/1 entry per path, the seconds the trainer waited
    for it (for the file/object-store paths the engines' own loads come after, before their next
    generate), and the weights' size in GB (1e9 bytes) in the form sent."""
    out = {f"sync/path_{p}": float(p == path) for p in PATHS}
    out["sync/seconds"] = seconds
    out["sync/gbytes"] = nbytes / 1e9
    return out


class RolloutWorkersClient:
    """vLLM's `VLLMWeightSyncClient` protocol over our RolloutWorker actors: each phase fans out
    to every worker and waits. vLLM's trainer engines address the inference side as one engine at
    rank offset 1; here worker k's offset becomes 1 + k * tp, so several independent engines share
    one group."""

    def __init__(self, workers: list, tensor_parallel_size: int):
        self.workers, self.tp = workers, tensor_parallel_size

    def _all(self, method: str, payloads: list) -> None:
        ray.get([w.weight_transfer.remote(method, p) for w, p in zip(self.workers, payloads)])

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        if "rank_offset" in init_info:  # group backends (nccl, gloo); ipc has no ranks
            payloads = [{**init_info, "rank_offset": 1 + k * self.tp} for k in range(len(self.workers))]
        else:
            payloads = [init_info] * len(self.workers)
        self._all("init_weight_transfer_engine", payloads)

    def start_weight_update(self) -> None:
        self._all("start_weight_update", [None] * len(self.workers))

    def update_weights(self, update_info: dict) -> None:
        self._all("update_weights", [update_info] * len(self.workers))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", [None] * len(self.workers))

    def shutdown_weight_transfer_engine(self) -> None:
        self._all("shutdown_weight_transfer_engine", [None] * len(self.workers))


class WeightSender:
    """One learner rank's side of the direct path: vLLM's trainer engine for `backend`, built once
    (rank 0 runs the rendezvous with every engine here), then `send(named)` per sync. Rank 0 is
    the sender; other ranks (FSDP, ipc) only join the collectives (gathers, handle all-gather)."""

    def __init__(self, backend: str, *, rank: int, workers: list, tensor_parallel_size: int, dtype: str,
                 master_address: str, master_port: int):
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        from rlcurr.rollout import transfer_engines as engines

        gpu = backend in ("nccl", "ipc")
        device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
        self.source = engines.LearnerWeights(getattr(torch, dtype), device)
        world_size = 1 + len(workers) * tensor_parallel_size
        if backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(rank=rank, master_address=master_address, master_port=master_port,
                                       world_size=world_size)
        elif backend == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            info = IPCTrainerInitInfo(rank=rank)
        elif backend == "gloo":
            info = engines.GlooTrainerInitInfo(rank=rank, master_address=master_address, master_port=master_port,
                                               world_size=world_size)
        else:
            raise ValueError(f"unknown weight-transfer backend {backend!r}")
        client = RolloutWorkersClient(workers if rank == 0 else [], tensor_parallel_size)
        self.engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=self.source)

    def send(self, named: list[tuple[str, torch.Tensor]]) -> int:
        """Every engine holds these weights when this returns; the bytes sent (per engine)."""
        self.source.set(named)
        try:
            self.engine.send_weights()
            return self.source.nbytes()
        finally:
            self.source.clear()

    def close(self) -> None:
        self.engine.shutdown()


def engine_options(backend: str | None) -> dict:
    """`LLM(...)` keyword arguments for an engine that receives weights through `backend`."""
    if backend is None:
        return {}
    from vllm.config import WeightTransferConfig

    options: dict = {"weight_transfer_config": WeightTransferConfig(backend=backend)}
    if backend == "gloo":  # registers the backend inside vLLM's worker processes
        options["worker_extension_cls"] = "rlcurr.rollout.transfer_engines.GlooWeightTransferExtension"
    return options


class WeightSync:
    """The trainer's side of every sync: the path, its fallbacks (logged once each), the metrics.

    `backend`: the weight-transfer backend the engines were built with (None: files / object
    store). `shared`: every engine is on the learner's node (the shared-memory file may be used).
    `engine_copies`: engines that write their own copy of the file into /dev/shm while loading."""

    def __init__(self, learner, pool, *, backend: str | None, shared: bool, engine_copies: int,
                 tensor_parallel_size: int, log: Callable[[str], None]):
        self.learner, self.pool, self.log = learner, pool, log
        self.shared = shared and requested_path() != "object_store"
        self.engine_copies = engine_copies
        self.backend: str | None = None
        self.warned: set[str] = set()
        if backend is not None:
            try:
                self.learner.start_weight_transfer(backend, pool.workers, tensor_parallel_size, pool.engine_dtype())
            except Exception as err:  # noqa: BLE001 - any failure leaves the files / object store
                self._warn_once("start", f"warning: vLLM weight transfer ({backend}) could not start "
                                         f"({first_line(err)}); syncing through files / the object store")
                self._release()
            else:
                self.backend, self.restarts = backend, pool.restarts

    def sync(self, wait: bool = False) -> dict[str, float]:
        """Rank 0's weights to every engine; returns the step's sync metrics (`sync_metrics`).
        File / object store: not waited for unless `wait` (each engine loads them before its next
        request; the pool's next call raises a failed load); the shared file is rewritten only by
        the next sync, which first waits for every engine's load. Direct: blocking."""
        t0 = time.perf_counter()
        if self.backend is not None and self.pool.restarts != self.restarts:
            self._leave("restart", f"a rollout worker was replaced, and vLLM's {self.backend} weight-transfer "
                                   f"group has fixed members")
        if self.backend is not None:
            try:
                nbytes = self.learner.send_weights()
            except ray.exceptions.RayError as err:
                self._leave("send", f"the send failed ({first_line(err)})")
            else:
                # a replacement started before the next sync loads the learner's weights itself
                self.pool.weights_sent_directly(lambda: self.learner.weights_ref()[0])
                return sync_metrics(self.backend, time.perf_counter() - t0, nbytes)
        self.pool.settle()
        weights, info = self.learner.weights_ref(shared=self.shared, engine_copies=self.engine_copies)
        self.pool.load_weights(weights, wait=wait)
        info = ray.get(info)
        if info["warning"]:
            self._warn_once("room", info["warning"])
        return sync_metrics(info["path"], time.perf_counter() - t0, info["bytes"])

    def _leave(self, kind: str, why: str) -> None:
        self._warn_once(kind, f"warning: {why}; leaving vLLM weight transfer, syncing through files / the "
                              f"object store from now on")
        self.backend = None
        self._release()

    def _release(self) -> None:
        """Both sides drop their part of the group; a failure here (an engine already broken by
        what made us leave) is logged, not raised: the files / object store work without it."""
        for stop in (self.learner.stop_weight_transfer, self.pool.stop_weight_transfer):
            try:
                stop()
            except Exception as err:  # noqa: BLE001
                self._warn_once("release", f"warning: releasing vLLM weight transfer failed ({first_line(err)})")

    def _warn_once(self, kind: str, line: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            self.log(line)
