"""reward.workers: rule rewards in Ray actors (rlcurr.rewards.workers), through real Ray, nothing mocked.

Same scores as in the driver (built-ins, user files, user modules, a name a user module
registers, async); a hung call is killed at reward.timeout_s -- its process is gone, the driver
has no extra thread, the run goes on (none) or stops with the in-process error (raise); a worker
killed mid-call is replaced and the call completes; a short Trainer run with two workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from rlcurr.config import RewardConfig, RewardSpec, apply_overrides, build_config, load_yaml
from rlcurr.errors import UserError
from rlcurr.rewards.runner import RewardRunner
from rlcurr.rewards.workers import RewardExecutor, RewardRef

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
import asyncio, os, time

def length(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]

def pid(prompts, completions, **kwargs):
    return [float(os.getpid())] * len(completions)

def hangs(prompts, completions, **kwargs):
    """ "hang" sleeps forever; "trap" too when alone, in a batch it raises; "boom" raises;
    "slow" takes 1 s; anything else scores 1."""
    if len(completions) > 1 and "trap" in completions:
        raise ValueError("trap in the batch")
    for c in completions:
        if c == "boom":
            raise ValueError("boom")
        if c == "slow":
            time.sleep(1)
    if "hang" in completions or "trap" in completions:
        time.sleep(10_000)
    return [1.0] * len(completions)

async def async_match(prompts, completions, answer, **kwargs):
    await asyncio.sleep(0.01)
    return [float(c == a) for c, a in zip(completions, answer)]
'''

REGISTERING = '''
from rlcurr.rewards.registry import register

@register("{name}")
def starts_with_one(prompts, completions, **kwargs):
    return [float(c.startswith("1")) for c in completions]
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plugin file (referenced by file path), a module of it on sys.path (by module path) and
    a module that registers a short name; returns (file reference prefix, module name, short name)."""
    (tmp_path / "plug.py").write_text(PLUGIN)
    mod, reg = f"rw_plug_{uuid.uuid4().hex[:8]}", f"rw_starts_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(PLUGIN)
    (tmp_path / f"{mod}_reg.py").write_text(REGISTERING.format(name=reg))
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(f"{mod}_reg")  # user code registered `reg` in the driver
    return f"{tmp_path / 'plug.py'}:", mod, reg


