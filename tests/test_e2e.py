"""A short real run: tiny model, SFT warm-up, GRPO through real Ray actors (HF engine)."""

import json
from pathlib import Path

import pytest

from rlcurr.config import load_config
ROOT = Path(__file__).resolve().parent.parent

STEPS = 60


@pytest.fixture(scope="module", params=[0, 1], ids=["sync", "async1"])
def run(ray_session, tmp_path_factory, request):
    """The quickstart, synchronous and with trainer.max_staleness=1."""
    from rlcurr.trainer import Trainer

    out = tmp_path_factory.mktemp("e2e") / "run"
    cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [
        f"trainer.output_dir={out}", f"trainer.steps={STEPS}", "trainer.save_every=20", "eval.every=30",
        "logging.progress=false", f"trainer.max_staleness={request.param}"])
    trainer = Trainer(cfg, log=lambda *_: None)
    first = trainer.start()
    before = trainer.learner.parameter_checksum()
    trainer.train(first)
    after = trainer.learner.parameter_checksum()
    return out, before, after


def test_parameters_changed_and_reward_rose(run):
    out, before, after = run
    assert after != before
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["step"] >= 0]
    # quickstart setting (add1, 50 SFT steps): measured 0.143 over steps 0-14 and 0.193 over
    # steps 45-59 (seeded, repeatable on CPU); the threshold is half that rise.
    first = sum(r["reward/mean"] for r in train[:15]) / 15
    last = sum(r["reward/mean"] for r in train[-15:]) / 15
    assert last > first + 0.025, (first, last)


def test_metrics_have_the_promised_fields(run):
    out, _, _ = run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == -1 and "eval/accuracy/add1" in rows[0]
    needed = ["step", "reward/mean", "reward/std", "reward/add1", "loss", "policy_loss", "entropy",
              "clip_frac_low", "clip_frac_high", "grad_norm", "lr", "response_length/mean",
              "response_length/max", "zero_variance_frac", "time/plan", "time/rollout", "time/reward",
              "time/learn", "time/sync", "tokens_per_s"]
    for key in needed:
        assert key in rows[1], key
    assert "eval/accuracy/add1" in rows[-1]
    assert [r["step"] for r in rows] == list(range(-1, STEPS))
    curriculum = [json.loads(line) for line in (out / "curriculum.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curriculum] == list(range(STEPS))
    assert abs(sum(d["prob"] for d in curriculum[-1]["distributions"].values()) - 1) < 1e-9
    assert (out / "checkpoints" / f"step_{STEPS - 1}" / "model" / "config.json").is_file()
