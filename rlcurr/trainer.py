"""The driver loop. `Trainer.step(t)` reads as ten steps, in the order they run:

 1 plan     curriculum chooses prompts, their distribution, max_tokens, budget and temperatures:
            one BatchPlan per generation round, all the round's rollout and scoring read
 2 rollout  RolloutWorker actors generate n answers per prompt -> Rollouts
 3 score    reward functions -> ScoredGroups of the answers they scored (a failed reward leaves its
            answer out), each given its group-relative advantages here, once (pure functions;
            guide, filter and observe all read them)
 4 guide    all-failed groups are re-rolled with a hint (Guide-GRPO), kept if mixed
 5 filter   optional DAPO dynamic sampling: drop zero-variance groups, refill rounds repeat 1-5
            (or SPEED-RL, `collect_speed`: screen each prompt with a few answers, finish those
            with a pass rate inside the band, screening rounds until the batch is full)
 6 observe  the curriculum updates its statistics and gives the step's CurriculumRow
 7 d3s      optional D3S answer down-sampling at the row's keep fractions (kept answers keep their
            group's advantages)
 8 learn    LearnerGroup: old/ref logprobs, clipped loss, optimizer step
 9 sync     learner weights -> every rollout worker
10 record   metrics.jsonl, curriculum.jsonl, TensorBoard, checkpoints

The methods each step runs: docs/curriculum.md; GPUs, Ray and the asynchronous trainer:
docs/scaling.md; the files of the run directory: docs/run-directory.md.

Over 400 lines on purpose: the driver's ten steps stay in one class so that `step(t)` reads
top to bottom; the math each step calls lives in rlcurr/algos and rlcurr/curriculum.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import json
import os
import shutil
import signal
import warnings
from pathlib import Path

import ray
import yaml

from rlcurr.algos.advantages import group_advantages
from rlcurr.checkpoint import (STATE_FILE, check_checkpoint, checkpoint_dir, find_latest_checkpoint, load_state,
                               rng_state, save_checkpoint, save_state, set_rng_state, truncate_jsonl)
from rlcurr.actors import first_line
from rlcurr.cluster import (ActorNames, check_cluster, clean_run_actors, connect, cpu_thread_cap, node_address,
                            run_key)
from rlcurr.config import Config, RewardSpec, dump_config
from rlcurr.curriculum.controller import CurriculumController
from rlcurr.curriculum.filters import DynamicSamplingExhausted, d3s_subsample, dapo_filter, refill_size
from rlcurr.curriculum.row import CurriculumRow, D3SRow
from rlcurr.curriculum.speed import (SpeedExhausted, check_speed_config, in_band, merge, pass_rate, screen_cap,
                                     screen_size)
from rlcurr.errors import UserError
from rlcurr.learner.group import LearnerGroup
from rlcurr.learner.models import load_tokenizer
from rlcurr.learner.prepare import prepare_model
from rlcurr.logging import RunLogger
from rlcurr.profile import PRIOR_FILE, filter_pools, load_profile, prior_for
from rlcurr.prompting import encode_prompt, format_env_prompt, has_chat_template
from rlcurr.rewards.model_rewards import JUDGE_SAMPLES_FILE, AgreementMonitor
from rlcurr.rewards.runner import RewardRunner, build_columns, reward_specs
from rlcurr.rollout.context import rollout_model_len
from rlcurr.rollout.multiturn import generate_with_tools
from rlcurr.rollout.pool import RolloutPool, placement
from rlcurr.rollout.weight_transfer import WeightSync, requested_path, transfer_backend
from rlcurr.rollout.worker import RolloutWorker
from rlcurr.types import BatchPlan, Completion, GenRequest, PlannedPrompt, Prompt, Rollout, ScoredGroup, TrainSample
from rlcurr import metrics as M


def is_run_directory(path: Path) -> bool:
    """Whether `path` holds an rlcurr run: a metrics.jsonl, or a config.yaml that is a recipe
    (a mapping with `model` and `trainer` sections: what `dump_config` writes)."""
    if (path / "metrics.jsonl").is_file():
        return True
    try:
        data = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and {"model", "trainer"} <= set(data)


class LearnerLost(UserError):
    """A learner rank died: the run stops with one line; `--resume` continues it."""


class Trainer:
    def __init__(self, cfg: Config, log=print):
        self.cfg, self.log = cfg, log
        # Everything that can fail on user input happens before the run directory exists.
        check_speed_config(cfg)
        cpu_thread_cap()  # a bad RLCURR_CPU_THREADS is refused now, not after the run directory is written
        self.env = cfg.env.build(cfg.seed)
        check_tool_support(cfg, self.env)
        self.model_dir = prepare_model(cfg, self.env, log=log)
        self.tokenizer = load_tokenizer(self.model_dir)
        # vLLM's context: the longest prompt + max_tokens; a model too short for them is refused here
        self.max_model_len = rollout_model_len(cfg, self.env, self.tokenizer, self.model_dir)
        chat = has_chat_template(self.tokenizer)
        self.rewards = RewardRunner(reward_specs(cfg.rewards, self.env.default_rewards), cfg.reward, conversational=chat,
                                    log=log)  # reward.workers > 0: Ray actors, started at the first score
        # Eval accuracy = the environment's own verifier (its first default reward) > 0.
        self.verifier = RewardRunner([RewardSpec(name=self.env.default_rewards[0])], cfg.reward, conversational=chat,
                                     pool=self.rewards.pool)  # the same reward workers
        self.rm_monitor = AgreementMonitor.for_runner(self.rewards, log)  # model rewards vs the verifier
        self.reward_failures = {"errors": 0, "timeouts": 0, "groups_dropped": 0}  # this step's, reset by collect
        self.spent = {"answers": 0, "tokens": 0}  # this step's generated answers and tokens, reset by collect
        self.controller = self.build_controller({d: self.env.train_prompts(d) for d in self.env.distributions()})
        self.prior_metrics: dict[str, float] = {}  # profile/* at step -1, with curriculum.prompts.prior
        self.run_dir = cfg.run_dir
        self.ahead: collections.deque[CollectedBatch] = collections.deque()  # collected, not yet trained on
        self.plan_snapshots: dict[int, dict] = {}  # async: controller and reward state before plan(s), for checkpoints
        self.version = 0  # the rollout engines' weights: those after this many trainer steps

    # ------------------------------------------------------------------ set-up

    def build_controller(self, pools: dict[str, list[Prompt]]) -> CurriculumController:
        c = self.cfg
        return CurriculumController(
            c.curriculum, pools, prompts_per_step=c.trainer.prompts_per_step, n=c.rollout.n,
            temperature=c.rollout.temperature, top_p=c.rollout.top_p, max_tokens=c.rollout.max_tokens,
            total_steps=c.trainer.steps, seed=c.seed)

    def start(self, resume: bool = False) -> int:
        """Create (or reopen) the run directory and the actors; return the first step to run."""
        # The cluster has what the recipe asks for (else one error), before the run directory is touched
        self.join_cluster()
        # curriculum.prompts.prior: read (and any error raised) before the run directory is touched
        prior_record = None
        if not resume and self.cfg.curriculum.prompts.prior is not None:
            prior_record = self.apply_prior(load_profile(self.cfg.curriculum.prompts.prior))
        if resume:
            first = self._resume_point()
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not self.cfg.trainer.overwrite:
                raise UserError(f"run directory {self.run_dir} already exists; pass trainer.overwrite=true "
                                f"or choose another trainer.output_dir")
            if not is_run_directory(self.run_dir):  # overwrite deletes: never a directory rlcurr did not write
                raise UserError(f"trainer.overwrite: {self.run_dir} is not an rlcurr run directory (no config.yaml "
                                f"or metrics.jsonl of a run in it); refusing to delete it. Choose another "
                                f"trainer.output_dir")
            shutil.rmtree(self.run_dir)
        if not resume:
            first = 0
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
            if prior_record is not None:
                (self.run_dir / PRIOR_FILE).write_text(json.dumps(prior_record) + "\n")
        elif self.cfg.curriculum.prompts.keep_pass is not None:
            self.reapply_prior()
        self.logger = RunLogger(self.run_dir, self.cfg, resume_step=first if resume else None)
        r, c = self.cfg.rollout, self.cfg
        transfer = self.place_actors()
        rollout_threads, learner_threads = cpu_threads(c, ray.cluster_resources().get("GPU", 0) > 0)
        self.learner = LearnerGroup(  # learner.num_workers data-parallel ranks (synchronous API)
            str(self.model_dir), c.learner, c.algo, c.trainer.steps, dtype=c.model.dtype, lora_cfg=c.model.lora,
            seed=c.seed, actor_options=self.placement.learner, temperature=r.temperature, response_limit=r.max_tokens,
            cpu_threads=learner_threads)
        learner_node_ids = ray.get([w.node_id.remote() for w in self.learner.workers])
        self.learner_nodes = [node_address(n) for n in learner_node_ids]
        self.start_rollout_pool(transfer, rollout_threads)
        # Every engine on the learner's node: weights go through one shared-memory file, not Ray's store
        rollout_nodes = self.rollout_pool.node_ids()
        self.shared_sync = rollout_nodes == {learner_node_ids[0]}  # rank 0 writes the shared file
        self.log(f"placement: learner on {', '.join(sorted(set(self.learner_nodes)))}; rollout workers on "
                 f"{', '.join(sorted(node_address(n) for n in rollout_nodes))}; weights sync through "
                 f"{sync_route(transfer, self.shared_sync)}")
        self.weight_sync = WeightSync(self.learner, self.rollout_pool, backend=transfer, shared=self.shared_sync,
                                      engine_copies=self.rollout_pool.weight_file_writers(),
                                      tensor_parallel_size=r.tensor_parallel_size, log=self.log)
        self.version = first
        if first > 0:
            self._restore(first - 1)
        if first > 0 or c.model.lora is not None:  # rollouts start from the learner's (merged) weights
            self.sync()
        return first

    def join_cluster(self, owner: Path | None = None) -> None:
        """Start or join Ray (rlcurr.cluster: bounded in time), check that the cluster has what the
        recipe asks for, and kill actors an earlier driver of this run left behind. `owner`: the
        directory the actors are named after (default the run directory; `rlcurr profile` gives
        its own, so that it never touches a training run's actors)."""
        connect()
        check_cluster(self.cfg, self.log)
        self.actor_names = ActorNames(run_key(self.cfg.name, owner or self.run_dir))
        if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and not self.run_dir.is_absolute():
            self.log(f"warning: running as a Ray job with a relative trainer.output_dir: the run directory is "
                     f"{self.run_dir.resolve()}, inside the job's working directory, which Ray may delete; give an "
                     f"absolute trainer.output_dir on storage every node can read (docs/scaling.md)")
        left = clean_run_actors(self.actor_names.key)
        if left:
            self.log(f"killed {len(left)} actor(s) an earlier driver of this run left running: {', '.join(left)}")

    def place_actors(self) -> str | None:
        """Decide where the actors go (`self.placement`); return the weight-transfer backend the
        rollout engines are built with."""
        r, c, res = self.cfg.rollout, self.cfg, self.cfg.resources
        # GPU clusters: rollout and learner workers on separate GPUs (or shared, colocated); CPU: only the
        # roles' node resources, when the recipe pins them to nodes
        self.placement = placement(r.num_workers, c.learner.num_workers, colocate=res.colocate,
                                   gpus_per_rollout_worker=res.gpus_per_rollout_worker or r.tensor_parallel_size,
                                   gpus_per_learner_worker=res.gpus_per_learner_worker or 1,
                                   tensor_parallel_size=r.tensor_parallel_size,
                                   rollout_resource=res.rollout_node_resource,
                                   learner_resource=res.learner_node_resource,
                                   ready_timeout_s=res.placement_timeout_s)
        self.placement.learner = [{**options, **self.actor_names.options("learner", rank)}
                                  for rank, options in enumerate(self.placement.learner)]
        # vLLM engines on GPUs take weights through vLLM's weight transfer (rlcurr.rollout.weight_transfer)
        return transfer_backend(r.engine, gpus=ray.cluster_resources().get("GPU", 0) > 0, colocate=res.colocate,
                                num_rollout=r.num_workers, num_learner=c.learner.num_workers,
                                requested=requested_path())

    def start_rollout_pool(self, transfer: str | None, threads: int | None) -> RolloutPool:
        """The rollout workers (`self.rollout_pool`), placed by `place_actors`, loading the prepared
        model: `threads` torch threads each (None: every core), `transfer` their weight-transfer backend."""
        r, c, res = self.cfg.rollout, self.cfg, self.cfg.resources

        def rollout_worker(i: int):  # also called by the pool to replace a worker that died
            return RolloutWorker.options(**self.placement.rollout[i], **self.actor_names.options("rollout", i)).remote(
                r.engine, str(self.model_dir), dtype=c.model.dtype, seed=(c.seed if r.seed is None else r.seed) + i,
                threads=threads, gpu_memory_utilization=r.gpu_memory_utilization, tensor_parallel_size=r.tensor_parallel_size,
                sleep_mode=res.colocate, max_model_len=self.max_model_len, weight_transfer=transfer)

        self.rollout_pool = RolloutPool(rollout_worker, r.num_workers, max_restarts=r.max_restarts,
                                        colocate=res.colocate, log=self.log, start_timeout_s=res.placement_timeout_s)
        return self.rollout_pool

    def apply_prior(self, prior: dict[str, tuple[str, int, int]]) -> dict:
        """A fresh run with curriculum.prompts.prior (rlcurr.profile): keep_pass drops train prompts
        (the controller is rebuilt on the pools left), and the controller is seeded with the profiled
        counts of the prompts it has. Returns what `start` writes to <run_dir>/prior.json: the
        profile, its answer count and the dropped uids (a resume filters the pools by them, without
        the profile). Runs before the run directory is written: a pool left empty is a UserError."""
        spec = self.cfg.curriculum.prompts
        pools = {d: self.env.train_prompts(d) for d in self.env.distributions()}
        dropped: list[str] = []
        if spec.keep_pass is not None:
            pools, dropped = filter_pools(pools, prior, spec.keep_pass)
            if dropped:
                self.controller = self.build_controller(pools)
        known = prior_for(pools, prior)  # the profiled prompts this run trains on
        self.controller.seed_prior(known)
        answers = sum(a for _, _, a in prior.values())
        self.prior_metrics = {"profile/answers": answers, "profile/prompts_seeded": len(known),
                              "profile/prompts_dropped": len(dropped)}
        band = "" if spec.keep_pass is None else f"; keep_pass {list(spec.keep_pass)} dropped {len(dropped)}"
        self.log(f"prior {spec.prior}: {len(prior)} profiled prompts ({answers} answers), seeded {len(known)}{band}")
        return {"prior": spec.prior, "keep_pass": spec.keep_pass, **self.prior_metrics, "dropped": dropped}

    def reapply_prior(self) -> None:
        """A resumed run with keep_pass: the pools lose the prompts the first start dropped (its
        prior.json), not read from the profile again; the checkpoint holds the seeded state."""
        path = self.run_dir / PRIOR_FILE
        try:
            dropped = set(json.loads(path.read_text(encoding="utf-8"))["dropped"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: cannot read the prompts curriculum.prompts.keep_pass dropped ({e})") from None
        if dropped:
            self.controller = self.build_controller(
                {d: [p for p in self.env.train_prompts(d) if p.uid not in dropped] for d in self.env.distributions()})

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
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
            lost = self.learner_lost(err)  # rollout workers are replaced by the pool; a learner rank is not
            if lost is None:
                raise
            raise LearnerLost(lost) from None
        finally:
            stop.restore()
            self.logger.close()
            with contextlib.suppress(ray.exceptions.RayError):  # a learner rank lost with its node
                self.learner.close_shared_weights()
            self.rewards.close()  # the reward workers (shared with the verifier), if any

    def learner_lost(self, err: ray.exceptions.RayError) -> str | None:
        """The one line a run stops with when a learner rank died (its node lost, killed, out of
        memory): which rank, on which node, and how to continue. None when every rank answers (the
        error was not the learner's)."""
        ranks = self.learner.dead_ranks(timeout_s=self.cfg.resources.placement_timeout_s)
        if not ranks:
            return None
        who, node = f"learner rank {ranks[0]}", self.learner_nodes[ranks[0]]
        why = first_line(err)
        saved = find_latest_checkpoint(self.run_dir)
        since = f"the last complete checkpoint is {saved.name}" if saved else "no checkpoint was saved yet"
        return (f"{who} on {node} died ({why}); the run stopped and {since}. Continue on a healthy cluster with: "
                f"rlcurr train --resume {self.run_dir}")

    # ------------------------------------------------------------------ checkpoints

    def save(self, t: int) -> None:
        """Checkpoint after step t. Asynchronous: the batches already collected for steps > t are
        not saved (a resume collects them again) and the curriculum is saved as it was before
        step t + 1 was planned, i.e. having observed exactly the batches the learner trained on."""
        snapshot = self.plan_snapshots.get(t + 1) or self.snapshot()

        def write(tmp: Path) -> None:
            self.learner.save_checkpoint(str(tmp))
            save_state(tmp / STATE_FILE, {"step": t, **snapshot, "rng": rng_state(),
                                          "rollout_rng": self.rollout_pool.get_rng_state()})

        save_checkpoint(self.run_dir, t, write, self.cfg.trainer.keep_checkpoints)

    def snapshot(self) -> dict:
        """The driver-side state a checkpoint keeps: the curriculum and the rewards' own state."""
        return {"curriculum": copy.deepcopy(self.controller.state_dict()), "rewards": self.rewards.state_dict()}

    def _resume_point(self) -> int:
        skipped: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = find_latest_checkpoint(self.run_dir, skipped=skipped)
        for msg in skipped:
            self.log(f"warning: {msg}")
        if ckpt is None:
            raise UserError(f"{self.run_dir}: no complete checkpoint to resume from")
        step = load_state(ckpt / STATE_FILE)["step"]
        if ckpt != checkpoint_dir(self.run_dir, step):
            raise UserError(f"{ckpt / STATE_FILE} says step {step}; the folder's name says otherwise")
        for name in ("metrics.jsonl", "curriculum.jsonl", JUDGE_SAMPLES_FILE):
            truncate_jsonl(self.run_dir / name, step)  # every step appears exactly once
        self.log(f"resuming from {ckpt} (step {step})")
        return step + 1

    def _restore(self, step: int) -> None:
        """Load checkpoint `step` (checkpoints/step_<step>): learner (weights, optimizer, its RNGs),
        curriculum, the driver's RNGs and every rollout engine's sampling RNG, so the steps after
        it draw what the uninterrupted run drew."""
        ckpt = checkpoint_dir(self.run_dir, step)
        why = check_checkpoint(ckpt)
        if why is not None:
            raise UserError(f"cannot restore {ckpt}: {why}")
        state = load_state(ckpt / STATE_FILE)
        if state.get("step") != step:
            raise UserError(f"{ckpt / STATE_FILE} is for step {state.get('step')}, expected {step}")
        self.learner.load_checkpoint(str(ckpt))
        self.controller.load_state_dict(state["curriculum"])
        self.rewards.load_state_dict(state.get("rewards") or {})  # absent in checkpoints written before it was kept
        set_rng_state(state["rng"])
        if state.get("rollout_rng") is not None:
            self.rollout_pool.set_rng_state(state["rollout_rng"])
        else:  # a checkpoint written before rollout RNGs were saved
            self.log("warning: the checkpoint has no rollout RNG state; rollouts after the resume are not "
                     "those of an uninterrupted run")

    # ------------------------------------------------------------------ one step

    def step(self, t: int) -> dict:
        """One trainer step. Synchronous (max_staleness 0): collect batch t, then learn on it.
        Asynchronous (k >= 1): batch t was collected k steps ago; the learner's update on it is
        submitted first and batch t + k is collected while it runs, with the weights of step t."""
        timer = M.PhaseTimer()
        k, steps = self.cfg.trainer.max_staleness, self.cfg.trainer.steps
        if not self.ahead:  # sync: every step; async: the first step, and the first after a resume
            for s in range(t, min(t + max(k, 1), steps)):
                self.ahead.append(self.collect_batch(s, t, timer))     # 1-6
        batch = self.ahead.popleft()
        if batch.step != t or t - batch.policy_version > k:
            raise RuntimeError(f"internal: step {t} got batch {batch.step} of policy version {batch.policy_version}")
        for s in [s for s in self.plan_snapshots if s <= t]:
            del self.plan_snapshots[s]
        row = batch.row
        groups, token_keep_frac, d3s_stats = self.downsample(batch.groups, row.d3s)  # 7 D3S: fewer answers/tokens
        samples = to_train_samples(groups, batch.policy_version)  # empty only if reward failures dropped every group
        self.rollout_pool.sleep()  # colocated mode only: vLLM frees the GPU for the learner
        update = self.learner.submit_train_step(samples, t, token_keep_frac=token_keep_frac) if samples else None
        if k and t + k < steps:
            self.ahead.append(self.collect_batch(t + k, t, timer))     # 1-6 for step t + k, during 8
        with timer("learn"):                                                 # 8 learn
            learn = self.learner.result(update) if update else {}
        sync_stats = {}
        with timer("sync"):
            self.rollout_pool.wake_up()
            if samples:
                sync_stats = self.sync()                                     # 9 sync
        self.version = t + 1
        metrics = {"step": t, **batch.metrics, **d3s_stats, **learn, **sync_stats,
                   "rollout/restarts": self.rollout_pool.restarts, "async/lag": t - batch.policy_version}
        metrics.update(timer.as_metrics())  # time/step leaves evaluation out
        metrics["tokens_per_s"] = metrics.get("tokens", 0) / metrics["time/step"]
        metrics["time/outside_gen_learn_frac"] = outside_share(metrics, asynchronous=k > 0)
        if self.should_eval(t):
            eval_metrics = self.evaluate()
            metrics.update(eval_metrics)
            self.observe_eval(t, eval_metrics)
        row.policy_version, row.lag = batch.policy_version, t - batch.policy_version
        row.alerts = self.controller.current_alerts(row)
        if row.d3s is not None:
            row.d3s.answers_kept_frac = d3s_stats["d3s/answers_kept_frac"]
            row.d3s.tokens_kept_frac = learn.get("d3s/tokens_kept_frac")
        self.logger.record(t, metrics, row.to_json())                        # 10 record
        return metrics

    def collect_batch(self, s: int, now: int, timer: M.PhaseTimer) -> "CollectedBatch":
        """Steps 1-6 for trainer step `s`, run during step `now` (s - now <= max_staleness) with
        the rollout engines' current weights; the curriculum observes the groups as step s's and
        its CurriculumRow is taken now (the probabilities after observing them)."""
        if self.cfg.trainer.max_staleness:  # the controller before plan(s): a checkpoint of step s-1 resumes from it
            self.plan_snapshots[s] = self.snapshot()
        # 1 plan, 2 rollout, 3 score (+ advantages), 4 guide, 5 filter: one round, or DAPO refill rounds
        groups, generated, round_stats = self.collect(s, timer)
        self.controller.observe(s, generated)  # 6 observe, once per step: every on-policy group of every
        #   round, before guide/filter replaced or dropped any, so that all-failed and zero-variance
        #   groups (|A| = 0) still count for the sampler
        metrics = {**M.rollout_metrics(groups, round_stats.pop("groups_dropped")), **round_stats,
                   **self.reward_failure_metrics()}
        return CollectedBatch(s, groups, metrics, self.controller.row(s), self.version, now)

    def collect(self, t: int, timer: M.PhaseTimer) -> tuple[list[ScoredGroup], list[ScoredGroup], dict]:
        """Steps 1-5 in generation rounds; returns (the batch, every on-policy group generated, stats).

        Without dynamic sampling: one round of prompts_per_step prompts, nothing dropped. With it
        (DAPO, docs/curriculum.md "DAPO dynamic sampling"): each round's zero-variance groups are
        dropped, and while fewer than prompts_per_step groups are kept, a refill round plans
        `refill_size` more prompts; surplus kept groups are cut off. Past
        curriculum.dynamic_sampling.max_rounds rounds the run stops with DynamicSamplingExhausted
        (see filters.py for why not train on a part batch).
        Guidance runs on every round (its max_rerolls is per step): a hinted re-roll with mixed
        outcomes fills a batch slot like any mixed group, so it saves refill rounds.
        A group that reward failures left without a group-relative signal (`has_signal`) is dropped
        before anything sees it; without dynamic sampling the batch is then smaller.
        """
        need = self.cfg.trainer.prompts_per_step
        self.spent = {"answers": 0, "tokens": 0}  # every training answer generated this step (rollout, guide)
        self.reward_failures = {"errors": 0, "timeouts": 0, "groups_dropped": 0}  # counted by score
        if self.cfg.curriculum.speed is not None:
            return self.collect_speed(t, timer)
        batch: list[ScoredGroup] = []
        generated: list[ScoredGroup] = []
        dropped = rounds = 0
        while len(batch) < need and rounds < (self.controller.max_rounds or 1):
            k = None if rounds == 0 else refill_size(need - len(batch), len(batch), len(generated), need)
            with timer("plan"):
                plan = self.controller.plan(t, num_prompts=k)                # 1 plan
            with timer("rollout"):
                rolled = self.rollout(plan)                                  # 2 rollout
            with timer("reward"):
                groups = self.set_advantages(self.score(t, rolled))          # 3 score, advantages
            self.reward_failures["groups_dropped"] += sum(not has_signal(g) for g in groups)
            groups = [g for g in groups if has_signal(g)]
            generated += groups
            with timer("guide"):
                groups = self.guide(t, plan, groups)                         # 4 guide
            kept, n_dropped = self.filter(groups)                            # 5 filter
            batch += kept
            dropped += n_dropped
            rounds += 1
        if len(batch) < need and self.cfg.curriculum.dynamic_sampling is not None:
            raise DynamicSamplingExhausted(rounds, len(batch), need)
        stats: dict = {"groups_dropped": dropped, "rollout/answers_generated": self.spent["answers"],
                       "rollout/tokens_generated": self.spent["tokens"], **M.generation_metrics(generated)}
        if self.cfg.curriculum.dynamic_sampling is not None:
            stats.update({"filter/rounds": rounds, "filter/groups_generated": len(generated),
                          "filter/groups_surplus": len(batch) - need})
        return batch[:need], generated, stats

    def collect_speed(self, t: int, timer: M.PhaseTimer) -> tuple[list[ScoredGroup], list[ScoredGroup], dict]:
        """`collect` with SPEED-RL screening (docs/curriculum.md "SPEED-RL"; the rule, and where ours
        differs from the authors', in curriculum/speed.py). Each round plans candidates
        (prompts_per_step in round 0, then `screen_size` from the share kept so far), gives each
        speed.screen_n answers, and completes the prompts whose screened pass rate is strictly
        inside (low, high) - as many as the batch still misses, in plan order - with
        rollout.n - screen_n more answers, merged with the screening answers into one group whose
        advantages are computed over all n answers.
        With dynamic_sampling, zero-variance completed groups are dropped as DAPO drops them.

        `generated` (what observe gets, once per step) holds, in plan order, the screening-only
        group (screen_n answers) of every prompt not completed and the whole group of every
        completed prompt (its screening part is not passed separately). Past speed.max_rounds
        rounds: SpeedExhausted. Guidance is refused with SPEED (check_speed_config).
        """
        sp, need, n = self.cfg.curriculum.speed, self.cfg.trainer.prompts_per_step, self.cfg.rollout.n
        cap = screen_cap(need, n, sp.screen_n)
        batch: list[ScoredGroup] = []
        generated: list[ScoredGroup] = []
        dropped = rounds = screened = accepted = completed = 0
        while len(batch) < need and rounds < sp.max_rounds:
            k = None if rounds == 0 else screen_size(need - len(batch), len(batch), screened, cap)
            with timer("plan"):
                plan = self.controller.plan(t, num_prompts=k)                # 1 plan
            with timer("rollout"):
                rolled = self.rollout(dataclasses.replace(plan, n=sp.screen_n))  # 2 rollout: screening
            with timer("reward"):
                screens = self.set_advantages(self.score(t, rolled))         # 3 score, advantages
            screened += len(screens)
            ok = [i for i, g in enumerate(screens) if has_signal(g) and in_band(pass_rate(g), sp.low, sp.high)]
            accepted += len(ok)
            chosen = ok[:need - len(batch)]
            full: dict[int, ScoredGroup] = {}
            if chosen:  # 2, 3 again: the rest of each chosen group
                rest_plan = dataclasses.replace(plan, items=[plan.items[i] for i in chosen], n=n - sp.screen_n)
                with timer("rollout"):
                    rest = self.rollout(rest_plan)
                with timer("reward"):
                    rest_groups = self.score(t, rest)
                    full = dict(zip(chosen, self.set_advantages(
                        [merge(screens[i], g) for i, g in zip(chosen, rest_groups)])))
            completed += len(full)
            own = [full.get(i, g) for i, g in enumerate(screens)]  # plan order
            self.reward_failures["groups_dropped"] += sum(not has_signal(g) for g in own)
            generated += [g for g in own if has_signal(g)]
            kept, n_dropped = self.filter([full[i] for i in chosen if has_signal(full[i])])  # 5 filter
            batch += kept
            dropped += n_dropped
            rounds += 1
        if len(batch) < need:
            raise SpeedExhausted(rounds, len(batch), need, screened, accepted)
        stats: dict = {"groups_dropped": dropped, "rollout/answers_generated": self.spent["answers"],
                       "rollout/tokens_generated": self.spent["tokens"], **M.generation_metrics(generated),
                       "speed/screened": screened, "speed/accepted": accepted, "speed/completed": completed,
                       "speed/rounds": rounds}
        if self.cfg.curriculum.dynamic_sampling is not None:
            stats.update({"filter/rounds": rounds, "filter/groups_generated": len(generated),
                          "filter/groups_surplus": len(batch) - need})
        return batch[:need], generated, stats

    def downsample(self, groups: list[ScoredGroup], d3s: D3SRow | None) -> tuple[list[ScoredGroup], float | None, dict]:
        """D3S (docs/curriculum.md "D3S") at the step's keep fractions (its row's d3s: n, k; None
        without D3S): each group keeps its d3s_num_keep(G, n) answers of maximal advantage
        variance; k is the learner's token keep fraction."""
        if d3s is None:
            return groups, None, {}
        n_frac, k_frac = d3s.n, d3s.k
        kept = d3s_subsample(groups, n_frac)
        answers = sum(g.n for g in groups)
        return kept, k_frac, {"d3s/n": n_frac, "d3s/k": k_frac,
                              "d3s/answers_kept_frac": sum(g.n for g in kept) / max(answers, 1)}

    def set_advantages(self, groups: list[ScoredGroup]) -> list[ScoredGroup]:
        """Step 3's advantages, set once on groups fresh from `score` (training rounds in `collect`,
        hinted re-rolls in `guide`), over each group's scored answers; returns `groups`."""
        for g in groups:
            g.advantages = group_advantages(self.cfg.algo.name, g.rewards)
        return groups

    def reward_failure_metrics(self) -> dict[str, int]:
        """This step's answers whose reward failed (they were left out of their groups): errors and
        timeouts (an answer counts once in each kind it had), and groups dropped for it."""
        return {**{f"reward/{k}": v for k, v in self.reward_failures.items()}, **self.rm_monitor.step_metrics()}

    def train_request(self, plan: BatchPlan, prompt_ids: list[int], item: PlannedPrompt) -> GenRequest:
        """A training rollout request for plan item `item`; with EAD (docs/curriculum.md "EAD") it
        carries the item's temperature per answer position. The learner scores every answer at the
        single rollout.temperature, so EAD answers are off-policy; algo.tis_cap (truncated IS,
        min(pi_old / pi_rollout, cap)) corrects for that."""
        return GenRequest(prompt_ids, plan.n, item.max_tokens, plan.temperature, plan.top_p,
                          temperatures=item.temperatures)

    def rollout(self, plan: BatchPlan) -> list[Rollout]:
        encoded = [self.encode(item.prompt) for item in plan.items]
        requests = [self.train_request(plan, ids, item) for (ids, _), item in zip(encoded, plan.items)]
        completions = self.generate_for_training(requests, [item.prompt for item in plan.items])
        return [Rollout(item, ids, text, comps) for item, (ids, text), comps in zip(plan.items, encoded, completions)]

    def generate_for_training(self, requests: list[GenRequest], prompts: list[Prompt]) -> list[list[Completion]]:
        """`generate`, counting the answers and tokens spent (the compute a curriculum saves; tool
        outputs are not generated, so not counted)."""
        completions = self.generate(requests, prompts)
        self.spent["answers"] += sum(len(cs) for cs in completions)
        self.spent["tokens"] += sum(c.num_generated for cs in completions for c in cs)
        return completions

    def generate(self, requests: list[GenRequest], prompts: list[Prompt]) -> list[list[Completion]]:
        """Spread over the rollout workers (contiguous shares, dead workers replaced); results in
        order. In a tool environment, turn by turn (rlcurr.rollout.multiturn): `prompts[i]` is the
        task of `requests[i]`, which the environment's tool reads."""
        if not self.env.tool_stop:
            return self.rollout_pool.generate(requests)
        return generate_with_tools(self.rollout_pool.generate, requests, prompts, self.env,
                                   lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def rollout_workers(self) -> list:
        """The live RolloutWorker actors (replacements included)."""
        return self.rollout_pool.workers

    def score(self, t: int, rolled: list[Rollout]) -> list[ScoredGroup]:
        """Run the reward functions over every answer; one ScoredGroup per prompt.

        A group holds the answers every reward function scored: under `reward.on_error: none` an
        answer whose reward raised or timed out is left out (counted in `num_failed` and in this
        step's `reward/errors` / `reward/timeouts`) instead of training as a 0. `correct` is the
        environment verifier's judgement of each answer (see `verify`). The length reward's budget
        is each planned prompt's (`PlannedPrompt.budget`)."""
        prompts, completions, budgets, num_tokens, per_answer = [], [], [], [], []
        for r in rolled:
            for c in r.completions:
                prompts.append(r.prompt_text)
                completions.append(c.text)
                budgets.append(r.planned.budget)
                num_tokens.append(c.num_generated)
                per_answer.append(r.planned.prompt)
        columns = build_columns(per_answer, budget=budgets, num_tokens=num_tokens)
        scores = self.rewards.score(prompts, completions, columns)
        correct = self.verify(prompts, completions, columns, scores.parts)
        self.rm_monitor.observe(t, scores.parts, correct, self.run_dir)  # reward/rm_agreement, judge_samples.jsonl
        self.reward_failures["errors"] += sum(scores.errors)
        self.reward_failures["timeouts"] += sum(scores.timeouts)
        groups, i = [], 0
        for r in rolled:
            kept = [j for j in range(i, i + len(r.completions)) if not scores.failed[j]]
            groups.append(ScoredGroup(
                prompt=r.planned.prompt, prompt_ids=r.prompt_ids, completions=[r.completions[j - i] for j in kept],
                rewards=[scores.totals[j] for j in kept],
                reward_parts={k: [v[j] for j in kept] for k, v in scores.parts.items()},
                max_tokens=r.planned.max_tokens, correct=[correct[j] for j in kept],
                num_failed=len(r.completions) - len(kept)))
            i += len(r.completions)
        return groups

    def verify(self, prompts: list[str], completions: list[str], columns: dict, parts: dict) -> list[bool]:
        """Per answer: the environment's verifier (its first default reward) scored it > 0. When the
        verifier is one of the training rewards its part in `parts` is reused, else it runs here."""
        name = self.verifier.names[0]
        part = parts.get(name)
        if part is None:
            part = self.verifier.score(prompts, completions, columns).parts[name]
        return [v is not None and v > 0 for v in part]

    def guide(self, t: int, plan: BatchPlan, groups: list[ScoredGroup]) -> list[ScoredGroup]:
        """Guide-GRPO (docs/curriculum.md "Guide-GRPO"): re-roll all-failed groups with the hint in
        context (each with its plan item's max_tokens, budget and temperatures); a re-roll with
        mixed outcomes replaces its group as off-policy answers to the hint-free prompt."""
        policy = self.controller.guidance
        if policy is None:
            return groups
        chosen = policy.select(groups)
        if not chosen:
            return groups
        failed = [groups[i] for i in chosen]
        planned = {item.prompt.uid: item for item in plan.items}  # a uid's items are all alike
        items = [planned[g.prompt.uid] for g in failed]
        hinted = [self.encode(g.prompt, hint=g.prompt.hint) for g in failed]
        requests = [self.train_request(plan, ids, item) for (ids, _), item in zip(hinted, items)]
        rolled = [Rollout(item, ids, text, comps)
                  for item, (ids, text), comps in zip(items, hinted,
                                                      self.generate_for_training(requests, [g.prompt for g in failed]))]
        out = list(groups)
        for i, g_old, g_new in zip(chosen, failed, self.set_advantages(self.score(t, rolled))):  # 3 again
            g_new.behaviour_prompt_ids, g_new.prompt_ids, g_new.off_policy = g_new.prompt_ids, g_old.prompt_ids, True
            if policy.record(g_new) and has_signal(g_new):
                out[i] = g_new
        return out

    def filter(self, groups: list[ScoredGroup]) -> tuple[list[ScoredGroup], int]:
        if self.cfg.curriculum.dynamic_sampling is None:
            return groups, 0
        kept, dropped = dapo_filter(groups)
        self.controller.observe_filter(kept, dropped)
        return kept, len(dropped)

    def sync(self, wait: bool = False) -> dict[str, float]:
        """Rank 0's weights to every rollout engine (rlcurr.rollout.weight_transfer.WeightSync);
        returns the sync's metrics (`sync/path_<path>`, `sync/seconds`, `sync/gbytes`). vLLM's
        weight transfer (GPUs) puts them into the engines before returning. Otherwise an ObjectRef,
        never fetched here: each rollout worker resolves it from the learner actor's object store
        (no copy through the driver); on one node, with room in /dev/shm, the ref holds only the
        layout of a shared-memory file rank 0 wrote them to. Not waited for: each engine loads them
        before its next request (the pool's next call raises a failed load). The file is rewritten
        only by the next sync, which first waits for every engine's load."""
        return self.weight_sync.sync(wait=wait)

    # ------------------------------------------------------------------ evaluation

    def should_eval(self, t: int) -> bool:
        every, last = self.cfg.eval.every, t == self.cfg.trainer.steps - 1
        return last or (every > 0 and (t + 1) % every == 0)

    def record_eval(self) -> None:
        """Evaluation before any RL update, logged as a step -1 line in metrics.jsonl."""
        eval_metrics = self.evaluate()
        self.logger.record_eval({**eval_metrics, **self.prior_metrics})
        self.observe_eval(-1, eval_metrics)

    def observe_eval(self, t: int, eval_metrics: dict[str, float]) -> None:
        """The curriculum sees each distribution's held-out accuracy (`eval/accuracy/<dist>` -> dist)
        after an evaluation at step t (-1: before RL), for its forgetting alerts."""
        prefix = "eval/accuracy/"
        self.controller.observe_eval(t, {k[len(prefix):]: v for k, v in eval_metrics.items() if k.startswith(prefix)})

    def evaluate(self) -> dict[str, float]:
        max_tokens = self.cfg.eval.max_tokens or self.cfg.rollout.max_tokens
        out = {}
        items = [PlannedPrompt(p, max_tokens) for d in self.env.distributions() for p in self.env.eval_prompts(d)]
        encoded = [self.encode(it.prompt) for it in items]
        k, temperature = self.cfg.eval.samples, self.cfg.eval.temperature
        comps = self.generate([GenRequest(ids, k, max_tokens, temperature=temperature) for ids, _ in encoded],
                              [it.prompt for it in items])
        prompts = [text for _, text in encoded for _ in range(k)]
        per_answer = [it.prompt for it in items for _ in range(k)]
        scores = self.verifier.score(prompts, [c.text for cs in comps for c in cs], build_columns(per_answer))
        per_dist: dict[str, list[float]] = {}
        for p, s in zip(per_answer, scores.totals):
            per_dist.setdefault(p.distribution, []).append(float(s is not None and s > 0))
        for d, v in per_dist.items():
            out[f"eval/accuracy/{d}"] = sum(v) / len(v)
        learnable = [out[f"eval/accuracy/{d}"] for d in per_dist if d not in self.env.unlearnable]
        out["eval/accuracy_mean"] = sum(learnable) / max(1, len(learnable))
        return out

    def encode(self, prompt: Prompt, hint: str | None = None) -> tuple[list[int], str]:
        """(token ids, text) of the prompt the model is conditioned on; `encode_prompt` follows the
        tokenizer's BOS convention. Reward functions get the text, not the ids decoded back."""
        text = format_env_prompt(self.tokenizer, self.cfg.env, prompt.question, hint=hint)
        return encode_prompt(self.tokenizer, text), text


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


def sync_route(transfer: str | None, shared: bool) -> str:
    """How weights will reach the engines, for the placement log line (rlcurr.rollout.weight_transfer)."""
    if transfer is not None:
        return f"vLLM's weight transfer ({transfer})"
    return "a shared-memory file (one node), when /dev/shm has room" if shared else "Ray's object store (several nodes)"


def cpu_threads(cfg: Config, gpus: bool) -> tuple[int | None, int | None]:
    """(torch threads per rollout worker, threads the learner ranks share); None = all cores.
    A synchronous step runs generation and the update one after the other, so each takes every
    core. An asynchronous one on CPU runs them at once: two pools of threads on the same cores
    spin against each other (docs/scaling.md, "Asynchronous training"),
    so the cores are split, half to the learner, half to the rollout workers. With GPUs the
    threads only feed the devices; nothing is split. RLCURR_CPU_THREADS=N caps the cores a run
    takes (runs that share a machine: torch threads that outnumber the cores spin and stall)."""
    share = cpu_thread_cap()
    if gpus or cfg.trainer.max_staleness == 0:
        return share, share
    cores = share or os.cpu_count() or 1
    learner = max(1, cores // 2)
    return max(1, (cores - learner) // cfg.rollout.num_workers), learner


def check_tool_support(cfg: Config, env) -> None:
    """Settings a multi-turn tool environment cannot train with, refused before anything starts."""
    if not env.tool_stop:
        return
    name = cfg.env.name
    if cfg.algo.name == "ppo":
        raise UserError(f"algo.name: ppo is not supported with a tool environment (env.name: {name}): the critic's "
                        f"GAE would run through tool-output tokens; use grpo, drgrpo or rloo")
    if cfg.curriculum.ead is not None:
        raise UserError(f"curriculum.ead (per-position temperatures) is not supported with a tool environment "
                        f"(env.name: {name}): each model turn is a new request; remove curriculum.ead")


def has_signal(group: ScoredGroup) -> bool:
    """False for a group that reward failures left with fewer than 2 scored answers (no
    group-relative advantage): it is dropped from the batch, the curriculum and guidance."""
    return group.num_failed == 0 or group.n >= 2


def to_train_samples(groups: list[ScoredGroup], policy_version: int | None = None) -> list[TrainSample]:
    return [TrainSample(prompt_ids=g.prompt_ids, response_ids=c.token_ids, advantage=a,
                        rollout_logprobs=c.logprobs, behaviour_prompt_ids=g.behaviour_prompt_ids,
                        off_policy=g.off_policy, reward=r, tool_mask=c.tool_mask, policy_version=policy_version)
            for g in groups for c, a, r in zip(g.completions, g.advantages, g.rewards)]


@dataclasses.dataclass
class CollectedBatch:
    """Steps 1-6 of trainer step `step`, done during step `collected_during` (= step when
    synchronous, up to max_staleness earlier when not), waiting for the learner."""

    step: int
    groups: list[ScoredGroup]
    metrics: dict  # rollout, generation-round and reward-failure metrics of its collection
    row: CurriculumRow  # its curriculum.jsonl line (controller.row(step) right after observe)
    policy_version: int  # the weights that generated it: those after `policy_version` trainer steps
    collected_during: int


def outside_share(metrics: dict, asynchronous: bool) -> float:
    """Share of the step's wall time (evaluation aside) in which neither generation nor the
    learner was busy: the trainer's own overhead (planning, rewards, Ray transfers, weight
    sync). Synchronous, the phases follow each other; asynchronous, the update and the next
    batch's generation start together, so the longer of the two is the busy time."""
    generation = metrics.get("time/rollout", 0.0)
    learner = metrics.get("time/learner", 0.0)
    busy = max(generation, learner) if asynchronous else generation + learner
    return max(0.0, metrics["time/step"] - busy) / metrics["time/step"]
