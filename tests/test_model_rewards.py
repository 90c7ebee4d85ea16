"""Rewards computed by models (rlcurr.rewards.model_rewards): reward models and judges.

Tiny random-init models are built once per module (a 2-label and a 1-label Qwen2 sequence
classifier, a Qwen2 causal LM, all with the character tokenizer): the scores are checked against
the HF model run directly, not against what the models learned (bench/reward_model.py trains
real ones and measures that)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlcurr.config import RewardConfig, RewardSpec, build_config
from rlcurr.errors import UserError
from rlcurr.rewards.model_rewards import JUDGE_SAMPLES_FILE, AgreementMonitor, JudgeReward, RewardModelReward
from rlcurr.rewards.model_scorers import (JudgeParseError, Normalizer, RewardModelScorer, compile_parse,
                                          parse_judgement)
from rlcurr.rewards.runner import RewardRunner

PROMPTS = ["3+4=", "12+5=", "0+0=", "9+9=", "1+1=", "7+2=", "5+5="]
ANSWERS = ["7", "17", "1", "18\n", "", "9+", "10"]


def _classifier(out: Path, num_labels: int) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    from rlcurr.learner.models import build_char_tokenizer

    tok = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, num_labels=num_labels)
    torch.manual_seed(num_labels)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from rlcurr.config import TinyModelConfig
    from rlcurr.learner.models import build_tiny_model

    root = tmp_path_factory.mktemp("model-rewards")
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64)
    return {"rm2": _classifier(root / "rm2", 2), "rm1": _classifier(root / "rm1", 1),
            "lm": build_tiny_model(tiny, root / "lm", 0)}


def _direct(path: Path, text: str, num_labels: int) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlcurr.learner.models import load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    enc = load_tokenizer(path)(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0]
    return float(logits[0]) if num_labels == 1 else float(torch.softmax(logits, -1)[1])


@pytest.mark.parametrize("labels", [2, 1])
def test_scores_are_the_hf_models_own(models, labels):
    """Without Ray the reward runs its scorer in process; each score is the model run on
    prompt + completion alone: P(label 1) for 2 labels, the logit for 1."""
    path = models[f"rm{labels}"]
    fn = RewardModelReward(path=str(path), batch_size=4)
    got = fn(prompts=PROMPTS, completions=ANSWERS)
    want = [_direct(path, p + c, labels) for p, c in zip(PROMPTS, ANSWERS)]
    assert got == pytest.approx(want, abs=1e-5)
    if labels == 2:
        assert all(0 <= x <= 1 for x in got)


def test_batching_gives_the_one_at_a_time_scores(models):
    items = list(zip(PROMPTS, ANSWERS))  # lengths 4-7 characters: padded within a batch
    one = RewardModelScorer(str(models["rm2"]), batch_size=1).score_items(items)
    three = RewardModelScorer(str(models["rm2"]), batch_size=3).score_items(items)
    assert three == pytest.approx(one, abs=1e-5)


def test_normalisation_by_hand():
    # running: [1, 2, 3] -> mean 2, population var (1 + 0 + 1) / 3 = 2/3, std 0.8165:
    # (1-2)/0.8165 = -1.2247, 0, +1.2247. Then [4]: mean of 1..4 = 2.5, var (2.25+0.25+0.25+2.25)/4
    # = 1.25, std 1.1180: (4-2.5)/1.1180 = 1.3416.
    n = Normalizer("running")
    assert n([1.0, 2.0, 3.0]) == pytest.approx([-1.2247449, 0.0, 1.2247449], abs=1e-6)
    assert n([4.0]) == pytest.approx([1.3416408], abs=1e-6)
    assert Normalizer("running")([5.0]) == [0.0]  # one score: std 0 -> 1, (5 - 5) / 1
    # fixed: (s - shift) / scale = (3 - 1) / 2 = 1, (0 - 1) / 2 = -0.5
    assert Normalizer({"shift": 1.0, "scale": 2.0})([3.0, 0.0]) == [1.0, -0.5]
    assert Normalizer("none")([3.0]) == [3.0]


def test_normalize_param_is_checked(models):
    with pytest.raises(UserError, match="params.normalize"):
        RewardModelReward(path=str(models["rm2"]), normalize={"scale": 0})


def test_parse_rules():
    assert parse_judgement("Score: 7/10", "number") == 7.0
    assert parse_judgement("-2.5e1 points", "number") == -25.0
    assert parse_judgement(" Yes, it is right", "yes_no") == 1.0
    assert parse_judgement("no.", "yes_no") == 0.0
    rule = compile_parse(r"(\d+)/10", "judge")
    assert parse_judgement("I give it 8/10, well done", rule) == 8.0
    for text, r in [("none at all", "number"), ("maybe", "yes_no"), ("", "yes_no"), ("8 of 10", rule)]:
        with pytest.raises(JudgeParseError):
            parse_judgement(text, r)
    with pytest.raises(UserError, match="params.parse.*2 groups"):
        compile_parse(r"(\d)/(\d)", "judge")
    with pytest.raises(UserError, match="params.parse"):
        compile_parse(r"(\d", "judge")


def _judge_runner(models, on_error: str) -> RewardRunner:
    spec = RewardSpec(name="judge", params={"path": str(models["lm"]), "template": "{question}{completion}?",
                                            "parse": "yes_no", "max_tokens": 3})
    return RewardRunner([spec], RewardConfig(on_error=on_error))


def _seed_judge(runner: RewardRunner, texts: list[str]) -> JudgeReward:
    """The judge's greedy texts for the three answers below, put in its cache (the cache is what the
    runner's one-answer-at-a-time re-run reads), so the parse rules see chosen texts."""
    fn = runner.rewards[0].fn
    for p, c, t in zip(PROMPTS, ANSWERS, texts):
        fn.cache[f"{p}{c}?"] = t
    return fn


