"""Run by tests/test_cluster.py as a driver of a multi-node cluster (RAY_ADDRESS): two learner ranks,
rank 0 on the node with resource `ddp_a`, rank 1 on the node with `ddp_b`, take the single
learner's step (the equality of tests/test_ddp.py and tests/test_fsdp.py, across nodes: gloo
over the nodes' addresses). Prints one JSON line per strategy: the ranks' nodes, the largest
weight difference to the single learner, whether the weights moved."""

import json
import sys
import tempfile
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).parent))

from rlcurr.cluster import role_options  # noqa: E402
from rlcurr.config import AlgoConfig, LearnerConfig, TinyModelConfig  # noqa: E402
from rlcurr.learner.group import LearnerGroup  # noqa: E402
from rlcurr.learner.learner import Learner  # noqa: E402
from rlcurr.learner.models import build_tiny_model  # noqa: E402
from test_ddp import _max_weight_diff, _samples  # noqa: E402


def across_nodes(model_dir: str, strategy: str) -> dict:
    algo = AlgoConfig(loss_agg="token-mean", micro_batch_size=2, epochs=1, mini_batches=1)
    cfg = LearnerConfig(lr=1e-3, num_workers=2, strategy=strategy)
    single = Learner(model_dir, LearnerConfig(lr=1e-3), algo, 10)
    group = LearnerGroup(model_dir, cfg, algo, 10, actor_options=[role_options("ddp_a"), role_options("ddp_b")],
                         cpu_threads=2)
    try:
        before = dict(group.named_weights())
        for t, batch in enumerate([_samples(), _samples()[1:4]]):
            single.train_step(batch, t)
            group.train_step(batch, t)
        after = dict(group.named_weights())
        nodes = ray.get([w.node_id.remote() for w in group.workers])
        return {"nodes": nodes, "max_weight_diff": _max_weight_diff(after, single),
                "changed": any(not torch.equal(after[n], before[n]) for n in after)}
    finally:
        group.shutdown()


def main() -> None:
    ray.init(logging_level="ERROR", log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
                                         Path(tmp), seed=0))
        print(json.dumps({s: across_nodes(model_dir, s) for s in ("ddp", "fsdp")}))


if __name__ == "__main__":
    main()
