"""RunLogger on resume: TensorBoard purges the steps after the checkpoint, W&B continues the same run."""

import sys
from types import SimpleNamespace

import pytest

from rlcurr.logging import RunLogger


def _cfg(tensorboard=False, wandb=None):
    return SimpleNamespace(name="t", logging=SimpleNamespace(tensorboard=tensorboard, wandb=wandb, progress=False),
                           model_dump=lambda mode: {"name": "t"})


def _log(logger, steps, offset=0.0):
    for t in steps:
        logger.record(t, {"step": t, "reward/mean": offset + t}, {"step": t})
    logger.close()


def test_tensorboard_resume_purges_steps_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = RunLogger(tmp_path, _cfg(tensorboard=True))
    first.record_eval({"eval/accuracy_mean": 0.5})
    _log(first, range(5))  # steps 0-4 logged, but the last checkpoint is step 2: the run resumes at 3
    _log(RunLogger(tmp_path, _cfg(tensorboard=True), resume_step=3), range(3, 6), offset=10)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("reward/mean")
    assert [e.step for e in events] == [0, 1, 2, 3, 4, 5]  # each step once
    assert [e.value for e in events] == [0, 1, 2, 13, 14, 15]  # the resumed process's values
    assert [e.step for e in acc.Scalars("eval/accuracy_mean")] == [-1]


class _FakeWandb:
    def __init__(self):
        self.inits = []

    def init(self, **kw):
        self.inits.append(kw)
        return SimpleNamespace(log=lambda *a, **k: None, finish=lambda: None)


def test_wandb_resume_continues_the_same_run(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)  # no network, no wandb service
    wandb_cfg = SimpleNamespace(project="p", mode="offline")
    _log(RunLogger(tmp_path, _cfg(wandb=wandb_cfg)), range(2))
    _log(RunLogger(tmp_path, _cfg(wandb=wandb_cfg), resume_step=2), range(2, 4))
    fresh, resumed = fake.inits
    stored = (tmp_path / "wandb_run_id").read_text().strip()
    assert stored and fresh["id"] == stored and "resume" not in fresh
    assert resumed["id"] == stored and resumed["resume"] == "allow"
    # a new run in another directory gets another id
    other = tmp_path / "other"
    other.mkdir()
    RunLogger(other, _cfg(wandb=wandb_cfg)).close()
    assert fake.inits[-1]["id"] != stored
