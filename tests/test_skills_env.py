"""The skills testbed (envs/skills.py): answers by hand, the dead-share knob, the unlabelled
variant, held-out eval sets, reproducibility. No training."""

import random

import pytest
from pydantic import ValidationError

from envs.skills import (HARD_DEAD, MIXED, REV_OWN_SYMBOLS, SYMBOLS, SkillsConfig, question, slipped, solve,
                         typical_mistake, written)
from rlcurr.rewards.builtin import exact_match

SMALL = dict(learnable_size=40, eval_size=12, hard_eval_size=6, warmup_size=50)


@pytest.mark.parametrize("skill,digits,answer", [
    ("rev", "3141", "1413"),
    ("inc", "3149", "4250"),
    ("psum", "31415", "4556"),   # 3+1, 1+4, 4+1, 1+5
    ("psum", "99", "8"),
    ("sort", "3141", "1134"),
    ("max", "3141", "3344"),
    ("max", "0", "0"),
    ("dup", "314", "331144"),
])
def test_answers_by_hand(skill, digits, answer):
    assert solve(skill, digits) == answer


def test_questions_and_rewards_by_hand():
    assert question("rev", "3141") == "R3141=" and question("psum", "31415") == "P31415="
    env = SkillsConfig(skills=["rev", "inc", "psum", "max"], answer_symbols="digits", **SMALL).build(0)
    p = env.train_prompts("psum")[0]
    assert len(p.question) == p.columns["size"] + 3  # letter, size + 1 digits, '='
    assert p.answer == solve("psum", p.question[1:-1]) and p.hint == p.answer[: len(p.answer) // 2]
    # per_skill: each skill writes its answer in its own ten symbols, rev in the question's digits
    assert written("inc", "4250", "per_skill") == "ecfa" and written("max", "3344", "per_skill") == "DDEE"
    assert written("rev", "1413", "per_skill") == "1413" and written("inc", "4250", "digits") == "4250"
    # all_own (the default): rev too leaves the digits (REV_OWN_SYMBOLS = "!#$%&*+/?@": 1 -> '#', 4 -> '&', 3 -> '%')
    assert written("rev", "1413", "all_own") == "#&#%" and written("inc", "4250", "all_own") == "ecfa"
    env = SkillsConfig(**SMALL).build(0)
    own = {**SYMBOLS, "rev": REV_OWN_SYMBOLS}
    for skill in env.distributions():
        p = env.train_prompts(skill)[0]
        assert p.answer == written(skill, solve(skill, p.question[1:-1]), "all_own")
        assert set(p.answer) <= set(own[skill])
    alphabets = [set(own[s]) for s in ("rev", "inc", "sort", "max")] + [set("0123456789=")]  # + the question's
    assert all(a.isdisjoint(b) for i, a in enumerate(alphabets) for b in alphabets[i + 1:])
    # the environment's verifier: exact match of the stripped answer
    assert exact_match(["q"] * 4, ["4556", " 4556\n", "4557", "45566"], answer=["4556"] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_teacher_slips_grow_with_position_and_spare_the_clean_ones():
    rng = random.Random(0)
    # never past min(0.9, ...) and never in the first clean positions
    assert all(slipped("12345", 0.5, 5, rng) == "12345" for _ in range(100))
    outs = [slipped("0" * 8, 0.1, 3, rng) for _ in range(4000)]
    assert all(o[:3] == "000" for o in outs)
    rate = [sum(o[i] != "0" for o in outs) / len(outs) for i in range(3, 8)]  # 0.1, 0.2, ..., 0.5
    assert all(abs(r - 0.1 * (i + 1)) < 0.03 for i, r in enumerate(rate))


def test_typical_mistakes_by_hand():
    rng = random.Random(0)
    # rev of '3141' is '1413'; answer position 0 reads input position 3 ('1'): a neighbour is input 2 ('4')
    assert typical_mistake("rev", "3141")(0, rng) == "4"
    # inc adds 0 or 2 instead of 1: '3' -> '3' or '5'
    assert {typical_mistake("inc", "3149")(0, rng) for _ in range(50)} == {"3", "5"}
    # sort '3141' -> '1134': position 2 ('3') slips to a neighbour in the sorted order, '1' or '4'
    assert {typical_mistake("sort", "3141")(2, rng) for _ in range(50)} == {"1", "4"}
    # max '3141' -> '3344': position 2 writes the input digit '4'... and position 3 the input '1'
    assert typical_mistake("max", "3141")(3, rng) == "1"
    assert typical_mistake("psum", "31415") is None
    # the teacher uses the typical mistake when it differs from the right digit, else a random one
    # sort position 3 ('4') slips with probability 0.9, always to its only neighbour '3'
    outs = [slipped("1134", 0.9, 0, rng, typical_mistake("sort", "3141")) for _ in range(1000)]
    assert {o[3] for o in outs} == {"3", "4"} and abs(sum(o[3] == "3" for o in outs) / 1000 - 0.9) < 0.03
    # position 0 ('1') slips to its neighbour '1' = itself: a random other digit instead, never '1'
    assert sum(o[0] != "1" for o in outs) > 800


def test_dead_share_keeps_the_learnable_pool_and_adds_dead_prompts():
    pools = {}
    for w in (0.0, 0.25, 0.5, 0.75):
        env = SkillsConfig(dead_share=w, **SMALL).build(3)
        assert env.distributions() == ["rev", "inc", "sort", "max"]
        pools[w] = {d: env.train_prompts(d) for d in env.distributions()}
        n_dead = round(w / (1 - w) * 40)
        for d, pool in pools[w].items():
            bands = [p.columns["band"] for p in pool]
            assert bands.count("learn") == 40
            assert bands.count("easy") == round(n_dead / 2) and bands.count("hard") == n_dead - round(n_dead / 2)
            assert len({p.question for p in pool}) == len(pool)  # distinct questions
            assert len({p.uid for p in pool}) == len(pool)
            assert all(p.distribution == d and p.uid.startswith(d + "/") for p in pool)
            assert all(p.columns["size"] in (1, 2) for p in pool if p.columns["band"] == "easy")
            assert all(p.columns["size"] in (11, 12) for p in pool if p.columns["band"] == "hard")
    for d in pools[0.0]:
        learn = [p for p in pools[0.0][d]]
        for w in (0.25, 0.5, 0.75):
            assert [p for p in pools[w][d] if p.columns["band"] == "learn"] == learn  # identical learnable part
        # a larger dead share adds dead prompts, never swaps them
        dead = {w: [(p.uid, p.question) for p in pools[w][d] if p.columns["band"] != "learn"] for w in pools}
        assert set(dead[0.25]) <= set(dead[0.5]) <= set(dead[0.75])
    assert sum(len(p) for p in pools[0.75].values()) == 4 * (40 + 120)  # w = 0.75: 3 dead per learnable


def test_eval_sets_are_learnable_held_out_plus_a_hard_dead_group():
    env = SkillsConfig(dead_share=0.75, **SMALL).build(0)
    assert env.unlearnable == (HARD_DEAD,)
    for d in env.distributions():
        ev = env.eval_prompts(d)
        learn = [p for p in ev if p.distribution == d]
        hard = [p for p in ev if p.distribution == HARD_DEAD]
        assert len(learn) == 12 and len(hard) == 6 and len(ev) == 18
        assert all(p.columns["band"] == "learn" for p in learn) and all(p.columns["band"] == "hard" for p in hard)
        train_q = {p.question for p in env.train_prompts(d)}
        assert not train_q & {p.question for p in ev}  # disjoint from the train pool
        assert not {p.question for p, _ in env.sft_examples(d)} & {p.question for p in ev}  # and from the warm-up


def test_unlabelled_is_one_distribution_with_the_same_prompts():
    lab = SkillsConfig(**SMALL).build(5)
    unl = SkillsConfig(labelled=False, **SMALL).build(5)
    assert unl.distributions() == [MIXED]
    pool = unl.train_prompts(MIXED)
    assert all(p.distribution == MIXED for p in pool)
    strip = lambda ps: [(p.uid, p.question, p.answer, p.hint, p.columns) for p in ps]  # noqa: E731
    assert strip(pool) == strip([p for d in lab.distributions() for p in lab.train_prompts(d)])
    # eval prompts keep their skill (eval accuracy per skill, comparable with the labelled variant)
    assert unl.eval_prompts(MIXED) == [p for d in lab.distributions() for p in lab.eval_prompts(d)]
    # the SFT warm-up sees the same examples in the same order: the same warmed model
    assert [(p.question, t) for p, t in unl.sft_examples(MIXED)] == \
        [(p.question, t) for d in lab.distributions() for p, t in lab.sft_examples(d)]


def test_warmup_is_independent_of_the_dead_share_and_seeds_reproduce():
    a, b = SkillsConfig(dead_share=0.0, **SMALL).build(7), SkillsConfig(dead_share=0.75, **SMALL).build(7)
    assert a.sft_examples("rev") == b.sft_examples("rev")
    assert a.eval_prompts("inc") == b.eval_prompts("inc")
    c = SkillsConfig(dead_share=0.75, **SMALL).build(7)
    assert all(b.train_prompts(d) == c.train_prompts(d) for d in b.distributions())
    d = SkillsConfig(dead_share=0.75, **SMALL).build(8)
    assert b.train_prompts("rev") != d.train_prompts("rev")


def test_config_is_validated_and_registered():
    from rlcurr.config import BUILTIN_ENVS

    assert BUILTIN_ENVS["skills"] is SkillsConfig
    with pytest.raises(ValidationError, match="distinct names"):
        SkillsConfig(skills=["rev", "nope"])
    with pytest.raises(ValidationError, match="grow from easy"):
        SkillsConfig(easy_lengths=[1, 5], learn_lengths=[4, 6])
    with pytest.raises(ValidationError):
        SkillsConfig(dead_share=1.0)
    with pytest.raises(ValueError, match="cannot draw"):
        SkillsConfig(easy_lengths=[1], learn_lengths=[2], hard_lengths=[3], dead_share=0.75, learnable_size=40).build(0)


def test_recipes_load():
    from pathlib import Path

    from rlcurr.config import load_config

    root = Path(__file__).resolve().parent.parent
    lab = load_config(root / "recipes" / "skills_uniform.yaml")
    unl = load_config(root / "recipes" / "skills_unlabelled.yaml")
    assert lab.env.labelled and not unl.env.labelled and lab.env.dead_share == unl.env.dead_share == 0.5
    assert lab.model.warmup == unl.model.warmup
    assert lab.env.model_copy(update={"labelled": False}) == unl.env


@pytest.mark.parametrize("labelled", [True, False])
def test_eval_reports_each_skill_and_hard_dead_apart_and_the_mean_skips_hard_dead(labelled):
    """Trainer.evaluate on the skills env, generation scripted: learnable held-out prompts answered
    right, hard-dead ones wrong -> every skill 1.0, hard_dead 0.0, the mean 1.0 (hard_dead is
    unlearnable); the unlabelled variant reports the same keys."""
    from types import SimpleNamespace

    from rlcurr.trainer import Trainer

    cfg = SimpleNamespace(eval=SimpleNamespace(max_tokens=None, samples=1, temperature=1.0),
                          rollout=SimpleNamespace(max_tokens=12))
    env = SkillsConfig(labelled=labelled, **SMALL).build(0)

    def generate(reqs, prompts):
        return [[SimpleNamespace(text=p.answer if p.distribution != HARD_DEAD else "x")] for p in prompts]

    fake = SimpleNamespace(cfg=cfg, env=env, encode=lambda p: ([1], p.question), generate=generate,
                           verifier=SimpleNamespace(score=lambda prompts, texts, cols: SimpleNamespace(
                               totals=exact_match(prompts, texts, answer=cols["answer"]))))
    out = Trainer.evaluate(fake)
    assert out == {"eval/accuracy/rev": 1.0, "eval/accuracy/inc": 1.0, "eval/accuracy/sort": 1.0,
                   "eval/accuracy/max": 1.0, f"eval/accuracy/{HARD_DEAD}": 0.0, "eval/accuracy_mean": 1.0}
