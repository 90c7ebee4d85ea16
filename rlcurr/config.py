"""Recipe schema: YAML -> validated, frozen `Config`, with dotted command-line overrides.

Every section forbids unknown keys, so a typo is an error naming its dotted path. The config is
never mutated after parsing; the trainer reads it, and `config.yaml` in the run directory is
the resolved version (all defaults filled in).

Over 400 lines on purpose: the recipe schema in one place, from which docs/recipes.md is
generated (scripts/recipe_docs.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from rlcurr.curriculum.config import CurriculumConfig
from rlcurr.env_registry import ENVS as BUILTIN_ENVS  # noqa: F401  (env.name -> config class)
from rlcurr.env_registry import validate_env
from rlcurr.environment import EnvConfigBase
from rlcurr.errors import UserError
from rlcurr.paths import read_utf8


# The behaviour-policy importance-weight cap of asynchronous runs when the recipe sets none
# (TIS's usual value; AReaL's decoupled PPO caps the same ratio).
DEFAULT_STALE_TIS_CAP = 2.0


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(Section):
    """A random-init Qwen2/Llama model with a character-level tokenizer, built locally."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(2, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(384, ge=8)
    max_position_embeddings: int = Field(256, ge=16)


class WarmupConfig(Section):
    """Supervised warm-up on the environment's train pools before RL (0 steps = none)."""

    steps: int = Field(0, ge=0)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    distributions: list[str] | None = None  # default: all of the environment's distributions
    hint_fraction: float = Field(0.0, ge=0, le=1, description="share of examples shown with their hint")