def test_unparseable_judgement_is_a_reward_failure(models, tmp_path):
    runner = _judge_runner(models, "none")
    fn = _seed_judge(runner, ["yes", "hmm", "No"])
    scores = runner.score(PROMPTS[:3], ANSWERS[:3], {"answer": ["7", "17", "0"]})
    assert scores.parts["judge"] == [1.0, None, 0.0]
    assert scores.failed == [False, True, False] and scores.num_errors == 1
    # the samples of the whole batch (not of the one-answer re-runs) go to judge_samples.jsonl
    monitor = AgreementMonitor.for_runner(runner, log=lambda s: None)
    monitor.observe(5, scores.parts, [True, True, True], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / JUDGE_SAMPLES_FILE).read_text().splitlines()]
    assert [(r["step"], r["completion"], r["judge"], r["score"]) for r in rows] == [
        (5, "7", "yes", 1.0), (5, "17", "hmm", None), (5, "1", "No", 0.0)]
    # agreement: judge > 0.5 vs correct: yes/True agree, no/True disagree, None left out -> 1/2
    assert monitor.step_metrics()["reward/rm_agreement"] == 0.5

    runner = _judge_runner(models, "raise")
    _seed_judge(runner, ["yes", "hmm", "No"])
    with pytest.raises(UserError, match=r"reward 'judge' failed on sample 1: JudgeParseError.*'hmm'"):
        runner.score(PROMPTS[:3], ANSWERS[:3], {"answer": ["7", "17", "0"]})
    assert fn.cache  # the first runner's judge kept its texts


def test_a_random_judge_really_generates(models):
    """No cache: the tiny random LM writes something; whatever it is, each answer gets a number or
    counts as a failure, and the texts are the HF engine's greedy ones (the same twice)."""
    runner = _judge_runner(models, "none")
    first = runner.score(PROMPTS, ANSWERS, {})
    fn = runner.rewards[0].fn
    texts = [fn.cache[f"{p}{c}?"] for p, c in zip(PROMPTS, ANSWERS)]
    assert first.num_errors == sum(s is None for s in first.parts["judge"])
    fn.cache.clear()
    runner.score(PROMPTS, ANSWERS, {})
    assert [fn.cache[f"{p}{c}?"] for p, c in zip(PROMPTS, ANSWERS)] == texts


