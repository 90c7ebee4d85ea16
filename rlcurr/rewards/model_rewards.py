"""Rewards computed by models: `reward_model` (a sequence classifier) and `judge` (a generative
model whose answer is parsed into a number), as reward functions with TRL's contract.

Each is a callable object, registered as a built-in name; `rlcurr.rewards.registry` constructs it
with the recipe's `params` (a class with `reward_from_params`), so a recipe writes::

    rewards:
      - {name: reward_model, params: {path: DIR, batch_size: 32, num_actors: 1, num_gpus: 0}}
      - {name: judge, params: {path: DIR, template: judge.txt, parse: yes_no, max_tokens: 8}}

Construction (in `Trainer.__init__`, before any run directory exists) checks every param and
reads the model's config.json, nothing heavier: a missing path, a directory that is not a model,
a reward model without a classification head, a template without {completion} or with bad braces,
a parse regex without exactly one group, an unknown param -- each one UserError naming the param.
The models load on the first call: in `num_actors` Ray actors (`rlcurr.rewards.model_actors`,
own num_cpus / num_gpus, replaced when they die) when Ray is running, as in a training run; in this
process otherwise (scripts, tests of the math). The trainer scores a whole step's answers in one
call; the call splits them over the actors, each scoring its share in batches of `batch_size`.

What each returns per answer (the plain scorers are `rlcurr.rewards.model_scorers`):
- reward_model: the head's logit (num_labels 1) or P(label 1) (num_labels 2), then `normalize`
  (none | running | {shift, scale});
- judge: the number its text parses to under `parse` (number | yes_no | a regex with one group).
  Greedy by default (temperature 0). An answer whose judgement does not parse is a reward
  FAILURE, not a 0: the call raises `JudgeParseError`, so the runner's `reward.on_error` applies
  exactly as to any reward that raises (raise: the run stops naming the sample; none: the
  runner re-runs the batch one answer at a time to find them -- the judge's texts are cached, so
  that costs no generation -- and leaves those answers out, counted in `reward/errors`).

Reward hacking check (`AgreementMonitor`, run by the trainer on every scored batch):
`reward/rm_agreement` = share of answers where (model reward > agreement_threshold) equals the
environment verifier's `correct`; `alert/rm_agreement` = 1 when it is below `alert_below` (0.6)
or, after 10 steps, `alert_drop` (0.2) below its mean over the first 10 steps, with one warning
line when the alert starts (again only after 10 steps without it). Up to `samples_per_step`
judge texts per step are appended to <run_dir>/judge_samples.jsonl (step, question, completion,
judge text, score, correct).

`build:` (instead of `path:`): the reward builds a tiny arithmetic model into the model cache
(`rlcurr.rewards.tiny_scorers`), so that recipes/rm_quickstart.yaml and judge_quickstart.yaml run
from a clean checkout with nothing downloaded. It is a demonstration device, not a way to get a
reward model for real data.

A resumed run (--resume) restores the running-normalisation statistics from the checkpoint and
cuts judge_samples.jsonl back to its step; the agreement monitor's 10-step baseline starts afresh.
Left out: vLLM judges; reward actors inside the trainer's placement group.
"""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from typing import Any, Callable

from rlcurr.errors import UserError
from rlcurr.rewards.model_scorers import (JudgeParseError, Normalizer, check_causal_lm_dir, check_classifier_dir,
                                          check_dtype, check_normalize, compile_parse, load_template, parse_judgement,
                                          render_judge_input)
from rlcurr.rewards.table import register

JUDGE_SAMPLES_FILE = "judge_samples.jsonl"


