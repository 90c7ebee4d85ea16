"""The vLLM-side pieces of weight transfer (rlcurr.rollout.weight_transfer), for vLLM 0.32:

- `LearnerWeights`: the `WeightSource` vLLM's trainer engines read, over the learner's tensors,
  each cast to the engine's dtype and moved to the sending device as it is sent.
- A "gloo" backend: vLLM's NCCL weight-transfer engines with the NCCL communicator replaced by a
  torch gloo process group, so the same protocol runs between CPU processes. The worker side
  (`GlooWeightTransferEngine`) subclasses vLLM's `NCCLWeightTransferEngine` and keeps its
  `start_weight_update` / `finish_weight_update` (vLLM's layerwise reload); the trainer side
  (`GlooTrainerWeightTransferEngine`) subclasses `NCCLTrainerWeightTransferEngine` and keeps its
  `send_weights` (metadata, start, update concurrently with the broadcast, finish). What differs:
  the group (`stateless_init_torch_distributed_process_group`, rank 0 = the trainer, which hosts
  the TCP rendezvous) and the broadcast, which sends the tensors packed into byte chunks of at
  most `chunk_bytes` (a tensor larger than that travels alone), cut the same way on both sides
  from the update's names/dtypes/shapes; vLLM's packed NCCL producer/consumer are not used since
  they run on CUDA streams. The tests run this backend against the real vLLM CPU engine.

Importing this module registers "gloo" in vLLM's two factories (worker and trainer side). The
registry is per process, so a vLLM engine that uses it names `GlooWeightTransferExtension` (below)
as its `worker_extension_cls`: vLLM imports that class, hence this module, in every worker
process before it builds the worker's weight-transfer engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from vllm.distributed.weight_transfer.base import (ParamMeta, TrainerInitInfo, WeightSource, WeightTransferInitInfo,
                                                   materialize_full_tensor)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory
from vllm.distributed.weight_transfer.nccl_engine import (NCCLTrainerWeightTransferEngine, NCCLWeightTransferEngine,
                                                          NCCLWeightTransferUpdateInfo)
from vllm.distributed.weight_transfer.packed_tensor import unpack_tensor

GLOO_CHUNK_BYTES = 64 << 20


class LearnerWeights(WeightSource):
    """The learner's named tensors for one send (`set` before each `send_weights`, `clear` after),
    sent in `dtype` (floating tensors; others as they are) from `device`. Tensors may be FSDP
    DTensors: each is gathered (`full_tensor`, a collective on every rank) when it is sent."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.named: list[tuple[str, torch.Tensor]] = []

    def set(self, named: list[tuple[str, torch.Tensor]]) -> None:
        self.named = named

    def clear(self) -> None:
        self.named = []

    def _wire_dtype(self, t: torch.Tensor) -> torch.dtype:
        return self.dtype if t.is_floating_point() else t.dtype

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(name, self._wire_dtype(t), tuple(t.shape)) for name, t in self.named]

    def nbytes(self) -> int:
        return sum(t.numel() * torch.empty((), dtype=self._wire_dtype(t)).element_size() for _, t in self.named)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in self.named:
            full = materialize_full_tensor(t.detach())
            yield name, full.to(device=self.device, dtype=self._wire_dtype(t))


# ---------------------------------------------------------------- gloo backend