def test_agreement_alert():
    class Fake:  # only the attributes the monitor reads
        agreement_threshold, alert_below, alert_drop, restarts, log = 0.5, 0.6, 0.2, 0, None

    lines = []
    m = AgreementMonitor([("reward_model", Fake())], log=lines.append)
    for step, agree in enumerate([1.0] * 10 + [0.9, 0.75, 0.5]):
        m.observe(step, {"reward_model": [1.0] * 4}, [True] * round(agree * 4) + [False] * (4 - round(agree * 4)))
        metrics = m.step_metrics()
    # agreements 1.0 x10, then 1.0 (0.9*4 rounds to 4), 0.75 (0.25 below the first-10 mean 1.0), 0.5 (< 0.6)
    assert metrics == {"reward/actor_restarts": 0, "reward/rm_agreement": 0.5, "alert/rm_agreement": 1.0}
    assert len(lines) == 1 and "0.75 at step 11" in lines[0] and "first-10-step mean 1.00" in lines[0]


def _recipe(tmp_path, rewards, **trainer) -> object:
    return build_config({
        "name": "mr", "seed": 0,
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2,
                           "intermediate_size": 64}, "warmup": {"steps": 0}},
        "env": {"name": "arith", "distributions": ["add1"], "eval_size": 8, "train_size": 32},
        "rollout": {"n": 4, "max_tokens": 3}, "rewards": rewards,
        "trainer": {"steps": 3, "prompts_per_step": 4, "output_dir": str(tmp_path / "run"), **trainer},
        "eval": {"every": 0}, "logging": {"tensorboard": False, "progress": False}})


@pytest.mark.parametrize("params, message", [
    ({"path": "/nonexistent/rm"}, "params.path: /nonexistent/rm does not exist"),
    ({"path": "LM"}, "not a sequence classifier"),
    ({"path": "RM", "batch_size": 0}, "params.batch_size"),
    ({"path": "RM", "bogus": 1}, r"no parameter\(s\) \['bogus'\]"),
])
def test_bad_reward_model_params_are_one_line_before_the_run_dir(models, tmp_path, params, message):
    from rlcurr.trainer import Trainer

    params = {k: str(models["lm"]) if v == "LM" else str(models["rm2"]) if v == "RM" else v for k, v in params.items()}
    cfg = _recipe(tmp_path, [{"name": "reward_model", "params": params}])
    with pytest.raises(UserError, match=message) as e:
        Trainer(cfg, log=lambda s: None)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("template, message", [
    ("{question}{completion", "params.template: .*braces"),
    ("{question} is it right?", r"params.template: no \{completion\} field"),
    ("{0}{completion}", r"field \{0\} is not a name"),
    ("no_such_template_file.txt", "neither a file nor a template"),
])
def test_bad_judge_template_is_one_line_before_the_run_dir(models, tmp_path, template, message):
    from rlcurr.trainer import Trainer

    cfg = _recipe(tmp_path, [{"name": "judge", "params": {"path": str(models["lm"]), "template": template}}])
    with pytest.raises(UserError, match=message) as e:
        Trainer(cfg, log=lambda s: None)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_judge_template_from_a_file(models, tmp_path):
    (tmp_path / "judge.txt").write_text("Q: {question} A: {completion} ({answer}) ok?")
    fn = JudgeReward(path=str(models["lm"]), template=str(tmp_path / "judge.txt"))
    assert fn.template == "Q: {question} A: {completion} ({answer}) ok?"
    with pytest.raises(UserError, match="judge 'judge'.*not a generative model|params.path.*not a generative"):
        JudgeReward(path=str(models["rm2"]), template="{completion}")


def test_killed_reward_actor_is_replaced_mid_run(models, ray_session):
    """The actor killed between two calls (as a node loss or OOM kill would, mid-run): the next call
    finds it dead, the pool starts a replacement, retries its share, logs it, and returns the same
    scores as scoring in process. (A kill timed to land inside a call depends on the machine's speed.)"""
    lines = []
    fn = RewardModelReward(path=str(models["rm2"]), batch_size=64, num_actors=1, num_cpus=0)
    fn.log = lines.append
    prompts, answers = PROMPTS * 700, ANSWERS * 700
    assert fn(prompts=PROMPTS, completions=ANSWERS)  # starts the actor
    old_pid = fn.pool.pids()[0]
    ray_session.kill(fn.pool.workers[0])
    scores = fn(prompts=prompts, completions=answers)
    assert fn.restarts == 1
    assert fn.pool.pids()[0] != old_pid
    assert any("warning: reward actor reward_model 0 died" in s for s in lines)
    assert any("reward actor reward_model 0 replaced in" in s for s in lines)
    want = RewardModelScorer(str(models["rm2"])).score_items(list(zip(PROMPTS, ANSWERS)))
    assert scores[:7] == pytest.approx(want, abs=1e-5) and len(scores) == 4900
    fn.close()