class LoraConfig(Section):
    r: int = Field(8, ge=1)
    alpha: float = 16.0
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class ModelConfig(Section):
    path: str | None = None  # a local Hugging Face causal-LM directory
    tiny: TinyModelConfig | None = None
    warmup: WarmupConfig = WarmupConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if (self.path is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.path (a local HF model dir) or model.tiny")
        return self


class RewardSpec(Section):
    name: str  # registered name or import path ('pkg.mod:fn' / 'pkg.mod.fn')
    weight: float = 1.0
    # Keyword arguments bound to the function (rlcurr.rewards.registry.resolve_reward checks the
    # names). Filled in by Config for length_budget (curriculum.budget.penalty / penalty_cap) and
    # overlong_penalty (L_max = rollout.max_tokens without a budget).
    params: dict[str, Any] = Field(default_factory=dict)


class RewardConfig(Section):
    timeout_s: float = Field(30.0, gt=0)
    on_error: Literal["raise", "none"] = "raise"
    workers: int = Field(0, ge=0, description="Ray actors that run the rule rewards, each scoring a contiguous share "
                                              "of the step's answers; a call past timeout_s kills its worker, which is "
                                              "replaced. 0: threads of the driver (a hung call is abandoned, still "
                                              "running). See docs/extending.md \"Reward workers\"")
    worker_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves for each reward worker (on any node)")
    max_restarts: int = Field(3, ge=0, description="dead reward workers replaced per call; past that the call "
                                                   "fails like a reward that raised (see reward.on_error)")


class RolloutConfig(Section):
    engine: Literal["hf", "vllm"] = "hf"
    num_workers: int = Field(1, ge=1)
    n: int = Field(8, ge=1, description="answers per prompt")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.25, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    max_restarts: int = Field(3, ge=0, description="dead rollout workers replaced per call before the run fails")
    seed: int | None = Field(None, description="sampling seed of rollout worker 0 (worker i: seed + i); default: "
                             "the run's seed. Another value draws fresh answers to the same prompts "
                             "(e.g. a second `rlcurr profile`)")


class AlgoConfig(Section):
    name: Literal["grpo", "drgrpo", "rloo", "ppo"] = "grpo"  # advantage estimator; ppo = GAE with a critic
    clip_low: float = Field(0.2, ge=0)
    clip_high: float = Field(0.2, ge=0)  # DAPO clip-higher: 0.28
    # Default: token-mean, except seq-mean-token-sum-norm (sum over tokens / constant) for drgrpo.
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    kl_coef: float = Field(0.0, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = 0.0
    epochs: int = Field(1, ge=1, description="optimisation passes over each batch")
    mini_batches: int = Field(1, ge=1, description="optimizer steps per epoch")
    micro_batch_size: int = Field(64, ge=1, description="samples per forward/backward (grad accumulation)")
    # Truncated importance sampling (docs/algorithms.md, "Truncated importance sampling"): weight
    # each token's policy-gradient term by min(pi_old / pi_rollout, tis_cap) to correct the
    # engine/learner mismatch. None = off.
    tis_cap: float | None = Field(None, gt=0, description="cap of the engine->learner importance weight")
    # Answers with advantage exactly 0 (GRPO's all-equal groups) add 0 to the policy-gradient term
    # but count in its denominator: the learner leaves them out of the training forward/backward
    # and keeps the full mini-batch denominator (same update). Applied only where nothing else needs
    # their logprobs: off automatically when kl_coef > 0, entropy_coef != 0, PPO (per-token
    # advantages), D3S token selection, FSDP, and for off-policy (hinted) answers. False = always forward.
    skip_zero_advantage: bool = Field(True, description="skip the forward/backward of answers with advantage 0 "
                                                        "when no loss term needs them (same update)")
    # PPO (name: ppo) only. lam = 1 (verl's default; OpenRLHF uses 0.95): with gamma = 1 and one
    # outcome reward, A_t = R - V(s_t), unbiased however wrong the freshly initialised critic is;
    # lam < 1 trades that bias for variance, which matters little for answers this short.
    gamma: float = Field(1.0, ge=0, le=1, description="PPO: discount per token")
    lam: float = Field(1.0, ge=0, le=1, description="PPO: GAE lambda")
    value_clip: float = Field(0.2, gt=0, description="PPO: clip of the value update around the old values")
    critic_lr: float = Field(1e-5, gt=0, description="PPO: critic AdamW learning rate (same schedule as the policy)")
    critic_warmup: int = Field(0, ge=0, description="PPO: first trainer steps that train only the critic")

    @model_validator(mode="before")
    @classmethod
    def _default_loss_agg(cls, data: Any) -> Any:
        # Dr.GRPO (docs/algorithms.md, "Advantage estimators") divides the token sum by a constant: its own
        # aggregation when the recipe gives none (absent or null). A resolved config.yaml has it
        # written out: kept.
        if isinstance(data, dict) and data.get("loss_agg") is None:
            data = dict(data)
            data["loss_agg"] = "seq-mean-token-sum-norm" if data.get("name") == "drgrpo" else "token-mean"
        return data

    @model_validator(mode="after")
    def _drgrpo_loss_agg(self) -> "AlgoConfig":
        if self.name == "drgrpo" and self.loss_agg != "seq-mean-token-sum-norm":
            raise ValueError(f"algo.name: drgrpo is defined by algo.loss_agg: seq-mean-token-sum-norm (token sum "
                             f"over a constant, no length normalisation); algo.loss_agg is {self.loss_agg!r}. "
                             f"Remove algo.loss_agg, or use algo.name: grpo for a {self.loss_agg} loss")
        return self

    @model_validator(mode="after")
    def _ppo_fields_need_ppo(self) -> "AlgoConfig":
        # Compared with the defaults, not with model_fields_set: a resolved config.yaml sets every key.
        ppo_only = ["critic_lr", "critic_warmup", "gamma", "lam", "value_clip"]
        stray = [f for f in ppo_only if getattr(self, f) != type(self).model_fields[f].default]
        if self.name != "ppo" and stray:
            raise ValueError(f"{', '.join('algo.' + f for f in stray)} only apply to algo.name: ppo "
                             f"(algo.name is {self.name!r})")
        return self


class ScheduleConfig(Section):
    """LR schedule (docs/algorithms.md, "Learning-rate schedules"; formulas in rlcurr/algos/schedules.py)."""

    name: Literal["constant", "linear", "cosine", "wsd", "rex", "power"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps spent decaying")
    power_exponent: float = Field(0.51, gt=0, description="power: lr ~ ((t + 1) / warmup_steps) ** -power_exponent "
                                                           "(0.51: Shen et al. 2024's Power scheduler)")

    @model_validator(mode="after")
    def _own_parameters(self) -> "ScheduleConfig":
        # Compared with the defaults (a resolved config.yaml sets every key).
        own = {"decay_fraction": "wsd", "power_exponent": "power"}
        stray = [f for f, n in own.items() if self.name != n and getattr(self, f) != type(self).model_fields[f].default]
        if stray:
            raise ValueError(", ".join(f"learner.schedule.{f} only applies to learner.schedule.name: {own[f]}"
                                       for f in stray) + f" (learner.schedule.name is {self.name!r})")
        return self


class LearnerConfig(Section):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0)
    schedule: ScheduleConfig = ScheduleConfig()
    num_workers: int = Field(1, ge=1)
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every rank holds the whole model; fsdp: parameters, gradients and "
                           "optimizer state sharded over the num_workers ranks (FSDP2), same update")
    max_tokens_per_micro_batch: int | None = Field(
        None, ge=1, description="cap on prompt+answer tokens per forward/backward (micro-batches split "
                                "further to fit); None = algo.micro_batch_size answers per micro-batch")

    @model_validator(mode="after")
    def _fsdp_needs_ranks(self) -> "LearnerConfig":
        if self.strategy == "fsdp" and self.num_workers < 2:
            raise ValueError(f"learner.strategy: fsdp shards the model over learner.num_workers ranks; "
                             f"set learner.num_workers >= 2 (it is {self.num_workers}) or learner.strategy: ddp")
        return self


class TrainerConfig(Section):
    steps: int = Field(50, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    output_dir: str | None = None  # default runs/<name>
    overwrite: bool = False
    save_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    # Bounded staleness (docs/scaling.md, "Asynchronous training"): while the learner trains step t
    # the rollout workers generate the batch of step t + k, with the weights of step t; 0 = sync.
    max_staleness: int = Field(0, ge=0, description="k: steps the rollouts may run ahead of the learner (0 = sync)")


class EvalConfig(Section):
    """Held-out accuracy per distribution. Greedy by default; with `temperature` > 0 each prompt gets
    `samples` answers and the accuracy is their mean (avg@k, as DAPO reports): what a sampled
    policy gets right, which greedy decoding hides when RL sharpens a distribution whose argmax
    was already right."""

    every: int = Field(10, ge=0, description="0 = only before and after training")
    max_tokens: int | None = None  # default: rollout.max_tokens
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    samples: int = Field(1, ge=1, description="answers per held-out prompt (needs temperature > 0 when > 1)")

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> "EvalConfig":
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"eval.samples: {self.samples} answers per prompt at eval.temperature 0 (greedy) "
                             f"would all be the same; set eval.temperature > 0 or eval.samples: 1")
        return self


class WandbConfig(Section):
    project: str = "rlcurr"
    mode: Literal["online", "offline"] = "offline"


class ResourcesConfig(Section):
    """Ray placement (rlcurr/rollout/pool.py, rlcurr/cluster.py): GPUs per worker on GPU nodes, and
    which nodes each role runs on, by a custom Ray resource the node was started with
    (`ray start --resources='{"rollout_node": 1}'`). docs/scaling.md "A Ray cluster"."""

    gpus_per_rollout_worker: int | None = Field(None, ge=1, description="default: rollout.tensor_parallel_size")
    gpus_per_learner_worker: int | None = Field(None, ge=1, description="default: 1, on a cluster with GPUs")
    colocate: bool = Field(False, description="rollout and learner share GPUs; vLLM sleeps during the learner step")
    rollout_node_resource: str | None = Field(
        None, min_length=1, description="rollout workers run only on nodes that have this custom Ray resource")
    learner_node_resource: str | None = Field(
        None, min_length=1, description="learner ranks run only on nodes that have this custom Ray resource")
    placement_timeout_s: float = Field(
        120.0, gt=0, description="give up, naming the missing resources, when actors are not placed in this time")
    cpu_fallback: bool = Field(
        False, description="a recipe that sets GPU fields trains on CPU when the cluster has no GPU (else an error)")


class LoggingConfig(Section):
    tensorboard: bool = True
    wandb: WandbConfig | None = None
    progress: bool = True


class Config(Section):
    name: str
    description: str = ""
    seed: int = 0
    model: ModelConfig
    env: SerializeAsAny[EnvConfigBase]  # a built-in's config or a user's (see validate_env)
    rewards: list[RewardSpec] | None = None  # default: the environment's own
    reward: RewardConfig = RewardConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = AlgoConfig()
    learner: LearnerConfig = LearnerConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    trainer: TrainerConfig = TrainerConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @field_validator("env", mode="before")
    @classmethod
    def _env_by_name(cls, value: Any, info: ValidationInfo) -> EnvConfigBase:
        return validate_env(value, (info.context or {}).get("recipe_dir"))

    @model_validator(mode="after")
    def _rollout_gpus_fit_tp(self) -> "Config":
        gpus = self.resources.gpus_per_rollout_worker
        if gpus is not None and gpus < self.rollout.tensor_parallel_size:
            raise ValueError(f"resources.gpus_per_rollout_worker ({gpus}) must be at least "
                             f"rollout.tensor_parallel_size ({self.rollout.tensor_parallel_size})")
        return self

    @model_validator(mode="after")
    def _fsdp_without_lora(self) -> "Config":
        # Rollout weights need LoRA merged into the full model, which FSDP only holds sharded.
        if self.learner.strategy == "fsdp" and self.model.lora is not None:
            raise ValueError("learner.strategy: fsdp does not support model.lora (LoRA adapters are small: "
                             "use learner.strategy: ddp, or remove model.lora)")
        return self

    @model_validator(mode="after")
    def _reward_params(self) -> "Config":
        """Bind config values to built-in rewards' params: length_budget gets curriculum.budget's
        penalty / penalty_cap; overlong_penalty needs L_buf and gets L_max = rollout.max_tokens when
        there is no budget (with one, L_max defaults to each answer's budget column)."""
        if not self.rewards:
            return self
        budget, specs = self.curriculum.budget, []
        for i, spec in enumerate(self.rewards):
            params = dict(spec.params)
            if spec.name == "length_budget" and budget is not None:
                for key in ("penalty", "penalty_cap"):
                    value = getattr(budget, key)
                    if key in params and params[key] != value:
                        raise ValueError(f"rewards[{i}].params.{key} ({params[key]!r}) disagrees with "
                                         f"curriculum.budget.{key} ({value!r}), which length_budget uses; "
                                         f"set curriculum.budget.{key} only")
                    params[key] = value
            if spec.name == "overlong_penalty":
                buf = params.get("L_buf")
                if isinstance(buf, bool) or not isinstance(buf, (int, float)) or buf <= 0:
                    raise ValueError(f"rewards[{i}].params.L_buf: overlong_penalty needs a positive L_buf (the "
                                     f"last L_buf tokens before L_max, over which the penalty falls from 0 to -1), "
                                     f"e.g. {{name: overlong_penalty, params: {{L_buf: 4}}}} (got {buf!r})")
                if "L_max" not in params and budget is None:
                    params["L_max"] = self.rollout.max_tokens
                if params.get("L_max") is not None and buf > params["L_max"]:
                    raise ValueError(f"rewards[{i}].params.L_buf ({buf}) must be <= its L_max ({params['L_max']}; "
                                     f"default rollout.max_tokens)")
            specs.append(spec if params == spec.params else spec.model_copy(update={"params": params}))
        object.__setattr__(self, "rewards", specs)  # frozen model: filled in once, while validating
        return self

    @model_validator(mode="after")
    def _staleness(self) -> "Config":
        """Async (trainer.max_staleness >= 1) trains on answers up to k policy versions old: the
        learner's decoupled objective needs algo.tis_cap (default 2.0 here, filled in once while
        validating, so config.yaml shows it). Colocated rollout and learner take turns on the same
        GPUs, so nothing could overlap."""
        if self.trainer.max_staleness == 0:
            return self
        if self.resources.colocate:
            raise ValueError(f"trainer.max_staleness: {self.trainer.max_staleness} needs rollout and learner on "
                             f"separate devices, but resources.colocate: true makes them take turns; set one of "
                             f"them off")
        if self.algo.tis_cap is None:
            object.__setattr__(self, "algo", self.algo.model_copy(update={"tis_cap": DEFAULT_STALE_TIS_CAP}))
        return self

    @model_validator(mode="after")
    def _top_p_needs_tis(self) -> "Config":
        # The learner's pi_old is the untruncated softmax(logits / T); with top-p the engine samples
        # from (and reports logprobs of) the truncated renormalised distribution instead.
        if self.rollout.top_p < 1 and self.algo.tis_cap is None:
            raise ValueError(f"rollout.top_p: {self.rollout.top_p:g} needs algo.tis_cap: the learner scores answers "
                             f"with the untruncated softmax(logits / temperature), so top-p sampling makes the "
                             f"answers off-policy; set algo.tis_cap (e.g. 2.0, truncated importance sampling) "
                             f"or rollout.top_p: 1.0")
        return self

    @model_validator(mode="after")
    def _ead_needs_hf(self) -> "Config":
        # vLLM's sampling params have one temperature per request, not per answer position.
        if self.curriculum.ead is not None and self.rollout.engine == "vllm":
            raise ValueError("curriculum.ead (per-position temperatures) needs rollout.engine: hf; "
                             "vLLM has one temperature per request. Remove curriculum.ead or set rollout.engine: hf")
        return self

    @model_validator(mode="after")
    def _ead_needs_tis(self) -> "Config":
        # The same rule as top-p: EAD samples each position at its own temperature while the
        # learner scores at rollout.temperature, so its answers are off-policy.
        if self.curriculum.ead is not None and self.algo.tis_cap is None:
            raise ValueError("curriculum.ead needs algo.tis_cap: EAD samples each answer position at its own "
                             "temperature while the learner scores at rollout.temperature, so the answers are "
                             "off-policy; set algo.tis_cap (e.g. 2.0, truncated importance sampling)")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.output_dir or f"runs/{self.name}")


