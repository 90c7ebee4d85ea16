"""LearnerGroup: `learner.num_workers` LearnerWorker actors trained data-parallel, behind the
synchronous API the trainer uses (train_step, named_weights, checkpoints, checksum).

Variant: plain data parallelism (DDP-style, every rank holds the whole model and optimizer)
over torch.distributed: gloo on CPU, NCCL when CUDA is available, rendezvous over tcp:// at
rank 0's node. The update is exactly the single learner's (see the `Learner` docstring: every
rank gets all samples, computes a contiguous shard, gradients are weighted by the global
denominators and summed). With one worker no process group is created.

GPU placement comes from the caller: `actor_options[rank]` are that actor's Ray `.options()`
(e.g. {"num_gpus": 1} or a placement-group bundle, see `rlcurr.rollout.pool.placement`), so each
rank sees its own device as cuda:0 and NCCL is used. Not exercised here (no GPU in CI).

`learner.strategy: fsdp` shards parameters, gradients and optimizer state over the ranks
instead (FSDP2, see `rlcurr.learner.fsdp`); then gathering weights, checkpoints and checksums
are collectives, so every rank is called and rank 0's result is used.

Left out:
  - Gradient bucketing/overlap: one all-reduce per parameter after the backward passes (DDP).
"""

from __future__ import annotations

import os

import ray

from rlcurr.learner.worker import LearnerWorker
from rlcurr.types import TrainSample


class LearnerGroup:
    def __init__(self, model_path: str, learner_cfg, algo_cfg, total_steps: int, *, dtype: str = "float32",
                 lora_cfg=None, seed: int = 0, actor_options: list[dict] | None = None, temperature: float = 1.0,
                 response_limit: int | None = None, cpu_threads: int | None = None):
        """`temperature` (the rollout's sampling temperature) and `response_limit` (the generation
        limit, Dr.GRPO's normaliser) go to every rank's `Learner`. `cpu_threads`: the cores the
        ranks share (default all of the node's)."""
        n = learner_cfg.num_workers
        self.collective = getattr(learner_cfg, "strategy", "ddp") == "fsdp"  # gathers need every rank
        threads = max(1, (cpu_threads or os.cpu_count() or 1) // n)  # share the cores between the ranks
        # Same seed everywhere: identical LoRA init and identical mini-batch shuffles on every rank.
        self.workers = [
            LearnerWorker.options(**(actor_options[rank] if actor_options else {})).remote(
                model_path, learner_cfg, algo_cfg, total_steps, dtype=dtype, lora_cfg=lora_cfg, seed=seed,
                threads=threads, temperature=temperature, response_limit=response_limit)
            for rank in range(n)]
        self.transfer_ranks: list = []  # the ranks in vLLM's weight transfer (start_weight_transfer)
        if n > 1:
            addr, port = ray.get(self.workers[0].rendezvous_address.remote())
            ray.get([w.init_process_group.remote(rank, n, addr, port) for rank, w in enumerate(self.workers)])

    def train_step(self, samples: list[TrainSample], step: int, **kwargs) -> dict[str, float]:
        """Every rank gets the whole batch (it shards the work itself); metrics agree, rank 0's returned."""
        return self.result(self.submit_train_step(samples, step, **kwargs))

    def submit_train_step(self, samples: list[TrainSample], step: int, **kwargs) -> list[ray.ObjectRef]:
        """`train_step` without waiting: the ranks start now, `result(refs)` collects rank 0's
        metrics. The asynchronous trainer generates the next batches meanwhile."""
        ref = ray.put(samples)
        return [w.train_step.remote(ref, step, **kwargs) for w in self.workers]

    @staticmethod
    def result(refs: list[ray.ObjectRef]) -> dict[str, float]:
        return ray.get(refs)[0]

    def _rank0(self, method: str, *args):
        """Rank 0's answer; under FSDP every rank joins (the call is a collective)."""
        workers = self.workers if self.collective else self.workers[:1]
        return ray.get([getattr(w, method).remote(*args) for w in workers])[0]

    def named_weights(self):
        return self._rank0("named_weights")

    def weights_ref(self, shared: bool = False, engine_copies: int = 0) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        """Rank 0's named weights as an object reference, not fetched: rollout workers resolve it
        straight from the learner actor's object store, with no copy through the driver. With
        `shared` (every engine on rank 0's node), the reference holds only the layout of the
        shared-memory file rank 0 wrote them to (rlcurr.rollout.shared_weights), when /dev/shm has
        room for it and for the `engine_copies` copies engines write next to it. Also a reference
        to a small dict saying which it was (see `LearnerWorker.engine_weights`)."""
        workers = self.workers if self.collective else self.workers[:1]
        pairs = [w.engine_weights.remote(shared, engine_copies) for w in workers]
        ray.wait([ref for pair in pairs for ref in pair], num_returns=2 * len(pairs))  # FSDP: the collective is over
        return pairs[0]

    def close_shared_weights(self) -> None:
        """Remove the shared-memory weights file (end of a run; a killed run's file is removed
        by the next run on the node)."""
        ray.get([w.close_shared_weights.remote() for w in self.workers])

    def start_weight_transfer(self, backend: str, rollout_workers: list, tensor_parallel_size: int, dtype: str) -> None:
        """Join every rollout engine in vLLM's weight transfer (rlcurr.rollout.weight_transfer);
        `dtype`: the engines' dtype, the one the weights are sent in. Rank 0 sends; the other ranks
        take part where the send is a collective for them too (FSDP gathers, ipc handles)."""
        every = self.collective or backend == "ipc"
        self.transfer_ranks = self.workers if every else self.workers[:1]
        addr, port = ray.get(self.workers[0].rendezvous_address.remote())
        ray.get([w.start_weight_transfer.remote(backend, rank, rollout_workers, tensor_parallel_size, dtype, addr, port)
                 for rank, w in enumerate(self.transfer_ranks)])

    def send_weights(self) -> int:
        """Rank 0's weights into every engine (they hold them when this returns); the bytes sent."""
        if not self.transfer_ranks:
            raise RuntimeError("send_weights before start_weight_transfer")
        return ray.get([w.send_weights.remote() for w in self.transfer_ranks])[0]

    def stop_weight_transfer(self) -> None:
        ray.get([w.stop_weight_transfer.remote() for w in self.transfer_ranks])
        self.transfer_ranks = []

    def dead_ranks(self, timeout_s: float) -> list[int]:
        """The ranks that do not answer within `timeout_s` (dead, or on a node that was lost)."""
        calls = [w.node_id.remote() for w in self.workers]
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=timeout_s)
        dead = []
        for rank, call in enumerate(calls):
            try:
                if call not in ready:
                    raise TimeoutError
                ray.get(call)
            except (ray.exceptions.RayError, TimeoutError):
                dead.append(rank)
        return dead

    def save_checkpoint(self, path: str) -> None:
        self._rank0("save_checkpoint", path)  # DDP: ranks hold identical state; FSDP: rank 0 writes

    def load_checkpoint(self, path: str) -> None:
        ray.get([w.load_checkpoint.remote(path) for w in self.workers])

    def parameter_checksum(self) -> float:
        return self._rank0("parameter_checksum")

    def parameter_checksums(self) -> list[float]:
        """One per rank; equal while the ranks stay in step (FSDP: all of the full weights)."""
        return ray.get([w.parameter_checksum.remote() for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
