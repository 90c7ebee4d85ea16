"""Recipe validation and dotted overrides; CLI errors are one readable line, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from rlcurr.config import apply_overrides, dump_config, load_config
from rlcurr.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def test_every_shipped_recipe_validates():
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        load_config(path)


def test_overrides_are_typed():
    cfg = load_config(QUICKSTART, ["trainer.steps=50", "algo.clip_high=0.28", "rollout.engine=vllm",
                                   "env.distributions=[add1,add3]"])
    assert cfg.trainer.steps == 50 and cfg.algo.clip_high == 0.28 and cfg.rollout.engine == "vllm"
    assert cfg.env.distributions == ["add1", "add3"]


def test_override_creates_optional_section():
    cfg = load_config(QUICKSTART, ["model.lora.r=4"])
    assert cfg.model.lora is not None and cfg.model.lora.r == 4


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = load_config(QUICKSTART)
    with pytest.raises(Exception):
        cfg.trainer.steps = 3
    (tmp_path / "r.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "r.yaml") == cfg


@pytest.mark.parametrize("override, expected", [
    ("trainer.steps=abc", "trainer.steps"),
    ("trainer.stepz=5", "trainer.stepz: unknown key"),
    ("rollout.engine=foo", "'hf' or 'vllm'"),
    ("algo.loss_agg=mean", "token-mean"),
    ("env.distributions=[add9]", "add9"),
    ("trainer", "dotted.key=value"),
    ("trainer.steps.x=1", "trainer.steps is not a section"),
])
def test_bad_override_messages(override, expected):
    with pytest.raises(UserError, match=None) as e:
        load_config(QUICKSTART, [override])
    assert expected in str(e.value)


def test_model_needs_exactly_one_source():
    with pytest.raises(UserError, match="exactly one of model.path"):
        load_config(QUICKSTART, ["model.path=/some/dir"])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rlcurr.cli", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("args, expected", [
    (["train", str(QUICKSTART), "trainer.steps=abc"], "trainer.steps"),
    (["train", str(QUICKSTART), "trainer.bogus=1"], "trainer.bogus: unknown key"),
    (["train", "recipes/nope.yaml"], "recipe file not found: recipes/nope.yaml"),
])
def test_cli_errors_are_clean(args, expected, tmp_path):
    out = _cli(*args, f"trainer.output_dir={tmp_path / 'run'}") if args[-1] != "recipes/nope.yaml" else _cli(*args)
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_cli_lists_recipes():
    out = _cli("recipes")
    assert out.returncode == 0 and "quickstart" in out.stdout


def test_sampled_eval_needs_a_temperature():
    cfg = load_config(QUICKSTART, ["eval.samples=4", "eval.temperature=1.0"])
    assert cfg.eval.samples == 4
    with pytest.raises(UserError, match="eval.samples"):
        load_config(QUICKSTART, ["eval.samples=4"])  # greedy: 4 identical answers per prompt


# ---------------------------------------------------------------- cross-field checks


def test_top_p_needs_tis_cap():
    # The learner scores answers with the untruncated softmax(logits / T); top-p sampling draws from
    # the truncated one, so the engine's logprobs are not the learner's pi_old: only truncated IS
    # (algo.tis_cap) corrects that.
    with pytest.raises(UserError) as e:
        load_config(QUICKSTART, ["rollout.top_p=0.9"])
    assert "rollout.top_p" in str(e.value) and "algo.tis_cap" in str(e.value)
    assert "untruncated" in str(e.value)
    cfg = load_config(QUICKSTART, ["rollout.top_p=0.9", "algo.tis_cap=2.0"])
    assert cfg.rollout.top_p == 0.9 and cfg.algo.tis_cap == 2.0
    assert load_config(QUICKSTART, ["rollout.top_p=1.0"]).rollout.top_p == 1.0


def test_drgrpo_selects_its_loss_aggregation(tmp_path):
    # quickstart writes algo.loss_agg: token-mean; null = not given -> Dr.GRPO's sum / constant
    cfg = load_config(QUICKSTART, ["algo.name=drgrpo", "algo.loss_agg=null"])
    assert cfg.algo.loss_agg == "seq-mean-token-sum-norm"
    assert load_config(QUICKSTART, ["algo.loss_agg=null"]).algo.loss_agg == "token-mean"  # grpo keeps its default
    # the resolved config.yaml of a run sets every key; resume reloads it unchanged
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(UserError) as e:
        load_config(QUICKSTART, ["algo.name=drgrpo"])  # explicit token-mean
    assert "algo.loss_agg" in str(e.value) and "algo.name" in str(e.value)
    assert "seq-mean-token-sum-norm" in str(e.value)


def test_power_schedule_parameters():
    cfg = load_config(QUICKSTART, ["learner.schedule.name=power", "learner.schedule.power_exponent=0.3"])
    assert cfg.learner.schedule.power_exponent == 0.3
    assert load_config(QUICKSTART, ["learner.schedule.name=power"]).learner.schedule.power_exponent == 0.51
    with pytest.raises(UserError, match="learner.schedule.power_exponent"):
        load_config(QUICKSTART, ["learner.schedule.power_exponent=0.3"])  # constant schedule: unused


def test_ead_needs_tis_cap_like_top_p():
    """EAD's answers are sampled at per-position temperatures the learner does not score at: as
    off-policy as top-p < 1, so the same rule (algo.tis_cap required)."""
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
    with pytest.raises(UserError, match=r"curriculum\.ead needs algo\.tis_cap"):
        load_config(recipe, ["curriculum.ead={}"])
    with pytest.raises(UserError, match=r"rollout\.top_p.*needs algo\.tis_cap"):
        load_config(recipe, ["rollout.top_p=0.9"])
    assert load_config(recipe, ["curriculum.ead={}", "algo.tis_cap=2.0"]).algo.tis_cap == 2.0
