"""LearnerWorker: a Ray actor that holds one `Learner` (its arguments, including `temperature`
and `response_limit`, are the Learner's) and this rank's side of the weight sync: the
shared-memory file writer and, when vLLM's weight transfer is used, the sender
(rlcurr.rollout.weight_transfer)."""

from __future__ import annotations

import atexit
import os
import socket
import time

import ray
import torch

from rlcurr.learner.learner import Learner, merged_lora_state
from rlcurr.rollout.shared_weights import SharedWeightsWriter
from rlcurr.types import TrainSample


@ray.remote(num_cpus=0)
class LearnerWorker:
    def __init__(self, *args, threads: int | None = None, **kwargs):
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.learner = Learner(*args, **kwargs)
        self.writer = SharedWeightsWriter()
        atexit.register(self.writer.close)
        self.sender = None  # vLLM weight transfer (start_weight_transfer), when used

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's IP and a port free right now (rank 0 hosts the process group's store)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def init_process_group(self, rank: int, world: int, addr: str, port: int) -> None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank,
                                             world_size=world)
        self.learner.join_group()

    def train_step(self, samples: list[TrainSample], step: int, **kwargs) -> dict[str, float]:
        """The update's metrics, plus the seconds this actor spent on it ('time/learner': the
        learner's busy time, which an asynchronous step overlaps with generation)."""
        t0 = time.perf_counter()
        metrics = self.learner.train_step(samples, step, **kwargs)
        return {**metrics, "time/learner": time.perf_counter() - t0}

    def logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        return self.learner.logprobs(samples)

    def named_weights(self):
        return self.learner.named_weights()

    @ray.method(num_returns=2)
    def engine_weights(self, shared: bool, engine_copies: int = 0):
        """The weights for the rollout engines, and a small dict about them: {"path": "shm" or
        "object_store", "bytes": their size, "warning": a line for the log, or None}.
        `shared` (every engine on this node): written to the shared-memory file, returning its
        layout (rlcurr.rollout.shared_weights), when /dev/shm has room for it and for the
        `engine_copies` copies engines write next to it; else the named tensors themselves (the
        object store carries them). FSDP: collective, ranks other than 0 return (None, None)."""
        # clone=False: the file write below, or Ray's serialisation of the return value, is the copy
        named = self.learner.named_weights(clone=False)
        if not named:
            return None, None
        warning = None
        if shared:
            try:
                layout = self.writer.write(named, engine_copies)
            except (OSError, RuntimeError) as err:  # the file could not be created
                self.writer.close()
                layout, warning = None, f"warning: the shared-memory weights file failed ({err})"
            if layout is not None:
                return layout, {"path": "shm", "bytes": layout.nbytes, "warning": None}
            if warning is None:
                what = "the weights file" + (f" and {engine_copies} vLLM engine copies of it" if engine_copies else "")
                warning = self.writer.room.shortage(what)
            warning += "; syncing through Ray's object store instead"
        nbytes = sum(t.numel() * t.element_size() for _, t in named)
        return named, {"path": "object_store", "bytes": nbytes, "warning": warning}

    def close_shared_weights(self) -> None:
        self.writer.close()

    # ---------------------------------------------------------------- vLLM weight transfer

    def start_weight_transfer(self, backend: str, rank: int, rollout_workers: list, tensor_parallel_size: int,
                              dtype: str, address: str, port: int) -> None:
        """Build this rank's sender (rlcurr.rollout.weight_transfer.WeightSender); rank 0 runs the
        rendezvous with every rollout engine here, at `address:port` (its own node)."""
        from rlcurr.rollout.weight_transfer import WeightSender

        self.stop_weight_transfer()
        self.sender = WeightSender(backend, rank=rank, workers=rollout_workers,
                                   tensor_parallel_size=tensor_parallel_size, dtype=dtype, master_address=address,
                                   master_port=port)

    def send_weights(self) -> int:
        """Send the current weights to every engine (they hold them when this returns); the bytes sent."""
        return self.sender.send(self._live_weights())

    def stop_weight_transfer(self) -> None:
        if self.sender is not None:
            self.sender, sender = None, self.sender
            sender.close()

    def _live_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The weights as the learner holds them, not copied: the model's own tensors, on its
        device (FSDP: DTensor shards, gathered one at a time while they are sent); a LoRA model's
        merged weights, built on its device (not moved to the CPU and back)."""
        if self.learner.is_lora:
            return list(merged_lora_state(self.learner.model).items())
        return list(self.learner.model.state_dict().items())

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def save_checkpoint(self, path: str) -> None:
        self.learner.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.learner.load_checkpoint(path)

    def parameter_checksum(self) -> float:
        return self.learner.parameter_checksum()