class ModelReward:
    """What the two model rewards share: actors, lazy start, agreement settings."""

    kind = ""

    def __init__(self, *, batch_size: int, dtype: str, num_actors: int, num_cpus: float, num_gpus: float,
                 max_restarts: int, agreement_threshold: float, alert_below: float, alert_drop: float):
        k = self.kind
        for key, value, low in (("batch_size", batch_size, 1), ("num_actors", num_actors, 1),
                                ("max_restarts", max_restarts, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"reward {k!r}: params.{key}: must be a whole number >= {low} (got {value!r})")
        for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise UserError(f"reward {k!r}: params.{key}: must be a number >= 0 (got {value!r})")
        for key, value in (("agreement_threshold", agreement_threshold), ("alert_below", alert_below),
                           ("alert_drop", alert_drop)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UserError(f"reward {k!r}: params.{key}: must be a number (got {value!r})")
        self.batch_size, self.dtype = batch_size, check_dtype(dtype, k)
        self.num_actors, self.num_cpus, self.num_gpus, self.max_restarts = num_actors, num_cpus, num_gpus, max_restarts
        self.agreement_threshold, self.alert_below, self.alert_drop = agreement_threshold, alert_below, alert_drop
        self.__name__ = k  # reward_label / thread names
        self.log: Callable[[str], None] = print
        self.pool = None  # RewardActorPool, started on the first call with Ray running
        self.local = None  # the scorer itself, when called without Ray
        self._lock = threading.Lock()  # the runner may call again while an abandoned (timed-out) call runs

    @classmethod
    def reward_from_params(cls, params: dict, name: str) -> "ModelReward":
        """The registry's hook: the recipe's params are this class's keyword arguments."""
        return cls(**params)

    # subclasses: the scorer's kind and kwargs
    def scorer_kwargs(self) -> dict:
        raise NotImplementedError

    def run(self, items: list) -> list:
        """The scorer's outputs for `items`, from the actors (Ray running) or in this process."""
        import ray

        if not items:
            return []
        if ray.is_initialized():
            if self.pool is None:
                from rlcurr.rewards.model_actors import RewardActorPool

                total = ray.cluster_resources()  # an actor Ray can never place would wait forever
                for key, need in (("CPU", self.num_cpus), ("GPU", self.num_gpus)):
                    if need > total.get(key, 0):
                        raise UserError(f"reward {self.kind!r}: params.num_{key.lower()}s: each actor needs {need:g} "
                                        f"{key}s, the Ray cluster has {total.get(key, 0):g}")

                self.pool = RewardActorPool(self.kind, self.scorer_kwargs(), num_actors=self.num_actors,
                                            num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                            max_restarts=self.max_restarts, label=self.kind, log=self.log)
            return self.pool.score(items)
        if self.local is None:
            from rlcurr.rewards.model_scorers import make_scorer

            self.local = make_scorer(self.kind, **self.scorer_kwargs())
        return self.local.score_items(items)

    @property
    def restarts(self) -> int:
        return self.pool.restarts if self.pool is not None else 0

    # what a checkpoint keeps (RewardModelReward: the running normalisation statistics)
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def close(self) -> None:
        """Kill the actors (a later call starts new ones)."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return "".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))


@register("reward_model")
class RewardModelReward(ModelReward):
    """`reward_model`: an AutoModelForSequenceClassification directory scores prompt + completion."""

    kind = "reward_model"

    def __init__(self, path: str | None = None, build: Any = None, batch_size: int = 32, dtype: str = "float32",
                 num_actors: int = 1, num_cpus: float = 1, num_gpus: float = 0, normalize: Any = "none",
                 max_restarts: int = 3, agreement_threshold: float = 0.5, alert_below: float = 0.6,
                 alert_drop: float = 0.2):
        super().__init__(batch_size=batch_size, dtype=dtype, num_actors=num_actors, num_cpus=num_cpus,
                         num_gpus=num_gpus, max_restarts=max_restarts, agreement_threshold=agreement_threshold,
                         alert_below=alert_below, alert_drop=alert_drop)
        if (path is None) == (build is None):
            raise UserError("reward 'reward_model': params.path: give the model directory (or params.build for "
                            "the tiny demonstration classifier), not both")
        if build is not None:
            from rlcurr.rewards.tiny_scorers import build_reward_model

            path = str(build_reward_model(build))
        self.num_labels = check_classifier_dir(path, self.kind)
        self.path = str(Path(path).expanduser())
        self.normalizer = Normalizer(check_normalize(normalize, self.kind))

    def scorer_kwargs(self) -> dict:
        return {"path": self.path, "dtype": self.dtype, "batch_size": self.batch_size}

    def __call__(self, prompts, completions: list[str], **columns) -> list[float | None]:
        with self._lock:
            raw = self.run([(_prompt_text(p), c) for p, c in zip(prompts, completions)])
            return self.normalizer(raw)

    def state_dict(self) -> dict:
        return {"normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "normalizer" in state:
            self.normalizer.load_state_dict(state["normalizer"])


@register("judge")
class JudgeReward(ModelReward):
    """`judge`: a causal LM reads the rendered template and its text is parsed into the reward."""

    kind = "judge"

    def __init__(self, path: str | None = None, build: Any = None, template: str | None = None,
                 parse: str = "yes_no", max_tokens: int = 8, temperature: float = 0.0, batch_size: int = 32,
                 dtype: str = "float32", num_actors: int = 1, num_cpus: float = 1, num_gpus: float = 0,
                 max_restarts: int = 3, agreement_threshold: float = 0.5, alert_below: float = 0.6,
                 alert_drop: float = 0.2, samples_per_step: int = 4, seed: int = 0):
        super().__init__(batch_size=batch_size, dtype=dtype, num_actors=num_actors, num_cpus=num_cpus,
                         num_gpus=num_gpus, max_restarts=max_restarts, agreement_threshold=agreement_threshold,
                         alert_below=alert_below, alert_drop=alert_drop)
        self.template = load_template(template, self.kind)
        self.rule = compile_parse(parse, self.kind)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise UserError(f"reward 'judge': params.max_tokens: must be a whole number >= 1 (got {max_tokens!r})")
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise UserError(f"reward 'judge': params.temperature: must be >= 0 (got {temperature!r})")
        if (path is None) == (build is None):
            raise UserError("reward 'judge': params.path: give the judge model directory (or params.build for the "
                            "tiny demonstration judge), not both")
        if build is not None:
            from rlcurr.rewards.tiny_scorers import build_judge

            path = str(build_judge(build, self.template))
        check_causal_lm_dir(path, self.kind)
        self.path = str(Path(path).expanduser())
        self.max_tokens, self.temperature, self.seed = max_tokens, float(temperature), seed
        self.samples_per_step = samples_per_step
        # judge input -> its text. Greedy judging is deterministic, so the runner's one-answer-at-a-time
        # re-run after a parse failure reads these instead of generating again. Bounded: oldest first out.
        self.cache: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.cache_size = 16384
        self.samples: list[dict] = []  # from the largest call since the trainer last took them
        self.samples_n = 0  # the size of that call

    def scorer_kwargs(self) -> dict:
        return {"path": self.path, "dtype": self.dtype, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "batch_size": self.batch_size, "seed": self.seed}

    def judge_texts(self, inputs: list[str]) -> list[str]:
        """The judge's text for each rendered input (cached ones are not generated again when greedy)."""
        cached = self.temperature == 0
        todo = list(dict.fromkeys(x for x in inputs if not (cached and x in self.cache)))
        fresh = dict(zip(todo, self.run(todo)))
        if cached:
            for x, text in fresh.items():
                self.cache[x] = text
                self.cache.move_to_end(x)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return [fresh[x] if x in fresh else self.cache[x] for x in inputs]

    def __call__(self, prompts, completions: list[str], **columns) -> list[float | None]:
        with self._lock:
            questions = [_prompt_text(p) for p in prompts]
            inputs = [render_judge_input(self.template, q, c, {k: v[i] for k, v in columns.items()})
                      for i, (q, c) in enumerate(zip(questions, completions))]
            texts = self.judge_texts(inputs)
            scores: list[float | None] = []
            failures: list[str] = []
            for text in texts:
                try:
                    scores.append(parse_judgement(text, self.rule))
                except JudgeParseError as e:
                    scores.append(None)
                    failures.append(str(e))
            self._keep_samples(questions, completions, texts, scores)
            if failures:  # a reward failure for these answers: the runner isolates them (reward.on_error)
                raise JudgeParseError(f"{len(failures)} of {len(texts)} judgements do not parse as "
                                      f"{getattr(self.rule, 'pattern', self.rule)}; first: {failures[0]}")
            return scores

    def _keep_samples(self, questions, completions, texts, scores) -> None:
        n = len(texts)
        if n == 0 or n < self.samples_n:  # keep the largest call's (not a one-answer re-run's)
            return
        self.samples_n = n
        k = min(self.samples_per_step, n)
        picks = sorted({round(j * (n - 1) / max(k - 1, 1)) for j in range(k)}) if k else []
        self.samples = [{"index": i, "question": questions[i], "completion": completions[i], "judge": texts[i],
                         "score": scores[i]} for i in picks]

    def take_samples(self) -> list[dict]:
        out, self.samples, self.samples_n = self.samples, [], 0
        return out


class AgreementMonitor:
    """reward/rm_agreement, alert/rm_agreement and judge_samples.jsonl (see the module docstring)."""

    def __init__(self, rewards: list[tuple[str, ModelReward]], log: Callable[[str], None] = print):
        self.rewards, self.log = rewards, log
        for _, fn in rewards:
            fn.log = log
        self.agree = {name: [0, 0] for name, _ in rewards}  # this step: (answers agreeing, answers scored)
        self.history: dict[str, list[float]] = {name: [] for name, _ in rewards}
        self.clear_steps = {name: 10 for name, _ in rewards}  # steps since the alert was last on
        self.step: int | None = None
        self.samples_written: dict[int, int] = {}

    @classmethod
    def for_runner(cls, runner, log: Callable[[str], None] = print) -> "AgreementMonitor":
        return cls([(r.name, r.fn) for r in runner.rewards if isinstance(r.fn, ModelReward)], log)

    def observe(self, t: int, parts: dict, correct: list[bool], run_dir: Path | None = None) -> None:
        """One scored batch of step t: the model rewards' parts against the verifier's `correct`."""
        self.step = t
        for name, fn in self.rewards:
            part = parts.get(name) or []
            scored = [(v > fn.agreement_threshold) == c for v, c in zip(part, correct) if v is not None]
            self.agree[name][0] += sum(scored)
            self.agree[name][1] += len(scored)
            if isinstance(fn, JudgeReward) and run_dir is not None:
                self._write_samples(t, name, fn, correct, Path(run_dir))

    def _write_samples(self, t: int, name: str, fn: JudgeReward, correct: list[bool], run_dir: Path) -> None:
        room = fn.samples_per_step - self.samples_written.get(t, 0)
        samples = fn.take_samples()[: max(room, 0)]
        if not samples or not run_dir.is_dir():
            return
        self.samples_written[t] = self.samples_written.get(t, 0) + len(samples)
        with open(run_dir / JUDGE_SAMPLES_FILE, "a", encoding="utf-8") as f:
            for s in samples:
                i = s.pop("index")
                f.write(json.dumps({"step": t, "reward": name, **s,
                                    "correct": correct[i] if i < len(correct) else None}) + "\n")

    def step_metrics(self) -> dict[str, float]:
        """This step's metrics (called once per collected batch); resets the step's counts."""
        out: dict[str, float] = {}
        for j, (name, fn) in enumerate(self.rewards):
            agree, n = self.agree[name]
            self.agree[name] = [0, 0]
            suffix = "" if j == 0 else f"/{name}"
            out[f"reward/actor_restarts{suffix}"] = fn.restarts
            if n == 0:
                continue
            value = agree / n
            out[f"reward/rm_agreement{suffix}"] = value
            hist = self.history[name]
            hist.append(value)
            base = sum(hist[:10]) / len(hist[:10])
            low = value < fn.alert_below
            dropped = len(hist) > 10 and value < base - fn.alert_drop
            alert = low or dropped
            out[f"alert/rm_agreement{suffix}"] = float(alert)
            # one warning when the alert starts; again only after 10 steps without it (no flicker)
            if alert and self.clear_steps[name] >= 10:
                why = (f"below alert_below {fn.alert_below:g}" if low
                       else f"{fn.alert_drop:g} below its first-10-step mean {base:.2f}")
                self.log(f"warning: reward/rm_agreement{suffix} {value:.2f} at step {self.step} ({why}): the "
                         f"{name} reward disagrees with the environment's verifier; the policy may be exploiting it")
            self.clear_steps[name] = 0 if alert else self.clear_steps[name] + 1
        self.samples_written = {s: c for s, c in self.samples_written.items() if self.step is not None and s >= self.step}
        return out

    def close(self) -> None:
        for _, fn in self.rewards:
            fn.close()
