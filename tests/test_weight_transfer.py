"""Weight sync (rlcurr.rollout.weight_transfer, rlcurr.rollout.shared_weights).

The GPU paths (vLLM's NCCL and CUDA IPC engines) cannot run here. Their CPU stand-in is the
"gloo" backend: vLLM's NCCL engines with a gloo group instead of a NCCL communicator, registered
in vLLM's worker processes, driven through the same control plane as nccl: the learner actor's
sender (vLLM's trainer engine) -> RolloutWorkersClient -> RolloutWorker actors -> VLLMEngine ->
vLLM's collective_rpc -> the worker's weight-transfer engine and vLLM's layerwise reload. The
proof runs a real Trainer with the vLLM CPU engine and checks, after each of 5 syncs, that the
engine's logprobs equal the learner's.

A /dev/shm too small: the vLLM engine's own weight copy with `os.statvfs` patched (the learner's
file: tests/test_shared_weights.py), and a tiny training run under a real 1 MB tmpfs mounted over
/dev/shm in a user namespace (skipped where unprivileged user namespaces are not allowed); the
code before the room check died of SIGBUS there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_shared_weights import _statvfs_with_free

from rlcurr.rollout import shared_weights as SW
from rlcurr.rollout import weight_transfer as WT

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # max |engine logprob - learner logprob| after a sync (fp32 on both sides)


# ---------------------------------------------------------------- choice and metrics


@pytest.mark.parametrize("engine,gpus,colocate,rollout,learner,requested,expected", [
    ("vllm", True, False, 2, 1, "auto", "nccl"),
    ("vllm", True, True, 2, 2, "auto", "ipc"),
    ("vllm", True, True, 2, 1, "auto", None),  # an engine without a learner rank on its GPU
    ("vllm", False, False, 1, 1, "auto", None),  # CPU: files / object store
    ("hf", True, False, 1, 1, "auto", None),
    ("hf", False, False, 1, 1, "gloo", None),  # the HF engine has no weight-transfer engine
    ("vllm", False, False, 1, 1, "gloo", "gloo"),
    ("vllm", True, False, 1, 1, "object_store", None),
])
def test_transfer_backend_choice(engine, gpus, colocate, rollout, learner, requested, expected):
    assert WT.transfer_backend(engine, gpus=gpus, colocate=colocate, num_rollout=rollout, num_learner=learner,
                               requested=requested) == expected


def test_requested_path_is_checked(monkeypatch):
    from rlcurr.errors import UserError

    monkeypatch.setenv(WT.OVERRIDE_ENV, "gloo")
    assert WT.requested_path() == "gloo"
    monkeypatch.setenv(WT.OVERRIDE_ENV, "carrier-pigeon")
    with pytest.raises(UserError, match="carrier-pigeon"):
        WT.requested_path()


def test_sync_metrics_name_one_path():
    m = WT.sync_metrics("nccl", 0.5, 3_000_000_000)
    assert m["sync/path_nccl"] == 1.0 and sum(m[f"sync/path_{p}"] for p in WT.PATHS) == 1.0
    assert m["sync/seconds"] == 0.5 and m["sync/gbytes"] == 3.0
    assert json.loads(json.dumps(m)) == m  # metrics.jsonl and TensorBoard take plain numbers


def test_client_gives_each_rollout_worker_its_own_ranks(monkeypatch):
    calls = []

    class Worker:  # a RolloutWorker handle: .weight_transfer.remote(method, payload)
        def __init__(self, k):
            self.weight_transfer = SimpleNamespace(remote=lambda method, payload: calls.append((k, method, payload)))

    monkeypatch.setattr(WT.ray, "get", lambda refs: refs)
    client = WT.RolloutWorkersClient([Worker(0), Worker(1), Worker(2)], tensor_parallel_size=2)
    client.init_weight_transfer_engine({"master_port": 1, "rank_offset": 1, "world_size": 7})
    client.init_weight_transfer_engine({"packed": False})  # ipc: no ranks
    client.update_weights({"names": ["a"]})
    assert [p["rank_offset"] for _, m, p in calls[:3]] == [1, 3, 5]
    assert [p for _, _, p in calls[3:6]] == [{"packed": False}] * 3
    assert [(k, m) for k, m, _ in calls[6:]] == [(0, "update_weights"), (1, "update_weights"), (2, "update_weights")]


# ---------------------------------------------------------------- the vLLM-side pieces (CPU)

vllm_only = pytest.mark.skipif(not __import__("importlib").util.find_spec("vllm"), reason="vllm not installed")


@vllm_only
def test_chunks_cover_every_tensor_once_in_order():
    from rlcurr.rollout.transfer_engines import _chunks

    sizes = [10, 30, 70, 5, 5, 200, 1]
    chunks = _chunks(sizes, 64)
    assert [list(c) for c in chunks] == [[0, 1], [2], [3, 4], [5], [6]]  # 70 and 200 travel alone
    assert _chunks([], 64) == []


@vllm_only
def test_learner_weights_are_sent_in_the_engine_dtype():
    # an fp32 learner feeding a bf16 engine: metadata and tensors say bf16; integer buffers keep theirs
    from rlcurr.rollout.transfer_engines import LearnerWeights

    source = LearnerWeights(torch.bfloat16, torch.device("cpu"))
    w = torch.randn(3, 4)
    source.set([("w", w), ("steps", torch.arange(3))])
    meta = source.metadata()
    assert [(m.name, m.dtype, m.shape) for m in meta] == [("w", torch.bfloat16, (3, 4)), ("steps", torch.int64, (3,))]
    sent = list(source)
    assert sent[0][1].dtype == torch.bfloat16 and torch.equal(sent[0][1], w.to(torch.bfloat16))
    assert source.nbytes() == 12 * 2 + 3 * 8
    source.clear()
    assert source.metadata() == [] and list(source) == []


def _tiny_run_config(out: Path, *overrides: str):
    from rlcurr.config import load_config

    return load_config(ROOT / "recipes" / "quickstart.yaml", [
        f"trainer.output_dir={out}", "trainer.steps=50", "eval.every=0", "env.eval_size=4", "trainer.save_every=0",
        "trainer.prompts_per_step=4", "rollout.n=4", "model.warmup.steps=0", "logging.progress=false",
        "logging.tensorboard=false", *overrides])


def _max_logprob_diff(trainer, samples) -> float:
    import ray

    learner = ray.get(trainer.learner.workers[0].logprobs.remote(samples))
    return max(abs(a - b) for s, lps in zip(samples, learner) for a, b in zip(s.rollout_logprobs, lps))


def _engine_samples(trainer) -> list:
    """Fresh answers from the rollout engines, with their logprobs, as TrainSamples."""
    from rlcurr.types import GenRequest, TrainSample

    prompts = [trainer.encode(p)[0] for p in trainer.env.train_prompts("add1")[:3]]
    completions = trainer.rollout_pool.generate([GenRequest(ids, n=3, max_tokens=8, temperature=1.0)
                                                 for ids in prompts])
    return [TrainSample(prompt_ids=ids, response_ids=c.token_ids, advantage=0.0, rollout_logprobs=c.logprobs)
            for ids, cs in zip(prompts, completions) for c in cs]


@pytest.fixture(scope="module")
def gloo_run(ray_session, tmp_path_factory):
    """A Trainer with one vLLM rollout worker, weight sync forced to the gloo backend, 5 steps.
    Weights change every step: lr 1e-3 from the first step, and an entropy bonus, whose gradient
    does not vanish with GRPO's all-equal groups (a random model mostly scores 0 on add1)."""
    pytest.importorskip("vllm")
    from rlcurr.trainer import Trainer

    logs: list[str] = []
    out = tmp_path_factory.mktemp("gloo") / "run"
    cfg = _tiny_run_config(out, "rollout.engine=vllm", "rollout.gpu_memory_utilization=0.05", "learner.lr=1e-3",
                           "learner.schedule.warmup_steps=0", "algo.entropy_coef=0.01")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WT.OVERRIDE_ENV, "gloo")
        trainer = Trainer(cfg, log=logs.append)
        t0 = time.perf_counter()
        trainer.start()
    started = time.perf_counter() - t0
    run = SimpleNamespace(trainer=trainer, logs=logs, metrics=[], after_sync=[], stale=[], started_s=started)
    try:
        previous = _engine_samples(trainer)
        for t in range(5):
            run.metrics.append(trainer.step(t))  # trains, then syncs (gloo)
            run.stale.append(_max_logprob_diff(trainer, previous))  # the engine's answers from before the sync
            previous = _engine_samples(trainer)
            run.after_sync.append(_max_logprob_diff(trainer, previous))
        print(f"\ngloo: start {started:.1f} s, max |engine - learner| logprob after syncs 1-5: "
              f"{['%.2e' % d for d in run.after_sync]}; before each sync: {['%.2e' % d for d in run.stale]}")
        yield run
    finally:
        trainer.logger.close()
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()