def _chunks(sizes: list[int], limit: int) -> list[range]:
    """Consecutive index ranges whose byte sizes add up to at most `limit` (a larger tensor alone)."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def _nbytes(shape, dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * torch.empty((), dtype=dtype).element_size()


def _broadcast_from_rank0(group, buffer: torch.Tensor) -> None:
    """From group rank 0. The group is not registered with torch.distributed (it is stateless),
    so `torch.distributed.broadcast(group=...)` cannot map ranks: call the group itself."""
    opts = torch.distributed.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([buffer], opts).wait()


def _open_group(address: str, port: int, rank: int, world_size: int):
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(address, port, rank, world_size, backend="gloo")


def _close_group(group) -> None:
    from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

    stateless_destroy_torch_distributed_process_group(group)


@dataclass(kw_only=True)
class GlooWeightTransferInitInfo(WeightTransferInitInfo):
    """Worker side: the trainer's rendezvous, this engine's first rank, the group size."""

    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    chunk_bytes: int = GLOO_CHUNK_BYTES


class GlooWeightTransferEngine(NCCLWeightTransferEngine):
    init_info_cls = GlooWeightTransferInitInfo
    update_info_cls = NCCLWeightTransferUpdateInfo

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        p = self.parallel_config  # this worker's rank as vLLM's NCCL engine computes it
        rank = init_info.rank_offset + p.data_parallel_index * p.world_size + p.rank
        self.chunk_bytes = init_info.chunk_bytes
        self.model_update_group = _open_group(init_info.master_address, init_info.master_port, rank,
                                              init_info.world_size)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class ends with torch.accelerator.synchronize(), which raises on a machine
        # without an accelerator; a gloo broadcast has landed when it returns.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: NCCLWeightTransferUpdateInfo) -> None:
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        if self.model_update_group is None:
            raise RuntimeError("gloo weight transfer not initialized: call init_transfer_engine first")
        dtypes = [getattr(torch, d) for d in update_info.dtype_names]
        sizes = [_nbytes(shape, dt) for shape, dt in zip(update_info.shapes, dtypes)]
        with disable_mtp_completeness_check():
            for chunk in _chunks(sizes, self.chunk_bytes):
                buffer = torch.empty(sum(sizes[i] for i in chunk), dtype=torch.uint8, device=self.device)
                _broadcast_from_rank0(self.model_update_group, buffer)
                self.model.load_weights(unpack_tensor(
                    buffer, [update_info.names[i] for i in chunk], [update_info.shapes[i] for i in chunk],
                    [dtypes[i] for i in chunk], [sizes[i] for i in chunk]))

    def shutdown(self) -> None:
        if self.model_update_group is not None:
            _close_group(self.model_update_group)
            self.model_update_group = None


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = "gloo"

    master_address: str
    master_port: int
    world_size: int
    chunk_bytes: int = GLOO_CHUNK_BYTES


class GlooTrainerWeightTransferEngine(NCCLTrainerWeightTransferEngine):
    init_info_cls = GlooTrainerInitInfo

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client, source: WeightSource | None = None):
        if source is None:
            raise ValueError("gloo trainer weight transfer requires a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, packed=True,
                     packed_buffer_size_bytes=init_info.chunk_bytes)
        if not engine.is_sender:
            return engine
        worker_info = GlooWeightTransferInitInfo(master_address=init_info.master_address,
                                                 master_port=init_info.master_port, rank_offset=1,
                                                 world_size=init_info.world_size, chunk_bytes=init_info.chunk_bytes)
        # as vLLM's NCCL trainer: the workers wait in the rendezvous while rank 0 opens it
        with ThreadPoolExecutor(max_workers=1) as exe:
            future = exe.submit(engine.client.init_weight_transfer_engine, asdict(worker_info))
            engine.model_update_group = _open_group(init_info.master_address, init_info.master_port, 0,
                                                    init_info.world_size)
            future.result()
        return engine

    def _broadcast(self, source: WeightSource, meta: list[ParamMeta]) -> None:
        if not self.is_sender:  # other trainer ranks only join the gathers
            for _ in source:
                pass
            return
        sizes = [_nbytes(m.shape, m.dtype) for m in meta]
        pairs = self._checked_iter(source, meta)
        for chunk in _chunks(sizes, self.packed_buffer_size_bytes):
            parts = [next(pairs)[1].contiguous().view(-1).view(torch.uint8) for _ in chunk]
            _broadcast_from_rank0(self.model_update_group, torch.cat(parts) if len(parts) > 1 else parts[0])
        for _ in pairs:  # runs _checked_iter's final count check
            pass

    def shutdown(self) -> None:
        if self.model_update_group is not None:
            _close_group(self.model_update_group)
            self.model_update_group = None


def register_gloo_backend() -> None:
    """Make "gloo" known to vLLM's factories in this process (again: no-op)."""
    for factory, engine in ((WeightTransferEngineFactory, GlooWeightTransferEngine),
                            (WeightTransferTrainerFactory, GlooTrainerWeightTransferEngine)):
        if "gloo" not in factory._registry:  # register_engine refuses a second registration
            factory.register_engine("gloo", engine)


register_gloo_backend()


class GlooWeightTransferExtension:
    """vLLM `worker_extension_cls` for engines that use the gloo backend: adds nothing to the
    worker; naming it makes vLLM import this module (and so register "gloo") in each worker."""
