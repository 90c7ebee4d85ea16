"""FSDP start-up under the device rules NCCL imposes, proven on CPU with gloo.

Under NCCL (the GPU backend) a collective accepts only tensors on the GPU; `learner.strategy:
fsdp` keeps the model on the host until `fully_shard` moves each rank's shards to its GPU, so a
collective on a parameter before sharding raises "No backend type associated with device type
cpu". On this machine every tensor is on the CPU and gloo takes them all, so the test marks the
tensors that would be on the host under NCCL (the parameters as loaded, before sharding) and
fails any tensor collective that receives one, with NCCL's message. It runs the real learner
code in two processes over gloo, in bf16 mixed precision (the GPU recipes' setting): start-up,
one training step and the weight gather; and it checks that shared prompts and packing stay on
for the sharded model. What only a GPU confirms: NCCL itself and the shards
landing on cuda (`rlcurr doctor` runs the FSDP step there).
"""

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig
from rlcurr.learner.models import build_tiny_model

TENSOR_COLLECTIVES = ("broadcast", "all_reduce", "reduce", "all_gather", "all_gather_into_tensor",
                      "reduce_scatter_tensor", "scatter", "gather")


def _guard_host_tensors(host_storages: set[int]) -> None:
    """Make every tensor collective reject the host tensors, as NCCL does."""
    for name in TENSOR_COLLECTIVES:
        original = getattr(dist, name)

        def guarded(*args, __original=original, **kwargs):
            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, list) for t in a if isinstance(t, torch.Tensor)]
            if any(t.untyped_storage().data_ptr() in host_storages for t in tensors):
                raise RuntimeError("No backend type associated with device type cpu")
            return __original(*args, **kwargs)

        setattr(dist, name, guarded)


def _rank(rank: int, port: int, model_dir: str, results) -> None:
    from rlcurr.learner import batching
    from rlcurr.learner.learner import Learner
    from test_ddp import _samples

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        algo = AlgoConfig(loss_agg="token-mean", micro_batch_size=2, epochs=1, mini_batches=1, kl_coef=0.1)
        learner = Learner(model_dir, LearnerConfig(lr=1e-3, num_workers=2, strategy="fsdp"), algo, 10,
                          dtype="bfloat16")
        # Keep the loaded tensors alive, so their addresses are not reused by later buffers.
        host = [p for m in (learner.model, learner.ref_model) for p in m.parameters()]
        _guard_host_tensors({p.untyped_storage().data_ptr() for p in host})
        learner.join_group()
        # the sharded class is torch's FSDP<Name>: shared prompts and packing must stay on
        shared = batching.shared_prefix_ok(learner.model, 256) and batching.from_transformers(learner.model)
        batch = [dataclasses.replace(s, reward=float(i % 2)) for i, s in enumerate(_samples())]
        metrics = learner.train_step(batch, 0)
        weights = learner.named_weights()
        results[rank] = {"ok": True, "shared_prompts": shared, "loss": metrics["loss"], "weights": len(weights),
                         "dtypes": sorted({str(t.dtype) for _, t in weights})}
    except Exception as e:  # reported to the parent: the test names the failure
        results[rank] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def test_fsdp_starts_without_host_tensors_in_collectives(model_dir):
    tests_dir = os.path.dirname(__file__)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_rank, args=(_free_port(), model_dir, results), nprocs=2, start_method="spawn")
        results = dict(results)
    for rank in (0, 1):
        assert results[rank]["ok"], results[rank]["error"]
    # rank 0 gathers the full weights, in the engines' dtype; the others get none
    assert results[0]["weights"] > 0 and results[0]["dtypes"] == ["torch.bfloat16"]
    assert results[1]["weights"] == 0
    assert results[0]["loss"] == pytest.approx(results[1]["loss"])
    assert results[0]["shared_prompts"] and results[1]["shared_prompts"]