@vllm_only
def test_gloo_transfer_gives_the_engine_the_learners_weights(gloo_run):
    # after each of 5 syncs the engine's logprobs are the learner's ...
    assert all(d <= TOLERANCE for d in gloo_run.after_sync), gloo_run.after_sync
    # ... and each sync mattered: the answers drawn before it are far off the updated learner
    assert all(d > 100 * TOLERANCE for d in gloo_run.stale), gloo_run.stale
    for m in gloo_run.metrics:
        assert m["sync/path_gloo"] == 1.0 and m["sync/path_shm"] == m["sync/path_object_store"] == 0.0
        assert 3e-3 < m["sync/gbytes"] < 4e-3 and m["sync/seconds"] > 0  # the 0.9M-parameter model in fp32
    # the learner's own check on the trained answers (steps 1-4 were generated after syncs 1-4)
    assert all(m["rollout/logprob_abs_diff_max"] <= TOLERANCE for m in gloo_run.metrics[1:])
    assert not [line for line in gloo_run.logs if "warning" in line], gloo_run.logs


@vllm_only
def test_replaced_rollout_worker_leaves_the_group_for_files(gloo_run):
    # Runs after the test above on the same run. A transfer group has fixed members: after a
    # restart the trainer says so once and syncs through the shared-memory file; the replacement
    # started with the learner's current weights, and every engine keeps matching the learner.
    import ray

    trainer = gloo_run.trainer
    ray.kill(trainer.rollout_pool.workers[0])
    metrics = [trainer.step(5), trainer.step(6)]  # step 5's generation replaces the worker
    assert trainer.rollout_pool.restarts == 1
    assert metrics[0]["rollout/logprob_abs_diff_max"] <= TOLERANCE  # the replacement's answers
    assert [m["sync/path_shm"] for m in metrics] == [1.0, 1.0]
    assert [m["sync/path_gloo"] for m in metrics] == [0.0, 0.0]
    assert _max_logprob_diff(trainer, _engine_samples(trainer)) <= TOLERANCE
    left = [line for line in gloo_run.logs if "leaving vLLM weight transfer" in line]
    assert len(left) == 1 and "replaced" in left[0], gloo_run.logs


