"""rlcurr.checkpoint: atomic saves, retention, fallback past damaged checkpoints, JSONL truncation, RNG."""

import json
import random

import numpy as np
import pytest

from rlcurr.checkpoint import (
    COMPLETE,
    find_latest_checkpoint,
    list_checkpoints,
    load_state,
    rng_state,
    save_checkpoint,
    save_state,
    set_rng_state,
    truncate_jsonl,
)
from rlcurr.errors import UserError


def writer(step):
    def write(folder):
        save_state(folder / "trainer_state.json", {"step": step})
        (folder / "weights.bin").write_bytes(b"x" * 10)
    return write


def names(run_dir):
    return [p.name for p in list_checkpoints(run_dir)]


def test_save_atomic_and_keep(tmp_path):
    for s in range(5):
        out = save_checkpoint(tmp_path, s, writer(s), keep=2)
        assert out == tmp_path / "checkpoints" / f"step_{s}"
        assert (out / COMPLETE).is_file() and json.loads((out / COMPLETE).read_text()) == {"step": s}
    assert names(tmp_path) == ["step_3", "step_4"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_3", "step_4"]  # no tmp left
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_4"
    assert load_state(tmp_path / "checkpoints" / "step_4" / "trainer_state.json") == {"step": 4}


def test_failed_write_leaves_previous(tmp_path):
    save_checkpoint(tmp_path, 1, writer(1), keep=2)

    def boom(folder):
        (folder / "partial").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 2, boom, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_1"]
    assert find_latest_checkpoint(tmp_path).name == "step_1"


def test_resave_same_step_and_stale_later(tmp_path):
    for s in (1, 2, 3):
        save_checkpoint(tmp_path, s, writer(s), keep=5)
    save_checkpoint(tmp_path, 2, writer(20), keep=5)  # resumed from 2: step 3 is an abandoned timeline
    assert names(tmp_path) == ["step_1", "step_2"]
    assert load_state(tmp_path / "checkpoints" / "step_2" / "trainer_state.json") == {"step": 20}


@pytest.mark.parametrize("damage", ["no_marker", "bad_json", "no_state"])
def test_fallback_past_damaged_newest(tmp_path, damage):
    for s in (1, 2):
        save_checkpoint(tmp_path, s, writer(s), keep=3)
    newest = tmp_path / "checkpoints" / "step_2"
    if damage == "no_marker":
        (newest / COMPLETE).unlink()
    elif damage == "bad_json":
        (newest / "trainer_state.json").write_text('{"step": 2')
    else:
        (newest / "trainer_state.json").unlink()
    (tmp_path / "checkpoints" / ".tmp-step_3").mkdir()  # a crashed save is never picked
    skipped = []
    with pytest.warns(RuntimeWarning, match="step_2"):
        found = find_latest_checkpoint(tmp_path, skipped=skipped)
    assert found == tmp_path / "checkpoints" / "step_1"
    assert len(skipped) == 1 and "step_2" in skipped[0]


def test_find_none(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 0, lambda folder: None, keep=1)  # no trainer_state.json
    with pytest.warns(RuntimeWarning):
        assert find_latest_checkpoint(tmp_path) is None
    assert find_latest_checkpoint(tmp_path, state_file=None) == tmp_path / "checkpoints" / "step_0"


def test_state_roundtrip_and_errors(tmp_path):
    save_state(tmp_path / "s.json", {"a": [1, 2], "b": None})
    assert load_state(tmp_path / "s.json") == {"a": [1, 2], "b": None}
    with pytest.raises(UserError, match="missing"):
        load_state(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_state(tmp_path / "bad.json")


def test_truncate_jsonl(tmp_path):
    p = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "v": s}) for s in (-1, 0, 1, 2, 3, 4)]
    p.write_text("\n".join(lines) + "\n" + '{"step": 5, "v"')  # cut off by a crash
    assert truncate_jsonl(p, 2) == 3
    assert [json.loads(l)["step"] for l in p.read_text().splitlines()] == [-1, 0, 1, 2]
    assert p.read_text().endswith("\n")
    assert truncate_jsonl(p, -1) == 3
    assert [json.loads(l)["step"] for l in p.read_text().splitlines()] == [-1]
    assert truncate_jsonl(tmp_path / "absent.jsonl", 3) == 0 and not (tmp_path / "absent.jsonl").exists()
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left


def test_rng_roundtrip(tmp_path):
    torch = pytest.importorskip("torch")
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    save_state(tmp_path / "rng.json", state)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_state(tmp_path / "rng.json"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_trainer_restore_loads_the_step_it_is_given(tmp_path):
    """Trainer._restore(step) restores checkpoints/step_<step>, not whichever one was found last."""
    from types import SimpleNamespace

    from rlcurr.trainer import Trainer

    for s in (2, 5):
        save_checkpoint(tmp_path, s, lambda folder, s=s: save_state(
            folder / "trainer_state.json", {"step": s, "curriculum": {"s": s}, "rewards": {"rm": {"s": s}}, "rng": {},
            "rollout_rng": [[s]]}), keep=3)
    loaded = {}
    stub = SimpleNamespace(
        run_dir=tmp_path, log=lambda *_: None,
        _resume_ckpt=tmp_path / "checkpoints" / "step_5",  # what HEAD's _resume_point left behind
        learner=SimpleNamespace(load_checkpoint=lambda p: loaded.setdefault("learner", p)),
        controller=SimpleNamespace(load_state_dict=lambda sd: loaded.setdefault("curriculum", sd)),
        rewards=SimpleNamespace(load_state_dict=lambda sd: loaded.setdefault("rewards", sd)),
        rollout_pool=SimpleNamespace(set_rng_state=lambda st: loaded.setdefault("rollout_rng", st)))
    Trainer._restore(stub, 2)
    assert loaded == {"learner": str(tmp_path / "checkpoints" / "step_2"), "curriculum": {"s": 2},
                      "rewards": {"rm": {"s": 2}}, "rollout_rng": [[2]]}
    with pytest.raises(UserError, match="step_3"):
        Trainer._restore(stub, 3)  # no such checkpoint: a clean error naming it
