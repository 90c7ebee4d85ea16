"""Crash safety: SIGKILL a real training subprocess mid-run, resume it, check the records."""

import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = Path(__file__).resolve().parent.parent

STEPS = 40
ARGS = ["env.distributions=[add1,noise]", "curriculum.sampler=ucb", "curriculum.greso={}", "model.warmup.steps=20",
        f"trainer.steps={STEPS}", "trainer.save_every=3", "trainer.keep_checkpoints=2",
        "trainer.prompts_per_step=4", "rollout.n=4", "eval.every=0", "eval.max_tokens=4",
        "logging.progress=false", "env.eval_size=5"]


def _rlcurr(*args, **kw):
    return [sys.executable, "-m", "rlcurr.cli", *args]


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module", params=[0, 2], ids=["sync", "async2"])
def killed_and_resumed(tmp_path_factory, request):
    """Killed with SIGKILL mid-run, synchronous and with trainer.max_staleness=2 (the
    two batches collected ahead are lost with the process and collected again after the resume)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    env = {**os.environ}
    args = [*ARGS, f"trainer.max_staleness={request.param}"]
    proc = subprocess.Popen(_rlcurr("train", "recipes/quickstart.yaml", f"trainer.output_dir={run}", *args),
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    # kill once the second checkpoint exists, somewhere in the steps after it
    while time.time() < deadline and not (run / "checkpoints" / "step_5").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = _steps(run / "metrics.jsonl")
    from rlcurr.checkpoint import find_latest_checkpoint

    newest = find_latest_checkpoint(run)
    ckpt_state = json.loads((newest / "trainer_state.json").read_text())
    out = subprocess.run(_rlcurr("train", "--resume", str(run)), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    return run, before_kill, ckpt_state, out


def test_resume_completes_with_contiguous_unique_steps(killed_and_resumed):
    run, before_kill, _, out = killed_and_resumed
    assert out.returncode == 0, out.stderr[-2000:]
    assert max(before_kill) < STEPS - 1  # it really was killed mid-run
    assert _steps(run / "metrics.jsonl") == list(range(-1, STEPS))
    assert _steps(run / "curriculum.jsonl") == list(range(STEPS))


def _restored_controller(run, ckpt_state):
    """(the run's config, a CurriculumController built from it and loaded with the checkpoint's state)."""
    from rlcurr.curriculum.controller import CurriculumController
    from rlcurr.config import load_config

    cfg = load_config(run / "config.yaml")
    env = cfg.env.build(cfg.seed)
    ctrl = CurriculumController(cfg.curriculum, {d: env.train_prompts(d) for d in env.distributions()},
                                prompts_per_step=cfg.trainer.prompts_per_step, n=cfg.rollout.n,
                                temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                max_tokens=cfg.rollout.max_tokens, total_steps=cfg.trainer.steps, seed=cfg.seed)
    ctrl.load_state_dict(ckpt_state["curriculum"])
    return cfg, ctrl


def test_restored_curriculum_equals_saved(killed_and_resumed):
    run, _, ckpt_state, _ = killed_and_resumed
    # The controller rebuilt from the checkpoint must reproduce the saved state exactly.
    _, ctrl = _restored_controller(run, ckpt_state)
    assert json.loads(json.dumps(ctrl.state_dict())) == ckpt_state["curriculum"]
    # per-prompt statistics and GRESO's adapted p were checkpointed (and are restored above)
    assert ckpt_state["curriculum"]["prompt_memory"]["rec"] and ckpt_state["curriculum"]["greso"]["p"]
    # and the first resumed step's curriculum line continues from it: counts only grow
    lines = [json.loads(x) for x in (run / "curriculum.jsonl").read_text().splitlines()]
    s = ckpt_state["step"]
    for name, d in lines[s + 1]["distributions"].items():
        assert d["count"] >= lines[s]["distributions"][name]["count"]


def test_checkpoint_curriculum_observed_exactly_the_trained_steps(killed_and_resumed):
    """The checkpoint of step t holds the curriculum after observing steps 0..t and nothing more,
    also when the run had collected (and observed) steps t+1, t+2 ahead: rebuilt from it, the
    controller reports step t's curriculum.jsonl line (distributions, planned counts)."""
    run, _, ckpt_state, _ = killed_and_resumed
    cfg, ctrl = _restored_controller(run, ckpt_state)
    t = ckpt_state["step"]
    assert ckpt_state["curriculum"]["observed_step"] == t
    line = json.loads((run / "curriculum.jsonl").read_text().splitlines()[t])
    assert json.loads(json.dumps(ctrl.record(t)["distributions"])) == line["distributions"]
    k = cfg.trainer.max_staleness
    lags = [json.loads(x)["lag"] for x in (run / "curriculum.jsonl").read_text().splitlines()]
    assert max(lags) == k and all(lag <= k for lag in lags)