# ---------------------------------------------------------------- /dev/shm too small


def _named():
    return [("a.weight", torch.randn(256, 256)), ("b.bias", torch.randn(256))]  # 263,168 bytes


def test_vllm_engine_weight_copy_falls_back_to_the_regular_temp_dir(tmp_path, monkeypatch):
    # VLLMEngine.load_weights with its engine core in other processes writes a safetensors copy;
    # a stub stands in for vLLM (the reload from a directory is the same call wherever it is).
    pytest.importorskip("safetensors")
    from rlcurr.rollout.vllm_engine import VLLMEngine

    reloaded = []

    class LLM:
        def collective_rpc(self, method, kwargs):
            assert method == "reload_weights"
            reloaded.append(Path(kwargs["weights_path"]).parent)
            assert (Path(kwargs["weights_path"]) / "model.safetensors").is_file()

        def reset_prefix_cache(self):
            pass

    engine = object.__new__(VLLMEngine)
    engine.llm, engine.tied, engine.in_process, engine.copy_warned = LLM(), False, False, False
    shm, regular = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    regular.mkdir()
    monkeypatch.setenv(SW.SHM_DIR_ENV, str(shm))
    monkeypatch.setattr("tempfile.tempdir", str(regular))
    assert engine.load_weights(_named()) is None and reloaded[-1] == shm  # room: shared memory
    monkeypatch.setattr(os, "statvfs", _statvfs_with_free(SW.SHM_HEADROOM))
    warning = engine.load_weights(_named())
    assert reloaded[-1] == regular and str(shm) in warning and str(regular) in warning
    assert engine.load_weights(_named()) is None and reloaded[-1] == regular  # said once


SMALL_SHM_RUN = textwrap.dedent("""
    import json, sys
    import ray
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_weight_transfer import _tiny_run_config
    from rlcurr.trainer import Trainer

    out = Path(sys.argv[1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    trainer = Trainer(_tiny_run_config(out, "trainer.steps=3"), log=lambda line: print("LOG", line, flush=True))
    trainer.train(trainer.start())
    ray.shutdown()
""")


def test_tiny_run_with_a_1mb_dev_shm_syncs_through_the_object_store(tmp_path):
    # Docker gives 64 MB of /dev/shm; here 1 MB, below the 3.5 MB of weights. Before the room
    # check the learner actor died of SIGBUS in the first sync (exit 135) and the run failed.
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged user namespaces here: cannot mount a small tmpfs over /dev/shm")
    script = tmp_path / "run.py"
    script.write_text(SMALL_SHM_RUN.format(tests=str(ROOT / "tests")))
    out = tmp_path / "run"
    env = {**os.environ, "RLCURR_CACHE": os.environ.get("RLCURR_CACHE", str(tmp_path / "cache")),
           "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" "$@"',
                           sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["step"] >= 0]
    assert [r["step"] for r in train] == [0, 1, 2]
    assert all(r["sync/path_object_store"] == 1.0 and r["sync/path_shm"] == 0.0 for r in train)
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("LOG warning: shared memory")]
    assert len(warnings) == 1, proc.stdout
    assert "/dev/shm has " in warnings[0] and "bytes free" in warnings[0] and "needs " in warnings[0]
    assert "object store" in warnings[0]
