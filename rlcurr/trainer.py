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
import signal
import warnings
from pathlib import Path

import ray

from rlcurr.algos.advantages import group_advantages
from rlcurr.checkpoint import (STATE_FILE, find_latest_checkpoint, load_state, rng_state, save_checkpoint, save_state,
                               set_rng_state, truncate_jsonl)
from rlcurr.config import Config, RewardSpec, dump_config
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.filters import dapo_filter
from rlcurr.errors import UserError
from rlcurr.learner.models import load_tokenizer
from rlcurr.learner.prepare import prepare_model
from rlcurr.learner.worker import LearnerWorker
from rlcurr.logging import RunLogger
from rlcurr.prompting import format_env_prompt, has_chat_template
from rlcurr.rewards.runner import RewardRunner, build_columns, reward_specs
from rlcurr.rollout.worker import RolloutWorker
from rlcurr.types import BatchPlan, GenRequest, PlannedPrompt, Prompt, ScoredGroup, TrainSample
from rlcurr import metrics as M


class Trainer:
    def __init__(self, cfg: Config, log=print):
        self.cfg, self.log = cfg, log
        # Everything that can fail on user input happens before the run directory exists.
        self.env = cfg.env.build(cfg.seed)
        self.model_dir = prepare_model(cfg, self.env, log=log)
        self.tokenizer = load_tokenizer(self.model_dir)
        chat = has_chat_template(self.tokenizer)
        self.rewards = RewardRunner(reward_specs(cfg.rewards, self.env.default_rewards), cfg.reward, conversational=chat)
        # Eval accuracy = the environment's own verifier (its first default reward) > 0.
        self.verifier = RewardRunner([RewardSpec(name=self.env.default_rewards[0])], cfg.reward, conversational=chat)
        self.controller = CurriculumController(
            cfg.curriculum, {d: self.env.train_prompts(d) for d in self.env.distributions()},
            prompts_per_step=cfg.trainer.prompts_per_step, n=cfg.rollout.n, temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p, max_tokens=cfg.rollout.max_tokens, total_steps=cfg.trainer.steps, seed=cfg.seed)
        self.run_dir = cfg.run_dir

    # ------------------------------------------------------------------ set-up

    def start(self, resume: bool = False) -> int:
        """Create (or reopen) the run directory and the actors; return the first step to run."""
        if resume:
            first = self._resume_point()
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not self.cfg.trainer.overwrite:
                raise UserError(f"run directory {self.run_dir} already exists; pass trainer.overwrite=true "
                                f"or choose another trainer.output_dir")
            shutil.rmtree(self.run_dir)
        if not resume:
            first = 0
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
        if first > 0:
            self._restore(first - 1)
        if first > 0 or c.model.lora is not None:  # rollouts start from the learner's (merged) weights
            self.sync()
        return first

    def run(self, resume: bool = False) -> None:
        self.train(self.start(resume))

    def train(self, first: int) -> None:
        """Steps `first`..steps-1, saving every `save_every`, at the end, and on SIGINT/SIGTERM."""
        stop = _StopFlag()
        try:
            self.logger.start_progress(self.cfg.trainer.steps, first)
            if first == 0:
                self.record_eval()
            for t in range(first, self.cfg.trainer.steps):
                self.step(t)
                last = t == self.cfg.trainer.steps - 1
                every = self.cfg.trainer.save_every
                if last or stop.raised or (every and (t + 1) % every == 0):
                    self.save(t)
                if stop.raised:
                    self.log(f"stopped by {stop.raised} after step {t}; checkpoint saved. "
                             f"Continue with: rlcurr train --resume {self.run_dir}")
                    break
        finally:
            stop.restore()
            self.logger.close()

    # ------------------------------------------------------------------ checkpoints

    def save(self, t: int) -> None:
        def write(tmp: Path) -> None:
            ray.get(self.learner.save_checkpoint.remote(str(tmp)))
            save_state(tmp / STATE_FILE, {"step": t, "curriculum": self.controller.state_dict(), "rng": rng_state()})

        save_checkpoint(self.run_dir, t, write, self.cfg.trainer.keep_checkpoints)

    def _resume_point(self) -> int:
        skipped: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = find_latest_checkpoint(self.run_dir, skipped=skipped)
        for msg in skipped:
            self.log(f"warning: {msg}")
        if ckpt is None:
            raise UserError(f"{self.run_dir}: no complete checkpoint to resume from")
        self._resume_ckpt = ckpt
        step = load_state(ckpt / STATE_FILE)["step"]
        for name in ("metrics.jsonl", "curriculum.jsonl"):
            truncate_jsonl(self.run_dir / name, step)  # every step appears exactly once
        self.log(f"resuming from {ckpt} (step {step})")
        return step + 1

    def _restore(self, step: int) -> None:
        state = load_state(self._resume_ckpt / STATE_FILE)
        ray.get(self.learner.load_checkpoint.remote(str(self._resume_ckpt)))
        self.controller.load_state_dict(state["curriculum"])
        set_rng_state(state["rng"])

    # ------------------------------------------------------------------ one step

    def step(self, t: int) -> dict:
        timer = M.PhaseTimer()
        with timer("plan"):
            plan = self.controller.plan(t)                                   # 1 plan
        with timer("rollout"):
            rolled = self.rollout(plan)                                      # 2 rollout
        with timer("reward"):
            groups = self.score(t, rolled)                                   # 3 score
        self.set_advantages(groups)
        self.controller.observe(t, groups)  # 7 observe: before guide/filter, so that all-failed and
        #                                     zero-variance groups (|A| = 0) still count for the sampler
        with timer("guide"):
            groups = self.guide(t, plan, groups)                             # 4 guide
        groups, dropped = self.filter(groups)                                # 5 filter
        self.set_advantages(groups)                                          # 6 advantages
        with timer("learn"):
            learn = ray.get(self.learner.train_step.remote(to_train_samples(groups), t))  # 8 learn
        with timer("sync"):
            self.sync()                                                      # 9 sync
        metrics = {"step": t, **M.rollout_metrics(groups, dropped), **learn, **timer.as_metrics()}
        metrics["tokens_per_s"] = metrics.get("tokens", 0) / metrics["time/step"]
        if self.should_eval(t):
            metrics.update(self.evaluate())
        self.logger.record(t, metrics, self.controller.record(t))            # 10 record
        return metrics

    def set_advantages(self, groups: list[ScoredGroup]) -> None:
        for g in groups:
            if g.advantages is None:
                g.advantages = group_advantages(self.cfg.algo.name, g.rewards)

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

    def score(self, t: int, rolled, hinted: bool = False) -> list[ScoredGroup]:
        """Run the reward functions over every answer; one ScoredGroup per prompt."""
        prompts, completions, budgets, num_tokens, per_answer = [], [], [], [], []
        for item, ids, comps in rolled:
            text = self.tokenizer.decode(ids)
            budget = self.controller.budget(t, item.prompt.distribution)
            for c in comps:
                prompts.append(text)
                completions.append(c.text)
                budgets.append(budget)
                num_tokens.append(len(c.token_ids))
                per_answer.append(item.prompt)
        scores = self.rewards.score(prompts, completions,
                                    build_columns(per_answer, budget=budgets, num_tokens=num_tokens))
        groups, i = [], 0
        for item, ids, comps in rolled:
            n = len(comps)
            groups.append(ScoredGroup(
                prompt=item.prompt, prompt_ids=ids, completions=comps, rewards=scores.totals[i : i + n],
                reward_parts={k: v[i : i + n] for k, v in scores.parts.items()}, max_tokens=item.max_tokens))
            i += n
        return groups

    def guide(self, t: int, plan: BatchPlan, groups: list[ScoredGroup]) -> list[ScoredGroup]:
        """Guide-GRPO (METHODS 4): re-roll all-failed groups with the hint in context; a re-roll
        with mixed outcomes replaces its group as off-policy answers to the hint-free prompt."""
        policy = self.controller.guidance
        if policy is None:
            return groups
        chosen = policy.select(groups)
        if not chosen:
            return groups
        failed = [groups[i] for i in chosen]
        hinted_ids = [self.encode(g.prompt, hint=g.prompt.hint) for g in failed]
        requests = [GenRequest(ids, plan.n, g.max_tokens, plan.temperature, plan.top_p)
                    for ids, g in zip(hinted_ids, failed)]
        rolled = [(PlannedPrompt(g.prompt, g.max_tokens), ids, comps)
                  for g, ids, comps in zip(failed, hinted_ids, self.generate(requests))]
        out = list(groups)
        for i, g_old, g_new in zip(chosen, failed, self.score(t, rolled)):
            g_new.behaviour_prompt_ids, g_new.prompt_ids, g_new.off_policy = g_new.prompt_ids, g_old.prompt_ids, True
            if policy.record(g_new):
                out[i] = g_new
        return out

    def filter(self, groups: list[ScoredGroup]) -> tuple[list[ScoredGroup], int]:
        if self.cfg.curriculum.dynamic_sampling is None:
            return groups, 0
        kept, dropped = dapo_filter(groups)
        self.controller.observe_filter(kept, dropped)
        return kept, len(dropped)

    def sync(self) -> None:
        weights = ray.put(ray.get(self.learner.named_weights.remote()))
        ray.get([w.load_weights.remote(weights) for w in self.rollout_workers])

    # ------------------------------------------------------------------ evaluation

    def should_eval(self, t: int) -> bool:
        every, last = self.cfg.eval.every, t == self.cfg.trainer.steps - 1
        return last or (every > 0 and (t + 1) % every == 0)

    def record_eval(self) -> None:
        """Evaluation before any RL update, logged as a step -1 line in metrics.jsonl."""
        self.logger.record_eval(self.evaluate())

    def evaluate(self) -> dict[str, float]:
        max_tokens = self.cfg.eval.max_tokens or self.cfg.rollout.max_tokens
        out = {}
        items = [PlannedPrompt(p, max_tokens) for d in self.env.distributions() for p in self.env.eval_prompts(d)]
        ids = [self.encode(it.prompt) for it in items]
        comps = self.generate([GenRequest(i, 1, max_tokens, temperature=0.0) for i in ids])
        prompts = [self.tokenizer.decode(i) for i in ids]
        scores = self.verifier.score(prompts, [c[0].text for c in comps], build_columns([it.prompt for it in items]))
        per_dist: dict[str, list[float]] = {}
        for it, s in zip(items, scores.totals):
            per_dist.setdefault(it.prompt.distribution, []).append(float(s > 0))
        for d, v in per_dist.items():
            out[f"eval/accuracy/{d}"] = sum(v) / len(v)
        learnable = [out[f"eval/accuracy/{d}"] for d in per_dist if d not in self.env.unlearnable]
        out["eval/accuracy_mean"] = sum(learnable) / max(1, len(learnable))
        return out

    def encode(self, prompt: Prompt, hint: str | None = None) -> list[int]:
        text = format_env_prompt(self.tokenizer, self.cfg.env, prompt.question, hint=hint)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self):
        self.raised: str | None = None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.raised = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def to_train_samples(groups: list[ScoredGroup]) -> list[TrainSample]:
    return [TrainSample(prompt_ids=g.prompt_ids, response_ids=c.token_ids, advantage=a,
                        rollout_logprobs=c.logprobs, behaviour_prompt_ids=g.behaviour_prompt_ids,
                        off_policy=g.off_policy)
            for g in groups for c, a in zip(g.completions, g.advantages)]


def _split_even(items: list, parts: int) -> list[list]:
    size = math.ceil(len(items) / parts) if items else 0
    return [items[i * size : (i + 1) * size] for i in range(parts)]
