"""Actor faults: a rollout worker that dies is replaced, gets the synced weights, and its share is retried."""

import json
import threading
from pathlib import Path

import pytest

from rlcurr.config import TinyModelConfig, load_config
from rlcurr.learner.models import build_tiny_model, load_causal_lm
from rlcurr.rollout.hf_engine import HFEngine
from rlcurr.rollout.pool import RolloutPool, RolloutWorkerFailure, split_even
from rlcurr.types import GenRequest

ROOT = Path(__file__).resolve().parent.parent
SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_models")
    return build_tiny_model(SMALL, root / "a", seed=0), build_tiny_model(SMALL, root / "b", seed=1)


def _pool(model_dir, num_workers=2, max_restarts=3):
    from rlcurr.rollout.worker import RolloutWorker

    def make(i):
        return RolloutWorker.remote("hf", str(model_dir), dtype="float32", seed=i, threads=1)

    return RolloutPool(make, num_workers, max_restarts=max_restarts, log=lambda *_: None)


# four distinct prompts of one length (no padding): shares [0, 1] -> worker 0, [2, 3] -> worker 1
REQUESTS = [GenRequest([5 + i, 20, 30 + i], n=1, max_tokens=8, temperature=0.0) for i in range(4)]


def _greedy(engine_out):
    """(tokens, logprobs) per request. A random tiny model tends to repeat its last prompt token
    whatever its weights, so the logprobs are what tell two weight sets apart."""
    return [(group[0].token_ids, group[0].logprobs) for group in engine_out]


def _same(xs, ys, tol=1e-5):
    return all(tx == ty and max(abs(p - q) for p, q in zip(lx, ly)) <= tol for (tx, lx), (ty, ly) in zip(xs, ys))


def test_split_even_is_contiguous_and_complete():
    assert split_even(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert split_even([1], 3) == [[1], [], []]
    assert split_even([], 2) == [[], []]


def test_killed_worker_is_replaced_with_the_synced_weights(ray_session, models):
    a, b = models
    pool = _pool(a)
    try:
        # what each worker's share must give with model b's weights, batched as the pool batches it
        ref = HFEngine(str(b), seed=0)
        want = [ids for share in split_even(REQUESTS, 2) for ids in _greedy(ref.generate(share))]
        with_a = _greedy(HFEngine(str(a), seed=0).generate(REQUESTS[2:]))
        assert not _same(with_a, want[2:], tol=1e-3)  # so a replacement still holding model a would be caught

        pool.load_weights(load_causal_lm(b).state_dict().items())
        ray_session.kill(pool.workers[1])
        got = _greedy(pool.generate(REQUESTS))

        assert _same(got, want)  # every answer, in request order, the dead worker's share with b's weights
        assert pool.restarts == 1
        assert _same(_greedy(pool.generate(REQUESTS)), want)  # the replacement keeps serving
        assert pool.restarts == 1

        pool.max_restarts = 0  # a crash loop is a bug: past the limit the pool gives up, loudly
        ray_session.kill(pool.workers[0])
        with pytest.raises(RolloutWorkerFailure, match="max_restarts=0"):
            pool.generate(REQUESTS)
    finally:
        pool.shutdown()


def test_weights_loaded_without_waiting_serve_the_next_generate(ray_session, models):
    """`load_weights(wait=False)` returns at once; each worker loads before its next call, so the
    next generate already answers with the new weights, and a load that fails is raised there
    (not lost)."""
    a, b = models
    pool = _pool(a)
    try:
        want = [ids for share in split_even(REQUESTS, 2) for ids in _greedy(HFEngine(str(b), seed=0).generate(share))]
        pool.load_weights(load_causal_lm(b).state_dict().items(), wait=False)
        assert len(pool.loading) == 2  # submitted, not waited for
        assert _same(_greedy(pool.generate(REQUESTS)), want)
        assert pool.loading == {}
        pool.load_weights([("model.embed_tokens.weight", load_causal_lm(b).state_dict()["model.embed_tokens.weight"])],
                          wait=False)  # most weights missing: the engine refuses them
        with pytest.raises(Exception, match="weights missing"):
            pool.generate(REQUESTS)
    finally:
        pool.shutdown()


STEPS, KILL_AT = 5, 2


def test_training_survives_a_worker_killed_mid_run(ray_session, tmp_path):
    from rlcurr.trainer import Trainer

    cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [
        f"trainer.output_dir={tmp_path / 'run'}", f"trainer.steps={STEPS}", "trainer.prompts_per_step=4",
        "rollout.n=4", "rollout.num_workers=1", "model.warmup.steps=0", "eval.every=0", "env.eval_size=4",
        "logging.progress=false", "logging.tensorboard=false"])
    trainer = Trainer(cfg, log=lambda *_: None)
    first = trainer.start()
    step = trainer.step

    def step_with_a_kill(t):
        if t == KILL_AT:  # shortly after the step starts: during its rollout, or at the latest its sync
            victim = trainer.rollout_workers[0]
            threading.Timer(0.05, lambda: ray_session.kill(victim)).start()
        return step(t)

    trainer.step = step_with_a_kill
    try:
        trainer.train(first)
    finally:
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(-1, STEPS))
    restarts = [r["rollout/restarts"] for r in rows if r["step"] >= 0]
    assert restarts[:KILL_AT] == [0] * KILL_AT
    assert restarts[-1] == 1
