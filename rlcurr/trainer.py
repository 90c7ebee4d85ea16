"""The driver loop. `Trainer.step(t)` reads as the ten steps of DESIGN.md:

 1 plan     curriculum chooses prompts, their distribution and max_tokens
 2 rollout  RolloutWorker actors generate n answers per prompt
 3 score    reward functions -> ScoredGroups
 4 guide    all-failed groups are re-rolled with a hint (Guide-GRPO), kept if mixed
 5 filter   optional DAPO dynamic sampling
 6 advant.  group-relative advantages (pure functions)
 7 observe  the curriculum updates its statistics
 8 learn    LearnerWorker: old/ref logprobs, clipped loss, optimizer step
 9 sync     learner weights -> every rollout worker
10 record   metrics.jsonl, curriculum.jsonl, TensorBoard, checkpoints
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import ray

from rlcurr.algos.advantages import group_advantages
from rlcurr.config import Config, RewardSpec, dump_config
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.filters import dapo_filter
from rlcurr.errors import UserError
from rlcurr.learner.models import load_tokenizer
from rlcurr.learner.prepare import prepare_model
from rlcurr.learner.worker import LearnerWorker
from rlcurr.logging import RunLogger
from rlcurr.prompting import format_prompt
from rlcurr.rewards.runner import RewardRunner
from rlcurr.rollout.worker import RolloutWorker
from rlcurr.types import BatchPlan, GenRequest, PlannedPrompt, Prompt, ScoredGroup, TrainSample
from rlcurr import metrics as M


class Trainer:
    def __init__(self, cfg: Config, log=print):
        self.cfg, self.log = cfg, log
        # Everything that can fail on user input happens before the run directory exists.
        self.env = cfg.env.build(cfg.seed)
        self.rewards = RewardRunner(cfg.rewards or [RewardSpec(name=n) for n in self.env.default_rewards], cfg.reward)
        self.verifier = RewardRunner([RewardSpec(name=self.env.default_rewards[0])], cfg.reward)
        self.controller = CurriculumController(
            cfg.curriculum, {d: self.env.train_prompts(d) for d in self.env.distributions()},
            prompts_per_step=cfg.trainer.prompts_per_step, n=cfg.rollout.n, temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p, max_tokens=cfg.rollout.max_tokens, total_steps=cfg.trainer.steps, seed=cfg.seed)
        self.run_dir = cfg.run_dir
        self.model_dir = prepare_model(cfg, self.env, log=log)
        self.tokenizer = load_tokenizer(self.model_dir)

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not self.cfg.trainer.overwrite:
                raise UserError(f"run directory {self.run_dir} already exists; pass trainer.overwrite=true "
                                f"or choose another trainer.output_dir")
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        self.logger = RunLogger(self.run_dir, self.cfg)
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        r, c = self.cfg.rollout, self.cfg
        self.rollout_workers = [
            RolloutWorker.remote(r.engine, str(self.model_dir), dtype=c.model.dtype, seed=c.seed + i,
                                 gpu_memory_utilization=r.gpu_memory_utilization,
                                 tensor_parallel_size=r.tensor_parallel_size)
            for i in range(r.num_workers)]
        self.learner = LearnerWorker.remote(str(self.model_dir), c.learner, c.algo, c.trainer.steps,
                                            dtype=c.model.dtype, lora_cfg=c.model.lora, seed=c.seed)
        ray.get([w.ping.remote() for w in self.rollout_workers])
        if c.model.lora is not None:  # rollouts must start from the same (merged) weights as the learner
            self.sync()

    def run(self) -> None:
        self.start()
        try:
            self.logger.start_progress(self.cfg.trainer.steps)
            self.record_eval(step=0)
            for t in range(self.cfg.trainer.steps):
                self.step(t)
        finally:
            self.logger.close()

    # ------------------------------------------------------------------ one step

    def step(self, t: int) -> dict:
        timer = M.PhaseTimer()
        with timer("plan"):
            plan = self.controller.plan(t)                                   # 1 plan
        with timer("rollout"):
            groups_raw = self.rollout(plan)                                  # 2 rollout
        with timer("reward"):
            groups = self.score(plan.items, groups_raw)                      # 3 score
        with timer("guide"):
            groups += self.guide(plan, groups)                               # 4 guide
        groups, dropped = self.filter(groups)                                # 5 filter
        for g in groups:                                                     # 6 advantages
            g.advantages = group_advantages(self.cfg.algo.name, g.rewards)
        self.controller.observe(t, groups)                                   # 7 observe
        with timer("learn"):
            samples = to_train_samples(groups)
            learn = ray.get(self.learner.train_step.remote(samples, t))      # 8 learn
        with timer("sync"):
            self.sync()                                                      # 9 sync
        metrics = {"step": t, **M.rollout_metrics(groups, dropped), **learn, **timer.as_metrics()}
        if self.should_eval(t):
            with timer("eval"):
                metrics.update(self.evaluate())
        self.logger.record(t, metrics, self.controller.record(t))            # 10 record
        return metrics

    def rollout(self, plan: BatchPlan) -> list[tuple[PlannedPrompt, list[int], list]]:
        prompt_ids = [self.encode(item.prompt) for item in plan.items]
        requests = [GenRequest(ids, plan.n, item.max_tokens, plan.temperature, plan.top_p)
                    for ids, item in zip(prompt_ids, plan.items)]
        completions = self.generate(requests)
        return list(zip(plan.items, prompt_ids, completions))

    def generate(self, requests: list[GenRequest]) -> list[list]:
        """Spread requests over the rollout workers in contiguous shares; results in order."""
        shares = _split_even(requests, len(self.rollout_workers))
        futures = [w.generate.remote(share) for w, share in zip(self.rollout_workers, shares) if share]
        return [out for part in ray.get(futures) for out in part]

    def score(self, items: list[PlannedPrompt], rolled, behaviour_ids=None) -> list[ScoredGroup]:
        prompts, completions, columns = [], [], {}
        for item, ids, comps in rolled:
            for c in comps:
                prompts.append(self.tokenizer.decode(ids))
                completions.append(c.text)
                row = {**item.prompt.columns, "budget": item.max_tokens, "num_tokens": len(c.token_ids),
                       "distribution": item.prompt.distribution}
                for k, v in row.items():
                    columns.setdefault(k, []).append(v)
        scores = self.rewards.score(prompts, completions, columns)
        groups, i = [], 0
        for item, ids, comps in rolled:
            n = len(comps)
            groups.append(ScoredGroup(
                prompt=item.prompt, prompt_ids=ids, completions=comps, rewards=scores.totals[i : i + n],
                reward_parts={k: v[i : i + n] for k, v in scores.parts.items()}, max_tokens=item.max_tokens))
            i += n
        return groups

    def guide(self, plan: BatchPlan, groups: list[ScoredGroup]) -> list[ScoredGroup]:
        """Guide-GRPO: re-roll all-failed groups with the hint; keep mixed ones as off-policy."""
        policy = getattr(self.controller, "guidance", None)
        if policy is None:
            return []
        failed = [g for g in groups if g.prompt.hint and policy.needs_hint(g)]
        if not failed:
            policy.observe_step([], [])
            return []
        hinted_ids = [self.encode(g.prompt, hint=g.prompt.hint) for g in failed]
        requests = [GenRequest(ids, plan.n, g.max_tokens, plan.temperature, plan.top_p) for ids, g in zip(hinted_ids, failed)]
        rolled = [(PlannedPrompt(g.prompt, g.max_tokens), ids, comps)
                  for g, ids, comps in zip(failed, hinted_ids, self.generate(requests))]
        rerolled = self.score([r[0] for r in rolled], rolled)
        kept = []
        for g_old, g_new, ids in zip(failed, rerolled, hinted_ids):
            g_new.prompt_ids, g_new.behaviour_prompt_ids, g_new.off_policy = g_old.prompt_ids, ids, True
            if policy.keep(g_new):
                kept.append(g_new)
        for g in failed:  # replaced: the hint-free all-failed group carries no learning signal
            groups.remove(g)
        policy.observe_step(rerolled, kept)
        return kept

    def filter(self, groups: list[ScoredGroup]) -> tuple[list[ScoredGroup], int]:
        if self.cfg.curriculum.dynamic_sampling is None:
            return groups, 0
        kept, dropped = dapo_filter(groups)
        return kept, len(dropped)

    def sync(self) -> None:
        weights = ray.put(ray.get(self.learner.named_weights.remote()))
        ray.get([w.load_weights.remote(weights) for w in self.rollout_workers])

    # ------------------------------------------------------------------ evaluation

    def should_eval(self, t: int) -> bool:
        every, last = self.cfg.eval.every, t == self.cfg.trainer.steps - 1
        return last or (every > 0 and (t + 1) % every == 0)

    def record_eval(self, step: int) -> None:
        """Evaluation before any RL update, logged as a step -1 line in metrics.jsonl."""
        self.logger.record_eval(self.evaluate())

    def evaluate(self) -> dict[str, float]:
        max_tokens = self.cfg.eval.max_tokens or self.cfg.rollout.max_tokens
        out = {}
        items = [PlannedPrompt(p, max_tokens) for d in self.env.distributions() for p in self.env.eval_prompts(d)]
        ids = [self.encode(it.prompt) for it in items]
        comps = self.generate([GenRequest(i, 1, max_tokens, temperature=0.0) for i in ids])
        prompts = [self.tokenizer.decode(i) for i in ids]
        columns: dict[str, list] = {}
        for it in items:
            for k, v in it.prompt.columns.items():
                columns.setdefault(k, []).append(v)
        scores = self.verifier.score(prompts, [c[0].text for c in comps], columns)
        per_dist: dict[str, list[float]] = {}
        for it, s in zip(items, scores.totals):
            per_dist.setdefault(it.prompt.distribution, []).append(float(s > 0))
        for d, v in per_dist.items():
            out[f"eval/accuracy/{d}"] = sum(v) / len(v)
        learnable = [out[f"eval/accuracy/{d}"] for d in per_dist if d != "noise"]
        out["eval/accuracy_mean"] = sum(learnable) / max(1, len(learnable))
        return out

    def encode(self, prompt: Prompt, hint: str | None = None) -> list[int]:
        text = format_prompt(self.tokenizer, prompt.question, system_prompt=self.cfg.env.system_prompt,
                             instruction=self.cfg.env.instruction, hint=hint)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def to_train_samples(groups: list[ScoredGroup]) -> list[TrainSample]:
    return [TrainSample(prompt_ids=g.prompt_ids, response_ids=c.token_ids, advantage=a,
                        rollout_logprobs=c.logprobs, behaviour_prompt_ids=g.behaviour_prompt_ids,
                        off_policy=g.off_policy)
            for g in groups for c, a in zip(g.completions, g.advantages) if a != 0.0 or True]


def _split_even(items: list, parts: int) -> list[list]:
    size = math.ceil(len(items) / parts) if items else 0
    return [items[i * size : (i + 1) * size] for i in range(parts)]