@pytest.fixture
def runners():
    """Make runners; every pool is shut down after the test (their CPUs are the session's 2)."""
    made = []

    def make(names, workers=2, on_error="raise", timeout_s=10.0, log=None, params=None, pool=None):
        specs = [RewardSpec(name=n, params=(params or {}).get(n, {})) for n in names]
        r = RewardRunner(specs, RewardConfig(workers=workers, timeout_s=timeout_s, on_error=on_error),
                         log=log or (lambda *_: None), pool=pool)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _gone(pid: int, within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def test_executor_without_ray(plugin):
    file, _, _ = plugin
    ex = RewardExecutor()
    refs = {ref.key: ref for ref in (RewardRef.of(file + "length"), RewardRef.of(file + "hangs"))}
    assert ex.prepare(refs) == os.getpid()
    keys = list(refs)
    assert ex.call(keys[0], {"prompts": ["q"], "completions": ["abc"]}) == ("ok", [3.0])
    kind, described = ex.call(keys[1], {"prompts": ["q"], "completions": ["boom"]})
    assert kind == "error" and described.startswith("ValueError: boom (at ") and "plug.py:" in described


def test_same_scores_as_in_process(ray_session, runners, plugin):
    file, mod, reg = plugin
    names = ["exact_match", "length_budget", "format", file + "length", f"{mod}:async_match", reg]
    params = {"length_budget": {"penalty": 0.5}}
    n = 9
    completions = [str(i % 3) for i in range(n - 2)] + ["<think>x</think><answer>1</answer>", "12345"]
    cols = {"answer": ["1"] * n, "budget": [4] * n, "num_tokens": list(range(n))}
    local = runners(names, workers=0, params=params).score(["q"] * n, completions, cols)
    remote_runner = runners(names, workers=2, params=params)
    remote = remote_runner.score(["q"] * n, completions, cols)
    assert remote == local
    assert local.parts[reg][:3] == [0.0, 1.0, 0.0] and local.parts["length_budget"][-1] == -0.5
    # computed in the two workers, each on its contiguous share (5 + 4)
    pids = runners([file + "pid"], pool=remote_runner.pool).score(["q"] * n, completions, cols).parts[file + "pid"]
    assert len(set(pids[:5])) == len(set(pids[5:])) == 1 and pids[0] != pids[5] and os.getpid() not in pids


def test_hung_call_is_killed_and_the_run_goes_on(ray_session, runners, plugin):
    file, _, _ = plugin
    logs = []
    r = runners([file + "hangs", "exact_match"], on_error="none", timeout_s=1.0, log=logs.append)
    r.start()
    old_pid, old_actor, threads = r.pool.pids[1], r.pool.workers[1], threading.active_count()
    t0 = time.monotonic()
    s = r.score(["q"] * 4, ["1", "2", "3", "hang"], {"answer": ["1"] * 4})
    assert time.monotonic() - t0 < 5
    # the second share (samples 2-3) timed out as a batch: both None, both counted
    assert s.parts[file + "hangs"] == [1.0, 1.0, None, None] and s.parts["exact_match"] == [1.0, 0.0, 0.0, 0.0]
    assert (s.num_timeouts, s.num_errors, s.failed) == (2, 0, [False, False, True, True])
    assert _gone(old_pid) and r.pool.pids[1] != old_pid and r.pool.restarts == 1
    with pytest.raises(Exception, match="(?i)actor"):  # the killed actor is dead for Ray too
        import ray

        ray.get(old_actor.prepare.remote({}), timeout=10)
    assert threading.active_count() <= threads  # nothing left running in the driver (others may end meanwhile)
    assert logs[0] == "warning: reward worker 1 timed out after 1 s; killed it, starting a replacement"
    # isolation: the share that raised is re-run one sample at a time; "trap" alone times out
    old_pid = r.pool.pids[0]
    s = r.score(["q"] * 4, ["1", "trap", "1", "1"], {"answer": ["1"] * 4})
    assert s.parts[file + "hangs"] == [1.0, None, 1.0, 1.0] and (s.num_timeouts, s.num_errors) == (1, 0)
    assert _gone(old_pid) and r.pool.restarts == 2
    assert r.score(["q"] * 2, ["1", "1"], {"answer": ["1"] * 2}).totals == [2.0, 2.0]  # the replacements score
    pids = list(r.pool.pids)
    assert sorted(_worker_processes()) == sorted(pids)
    r.close()
    assert all(_gone(p) for p in pids) and r.pool.workers == [] and _no_worker_processes()


def test_raise_policy_is_the_in_process_one(ray_session, runners, plugin):
    file, _, _ = plugin
    r = runners([file + "hangs"], timeout_s=1.0)
    with pytest.raises(UserError, match=r"'.*hangs' timed out after 1 s on samples 2-3 of a batch of 4"):
        r.score(["q"] * 4, ["1", "2", "3", "hang"], {})
    r.close()
    # an error is reported exactly as in the driver: function, sample, exception and where
    messages = []
    for workers in (0, 2):
        r = runners([file + "hangs"], workers=workers)
        with pytest.raises(UserError) as err:
            r.score(["q"] * 4, ["1", "2", "boom", "1"], {})
        r.close()  # one pool at a time: the session has 2 CPUs
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "hangs' failed on sample 2: ValueError: boom (at " in messages[0]


def test_worker_killed_mid_call_is_replaced_and_the_call_completes(ray_session, runners, plugin):
    file, _, _ = plugin
    logs = []
    r = runners([file + "hangs"], log=logs.append)
    r.start()
    victim = r.pool.pids[1]
    killer = threading.Timer(0.4, os.kill, (victim, signal.SIGKILL))
    killer.start()
    s = r.score(["q"] * 4, ["1", "1", "slow", "1"], {})
    killer.join()
    assert s.parts[file + "hangs"] == [1.0] * 4 and s.num_errors == s.num_timeouts == 0
    assert r.pool.restarts == 1 and r.pool.pids[1] != victim
    assert logs[0].startswith("warning: reward worker 1 died (") and logs[0].endswith("retrying its call")
    assert logs[1].startswith("reward worker 1 replaced in ")


def test_trainer_run_with_two_reward_workers(ray_session, tmp_path, plugin):
    from rlcurr.trainer import Trainer

    file, _, _ = plugin
    data = load_yaml(ROOT / "recipes" / "quickstart.yaml")
    data["name"] = "quickstart"
    data = apply_overrides(data, [
        f"trainer.output_dir={tmp_path / 'run'}", "model.warmup.steps=0", "model.tiny.hidden_size=32",
        "model.tiny.num_layers=1", "model.tiny.intermediate_size=64", "rollout.n=4", "trainer.steps=2",
        "trainer.prompts_per_step=4", "eval.every=0", "env.eval_size=8", "logging.progress=false",
        "logging.tensorboard=false", "reward.workers=2"])
    data["rewards"] = [{"name": "exact_match"}, {"name": file + "length", "weight": 0.01},
                       {"name": file + "pid", "weight": 0.0}]
    trainer = Trainer(build_config(data), log=lambda *_: None)
    assert trainer.verifier.pool is trainer.rewards.pool and trainer.rewards.pool.workers == []  # lazy
    try:
        trainer.train(trainer.start())
    finally:
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["step"] >= 0] == [0, 1]
    assert all(f"reward_fn/{file}length" in row for row in rows if row["step"] >= 0)
    assert all(row[f"reward_fn/{file}pid"] != os.getpid() for row in rows if row["step"] >= 0)  # not the driver
    pool = trainer.rewards.pool
    assert pool.workers == [] and pool.restarts == 0  # shut down by train's finally
    assert _no_worker_processes()


def _worker_processes() -> list[int]:
    """This session's reward worker processes (Ray titles an actor's process ray::RewardExecutor...)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "RewardExecutor" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _no_worker_processes(within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while _worker_processes():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True