def test_corrupt_newest_checkpoint_falls_back(killed_and_resumed, tmp_path):
    import shutil

    run, _, _, _ = killed_and_resumed
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    newest = sorted((copy / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))[-1]
    (newest / "trainer_state.json").write_text("{not json")
    from rlcurr.checkpoint import find_latest_checkpoint

    with pytest.warns(RuntimeWarning, match=newest.name):
        found = find_latest_checkpoint(copy)
    assert found is not None and found != newest


# ---------------------------------------------------------------- resume == uninterrupted run

SAME_ARGS = ["env.distributions=[add1,noise]", "model.warmup.steps=20", "trainer.steps=6", "trainer.save_every=3",
             "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_tokens=4", "eval.every=0",
             "eval.max_tokens=4", "env.eval_size=4", "logging.progress=false", "logging.tensorboard=false"]
NOISY = ("time/", "tokens_per_s", "sync/seconds")  # wall-clock metrics differ between any two runs


def _run_in_process(run_dir, stop_before=None, resume=False, extra=()):
    """Train in this process; with `stop_before=k` the run is cut off (as by a crash) right before
    step k, after step k-1's checkpoint. Returns the learner's final parameter checksum."""
    from rlcurr.config import load_config
    from rlcurr.trainer import Trainer

    cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [f"trainer.output_dir={run_dir}", *SAME_ARGS, *extra])
    trainer = Trainer(cfg, log=lambda *_: None)
    first = trainer.start(resume=resume)
    step = trainer.step

    def step_or_stop(t):
        if t == stop_before:
            raise KeyboardInterrupt
        return step(t)

    trainer.step = step_or_stop
    try:
        try:
            trainer.train(first)
        except KeyboardInterrupt:
            pass
        return trainer.learner.parameter_checksum()
    finally:
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()


def _rows(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(NOISY)} for r in rows]


def test_resume_equals_uninterrupted_run(ray_session, tmp_path):
    straight = _run_in_process(tmp_path / "straight")
    _run_in_process(tmp_path / "cut", stop_before=3)
    assert [r["step"] for r in _rows(tmp_path / "cut")] == [-1, 0, 1, 2]
    resumed = _run_in_process(tmp_path / "cut", resume=True)
    a, b = _rows(tmp_path / "straight"), _rows(tmp_path / "cut")
    assert [r["step"] for r in b] == list(range(-1, 6))
    assert [r.get("reward/mean") for r in a] == [r.get("reward/mean") for r in b]
    assert a == b  # every metric of every step: rewards, lengths, losses, KL, eval
    assert abs(straight - resumed) <= 1e-6


def test_resume_with_greso_keeps_prompt_memory_and_p(ray_session, tmp_path):
    """Per-prompt statistics, GRESO's p_easy / p_hard and skips survive a resume: every
    curriculum.jsonl row (prompts summary, greso, alerts, probabilities) equals the uninterrupted run's."""
    # (no dynamic sampling: quickstart's 20-step warm-up model solves nothing, DAPO could not fill a batch)
    extra = ("curriculum.greso={}", "curriculum.alerts.starve_steps=1", "curriculum.min_prob=0.2")
    _run_in_process(tmp_path / "straight", extra=extra)
    _run_in_process(tmp_path / "cut", stop_before=3, extra=extra)
    _run_in_process(tmp_path / "cut", resume=True, extra=extra)
    cur = lambda d: [json.loads(x) for x in (d / "curriculum.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = cur(tmp_path / "straight"), cur(tmp_path / "cut")
    assert [r["step"] for r in b] == list(range(6))
    assert all(r["greso"] is not None and r["prompts"] for r in a)
    assert a[0]["greso"]["p_hard"] != 0.5  # p moves by +-0.01 every step: the resumed p carried state
    assert a == b