# ---------------------------------------------------------------- loading and overrides


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override {text!r} must look like dotted.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"override {text!r}: empty component in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # leave it a string; the schema decides whether that is acceptable
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each `a.b.c=value` in a nested dict (value parsed as YAML: 50 -> int, [1,2] -> list)."""
    for text in overrides:
        parts, value = _parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {text!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        parts = list(e["loc"])
        loc = ".".join(str(p) for p in parts)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        show_got = e["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict)
        lines.append(f"{loc or '<recipe>'}: {msg}" + (f" (got {got!r})" if show_got else ""))
    return "invalid config:\n  " + "\n  ".join(lines)


def load_yaml(path: str | Path) -> dict:
    """Read a recipe (or a run's config.yaml); every way it can be unreadable is one UserError
    naming the file: missing, a directory, not readable, not UTF-8, not YAML, not a mapping."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a recipe file")
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    text = read_utf8(path, str(path), hint="; save the recipe as UTF-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}{where}: not valid YAML: {what}") from None
    if not isinstance(data, dict):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{path}: a recipe must be a YAML mapping at the top level (it is {got})")
    return data


def build_config(data: dict, recipe_dir: str | Path | None = None) -> Config:
    """Validate a recipe mapping. `recipe_dir`: where a relative file in it (a user environment's
    ``env.name: my_envs.py:MyConfig``, the dataset environment's ``env.path``) is looked up
    first, before the working directory."""
    try:
        return Config.model_validate(data, context={"recipe_dir": str(recipe_dir) if recipe_dir is not None else None})
    except ValidationError as e:
        raise UserError(format_validation_error(e)) from None


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    data = load_yaml(path)
    data.setdefault("name", Path(path).stem)
    return build_config(apply_overrides(data, list(overrides)), recipe_dir=Path(path).resolve().parent)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