def test_an_actor_the_cluster_cannot_hold_is_one_error_not_a_hang(models, ray_session):
    fn = RewardModelReward(path=str(models["rm2"]), num_gpus=1)
    with pytest.raises(UserError, match="params.num_gpus: each actor needs 1 GPUs, the Ray cluster has 0"):
        fn(prompts=PROMPTS, completions=ANSWERS)


def test_plan_shows_the_reward_actors(models, tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 2, intermediate_size: 64}}\n"
        "env: {name: arith, distributions: [add1]}\n"
        f"rewards: [{{name: reward_model, params: {{path: {models['rm2']}, num_actors: 2, num_cpus: 1}}}}]\n")
    r = cli("plan", str(recipe))
    assert r.returncode == 0, r.stderr
    rows = [line.split()[:8] for line in r.stdout.splitlines() if line.strip().startswith("reward_model")]
    # actor, engine, tp, GPUs, bundle, CPUs, GPU ids (the node column: wherever Ray starts it)
    assert rows == [["reward_model", "0", "rm", "-", "0", "-", "1", "-"],
                    ["reward_model", "1", "rm", "-", "0", "-", "1", "-"]]
    assert "reward actor (reward_model, CPU, 1 cores) x 0:" in r.stdout
    # 2 layers of Qwen2 (32 hidden, 64 intermediate, 104 tokens) + the head, fp32
    assert "M params x 4 B (frozen;" in r.stdout


def test_training_with_a_reward_model_logs_agreement_and_resumes(models, tmp_path, ray_session):
    """A reward model with normalize: running, a checkpoint after every step: agreement is logged on
    every step; the checkpoint of step 1 holds the statistics of exactly steps 0-1 (2 steps x 4
    prompts x 4 answers = 32 scores); resuming from it ends with the uninterrupted run's statistics
    (48 scores, same mean), and judge samples written after step 1 are cut so each step's lines
    appear once."""
    import shutil

    from rlcurr.checkpoint import load_state
    from rlcurr.trainer import Trainer

    rewards = [{"name": "reward_model", "params": {"path": str(models["rm2"]), "num_cpus": 0, "normalize": "running"}}]

    def run(resume: bool) -> dict:
        trainer = Trainer(_recipe(tmp_path, rewards, save_every=1, keep_checkpoints=3), log=lambda s: None)
        try:
            trainer.run(resume=resume)
        finally:
            trainer.rm_monitor.close()
            trainer.rollout_pool.shutdown()
        return trainer.rewards.state_dict()["reward_model"]["normalizer"]

    whole = run(resume=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("step", -1) >= 0]
    assert len(steps) == 3
    for r in steps:
        assert 0 <= r["reward/rm_agreement"] <= 1 and r["alert/rm_agreement"] in (0.0, 1.0)
        assert r["reward/actor_restarts"] == 0 and "time/reward" in r

    assert whole["count"] == 48
    ckpts = tmp_path / "run" / "checkpoints"
    assert load_state(ckpts / "step_1" / "trainer_state.json")["rewards"]["reward_model"]["normalizer"]["count"] == 32
    shutil.rmtree(ckpts / "step_2")
    samples = tmp_path / "run" / JUDGE_SAMPLES_FILE
    samples.write_text("".join(json.dumps({"step": s, "text": "yes"}) + "\n" for s in (0, 1, 2)))
    resumed = run(resume=True)
    assert resumed["count"] == 48 and resumed["mean"] == pytest.approx(whole["mean"], abs=1e-6)
    assert [json.loads(line)["step"] for line in samples.read_text().splitlines()] == [0, 1]
