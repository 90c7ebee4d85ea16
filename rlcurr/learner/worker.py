"""LearnerWorker: a Ray actor that holds one `Learner`. No logic lives here: its arguments
(including `temperature` and `response_limit`) are the Learner's."""

from __future__ import annotations

import atexit
import os
import socket
import time

import ray
import torch

from rlcurr.learner.learner import Learner
from rlcurr.rollout.shared_weights import SharedWeightsWriter
from rlcurr.types import TrainSample


@ray.remote(num_cpus=0)
class LearnerWorker:
    def __init__(self, *args, threads: int | None = None, **kwargs):
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.learner = Learner(*args, **kwargs)
        self.writer = SharedWeightsWriter()
        atexit.register(self.writer.close)

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

    def shared_weights(self):
        """The weights for engines on this node: written to the shared-memory file, returning its
        layout (rlcurr.rollout.shared_weights); the named tensors themselves when /dev/shm cannot
        hold them. FSDP: collective, ranks other than 0 return None."""
        named = self.learner.named_weights(clone=False)  # the write below is the copy
        if not named:
            return None
        try:
            return self.writer.write(named)
        except (OSError, RuntimeError):  # no /dev/shm, or full: the object store carries them
            self.writer.close()
            return named

    def close_shared_weights(self) -> None:
        self.writer.close()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def save_checkpoint(self, path: str) -> None:
        self.learner.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.learner.load_checkpoint(path)

    def parameter_checksum(self) -> float:
        return self.learner.parameter_checksum()
