"""Write docs/recipes.md, the recipe key reference, from the pydantic config schema.

    python scripts/recipe_docs.py            # print it
    python scripts/recipe_docs.py --write    # write docs/recipes.md
    python scripts/recipe_docs.py --check    # exit 1 if docs/recipes.md differs

Every key of `rlcurr.config.Config` (and of each built-in environment's config class, the
`env.<field>` keys) with its type, default and description. The description is the field's
pydantic `description`; a field without one gets the comment written next to it in its class
(on its line, or the comment lines just above it). tests/test_docs.py regenerates the page and
fails when the committed file differs, so the page cannot drift from the schema.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "recipes.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- the schema


def top_config() -> type[BaseModel]:
    from rlcurr.config import Config

    return Config


def builtin_envs() -> dict[str, type[BaseModel]]:
    """env.name -> config class of the registered environments (the built-ins register from
    envs/__init__.py), from the registry the config resolves `env.name` with."""
    try:
        from rlcurr.env_registry import ENVS
    except ImportError:  # before the registry existed
        from rlcurr.config import BUILTIN_ENVS as ENVS
    return {name: ENVS[name] for name in ENVS}


def env_base() -> type[BaseModel]:
    try:
        from rlcurr import EnvConfigBase
    except ImportError:
        from envs.base import EnvConfigBase
    return EnvConfigBase


# ---------------------------------------------------------------- rendering


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _strip_wrappers(tp: Any) -> Any:
    """Annotated[X, ...] and SerializeAsAny[X] -> X."""
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            tp = get_args(tp)[0]
            continue
        name = getattr(tp, "__origin__", None)
        if name is not None and getattr(name, "__name__", "") == "SerializeAsAny":
            tp = get_args(tp)[0]
            continue
        return tp


def _optional_model(tp: Any) -> type[BaseModel] | None:
    """X for `X | None` with X a pydantic model (a section that is off unless set)."""
    tp = _strip_wrappers(tp)
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and _is_model(_strip_wrappers(args[0])):
            return _strip_wrappers(args[0])
    return None


def type_name(tp: Any) -> str:
    tp = _strip_wrappers(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" if not isinstance(a, str) else f'`"{a}"`' for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple, dict, set):
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list[{type_name(args[0])}]"
        inner = ", ".join(type_name(a) for a in args)
        return f"{'list' if origin is tuple else origin.__name__}[{inner}]"
    if tp is type(None):
        return "null"
    if _is_model(tp):
        return "section"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _constraints(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v:g}" if isinstance(v, (int, float)) else f"{sym} {v}")
    return ", ".join(out)


def _value(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, tuple):
        return [_value(x) for x in v]
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    return v


def default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    text = yaml.safe_dump(_value(value), default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    if text == "''":
        text = '""'
    return f"`{text}`"


#: Descriptions of the keys whose field carries neither a `description` nor a comment. A key
#: here that the schema no longer has is an error (render() checks), so this cannot go stale;
#: a description added to the field itself takes precedence.
FALLBACK: dict[str, str] = {
    "name": "run name; default: the recipe file's stem. The run directory is runs/<name> unless trainer.output_dir",
    "description": "one line shown by `rlcurr recipes`",
    "seed": "seeds the model init, data order, sampling and the curriculum's RNGs",
    "model.dtype": "compute dtype and the engines' dtype; trained weights and AdamW state stay fp32",
    "model.tiny.arch": "architecture of the random-init model",
    "model.tiny.hidden_size": "hidden width",
    "model.tiny.num_layers": "decoder layers",
    "model.tiny.num_heads": "attention heads",
    "model.tiny.num_kv_heads": "key/value heads (grouped-query attention when fewer than num_heads)",
    "model.tiny.intermediate_size": "MLP width",
    "model.tiny.max_position_embeddings": "longest sequence (prompt + answer) the model accepts",
    "model.warmup.steps": "SFT steps before RL (0 = none)",
    "model.warmup.lr": "SFT learning rate",
    "model.warmup.batch_size": "SFT examples per step",
    "model.lora.r": "LoRA rank (peft)",
    "model.lora.alpha": "LoRA scaling alpha",
    "model.lora.dropout": "LoRA dropout",
    "model.lora.target_modules": "modules that get adapters; engines receive merged weights",
    "rewards[].weight": "multiplies this function's reward in the total",
    "reward.timeout_s": "a reward call running longer fails (see reward.on_error)",
    "reward.on_error": "raise: stop the run naming the function and sample; none: leave the answer out of its group",
    "env.system_prompt": "system message for chat-template models; null = none",
    "rollout.engine": "hf: rlcurr's transformers engine (CPU or GPU); vllm: vLLM engines",
    "rollout.num_workers": "rollout engines (Ray actors); a step's prompts are split among them",
    "rollout.temperature": "sampling temperature; the learner scores answers at the same temperature",
    "rollout.top_p": "nucleus sampling; < 1 needs algo.tis_cap",
    "rollout.max_tokens": "answer length limit (a budget, when set, replaces it per answer)",
    "rollout.gpu_memory_utilization": "vLLM: share of the GPU (on CPU: of RAM) its engine reserves",
    "rollout.tensor_parallel_size": "vLLM: GPUs per engine",
    "algo.name": "advantage estimator: grpo, drgrpo (no std, constant normaliser), rloo, ppo (critic + GAE)",
    "algo.clip_low": "PPO clip below 1 (ratio >= 1 - clip_low)",
    "algo.clip_high": "PPO clip above 1 (DAPO's clip-higher: 0.28)",
    "algo.loss_agg": "how token losses become the loss; default token-mean, seq-mean-token-sum-norm for drgrpo",
    "algo.kl_coef": "weight of the KL penalty to the initial policy (0 = off, no reference model)",
    "algo.kl_estimator": "KL estimator k1, k2 or k3 (low variance)",
    "algo.entropy_coef": "entropy bonus weight",
    "learner.lr": "AdamW learning rate",
    "learner.weight_decay": "AdamW weight decay",
    "learner.betas": "AdamW betas",
    "learner.grad_clip": "gradient norm clip",
    "learner.num_workers": "learner ranks (Ray actors joined by torch.distributed)",
    "learner.schedule.name": "LR schedule shape; all have linear warm-up",
    "learner.schedule.warmup_steps": "linear warm-up steps",
    "learner.schedule.min_lr_ratio": "final LR as a share of learner.lr (decaying schedules)",
    "trainer.steps": "training steps",
    "trainer.prompts_per_step": "prompts per step (each gets rollout.n answers)",
    "trainer.output_dir": "run directory; default runs/<name>",
    "trainer.overwrite": "replace an existing run directory instead of refusing",
    "trainer.save_every": "checkpoint every N steps (0 = only at the end and on interrupt)",
    "trainer.keep_checkpoints": "newest complete checkpoints kept",
    "eval.max_tokens": "answer length limit for evaluation; default rollout.max_tokens",
    "logging.tensorboard": "write TensorBoard scalars to <run>/tensorboard",
    "logging.progress": "one progress line per step on the terminal",
    "logging.wandb.project": "W&B project",
    "logging.wandb.mode": "W&B mode; the run id is kept so a resume continues the run",
    "curriculum.sampler": "distribution sampler: which distribution each prompt slot comes from",
    "curriculum.budget.shape": "how the budget falls from start to end",
    "curriculum.budget.per_distribution": "start/end per named distribution; shape, gamma, every, steps shared",
    "curriculum.learnability.rule": "mopps: Thompson sample closest to target; lilo: largest m (1 - m)",
    "curriculum.alp_gmm.min_components": "fewest Gaussians tried per fit (best AIC wins)",
    "curriculum.alp_gmm.max_components": "most Gaussians tried per fit",
    "curriculum.budget.per_distribution.<name>.start": "this distribution's budget at step 0",
    "curriculum.budget.per_distribution.<name>.end": "this distribution's final budget",
    "curriculum.d3s.n_final": "share of answers kept per group at the end",
    "curriculum.d3s.k_final": "share of tokens trained on at the end",
    "curriculum.ead.tau_max": "temperature offset of the first annealed positions",
    "curriculum.ead.d0": "decay scale d_s at step 0",
    "curriculum.ead.alpha": "growth of the decay scale per training step",
    "curriculum.ead.d_max": "largest decay scale",
    "curriculum.greso.p_min": "lowest exploration probability",
    "curriculum.greso.p_max": "highest exploration probability",
    # environments: "<env.name>:<key>"
    "arith:env.distributions": "which of add1, add2, add3 (n-digit addition) and noise (unlearnable) to train on",
    "calc:env.distributions": "which of add3, mul2, muladd to train on",
    "chain:env.noise_length": "chain length of the noise distribution's questions",
    "dataset:env.question_column": "column holding the prompt text",
    "dataset:env.answer_column": "column holding the reference answer (reward functions get it as `answer`)",
    "dataset:env.hint_column": "column of hints for curriculum.guidance; empty values mean no hint",
    "math:env.eval_files": "held-out files; default: a seeded slice of the train files",
    "math:env.distribution_by": "row label that names the distribution; none: one distribution, all",
    "reasoning_gym:env.tasks": "the reasoning-gym tasks; every grid point is one distribution",
    "reasoning_gym:env.tasks[].task": "reasoning-gym task name",
    "reasoning_gym:env.tasks[].params": "fixed parameters of the task's generator",
}
_CTX = ""  # "<env.name>:" while the environment tables are built
_USED: set[str] = set()

_COMMENTS: dict[type, dict[str, str]] = {}


def source_comments(cls: type) -> dict[str, str]:
    """field -> the comment written on its line in `cls`'s source, else the comment lines just above it."""
    if cls in _COMMENTS:
        return _COMMENTS[cls]
    found: dict[str, str] = {}
    try:
        lines, start = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        _COMMENTS[cls] = found
        return found
    src = textwrap.dedent("".join(lines))
    tree = ast.parse(src)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    text_lines = src.splitlines()
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = text_lines[node.end_lineno - 1]
        comment = ""
        if "#" in end:
            code, _, tail = end.partition("  # ")
            comment = tail.strip() if tail else ""
        if not comment:
            above, i = [], node.lineno - 2
            while i >= 0 and text_lines[i].strip().startswith("#"):
                above.insert(0, text_lines[i].strip().lstrip("#").strip())
                i -= 1
            comment = " ".join(above)
        if comment:
            found[node.target.id] = comment
    _COMMENTS[cls] = found
    return found


def description(cls: type[BaseModel], name: str, field, key: str = "") -> str:
    text = field.description
    if not text and _CTX + key in FALLBACK:
        text = FALLBACK[_CTX + key]
        _USED.add(_CTX + key)
    if not text:
        for klass in cls.__mro__:
            if _is_model(klass) and name in source_comments(klass):
                text = source_comments(klass)[name]
                break
    text = (text or "").replace("|", "\\|").replace("\n", " ")
    return " ".join(text.split())


def first_paragraph(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if not doc or doc == inspect.getdoc(BaseModel) or cls.__doc__ is None:
        return ""
    para = doc.split("\n\n")[0]
    return " ".join(para.split())


class Table:
    def __init__(self, title: str, intro: str = ""):
        self.title, self.intro, self.rows = title, intro, []

    def render(self) -> list[str]:
        out = [f"### `{self.title}`", ""]
        if self.intro:
            out += [self.intro, ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        out += [f"| `{k}` | {t} | {d} | {x} |" for k, t, d, x in self.rows]
        return out + [""]


def walk(cls: type[BaseModel], prefix: str, tables: list[Table], table: Table,
         skip: set[str] = frozenset()) -> None:
    """Rows of `cls`'s fields into `table`; nested sections get tables of their own."""
    nested: list[tuple[str, type[BaseModel], str]] = []
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        tp = _strip_wrappers(field.annotation)
        opt = _optional_model(tp)
        if _is_model(tp):
            nested.append((key, tp, "section"))
            continue
        if opt is not None:
            what = description(cls, name, field, key)
            table.rows.append((key, "section \\| null", "`null` (off)",
                               (what + "; " if what else "") + f"off; `{key}={{}}` turns it on with the defaults below"))
            nested.append((key, opt, "optional"))
            continue
        kind = type_name(tp)
        cons = _constraints(field)
        table.rows.append((key, kind + (f", {cons}" if cons else ""), default_text(field),
                           description(cls, name, field, key)))
        # list/dict of sections: document the item's keys
        for arg in get_args(tp):
            arg = _strip_wrappers(arg)
            for inner in [arg, *get_args(arg)]:
                inner = _strip_wrappers(inner)
                if _is_model(inner):
                    origin = get_origin(tp) if get_origin(tp) not in (typing.Union, types.UnionType) else get_origin(arg)
                    sub = f"{key}[]" if origin in (list, tuple) else f"{key}.<name>"
                    nested.append((sub, inner, "item"))
    for key, sub, kind in nested:
        intro = first_paragraph(sub)
        if kind == "optional":
            intro = (intro + " " if intro else "") + f"Off unless `{key}` is set."
        t = Table(key, intro)
        tables.append(t)
        walk(sub, key + ".", tables, t)


def schema_tables() -> list[Table]:
    cfg = top_config()
    top = Table("(top level)", first_paragraph(cfg) or "The recipe's top-level keys; sections follow.")
    tables = [top]
    walk(cfg, "", tables, top, skip={"env"})
    # `env` is typed by its base class; its real keys come from the class `env.name` picks
    return tables


def env_tables() -> list[Table]:
    base = env_base()
    out = []
    common = Table("env (every environment)", first_paragraph(base))
    common.rows.append(("env.name", "string", "required",
                        "a built-in environment below, or `file.py:Class` / `pkg.mod:Class` naming your "
                        "own `EnvConfigBase` subclass (docs/extending.md, \"Environments\")"))
    out.append(common)
    walk(base, "env.", out, common, skip={"name"})
    base_fields = set(base.model_fields)
    global _CTX
    for name, cls in sorted(builtin_envs().items()):
        t = Table(f"env.name: {name}", first_paragraph(cls))
        out.append(t)
        _CTX = f"{name}:"
        try:
            walk(cls, "env.", out, t, skip=base_fields | {"name"})
        finally:
            _CTX = ""
    return out


def shipped_recipes() -> list[str]:
    rows = ["| recipe | description |", "|---|---|"]
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        desc = " ".join(str(data.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| [`{path.stem}`](../recipes/{path.name}) | {desc} |")
    return rows


def render() -> str:
    lines = [
        "# Recipe reference",
        "",
        "<!-- Generated by scripts/recipe_docs.py from the config schema; do not edit by hand.",
        "     Regenerate: python scripts/recipe_docs.py --write -->",
        "",
        "A recipe is a YAML file validated by `rlcurr.config.Config`. Every section forbids unknown keys,",
        "so a typo is one error naming its dotted path. Any key can be set on the command line as",
        "`dotted.key=value` (the value is parsed as YAML):",
        "",
        "```bash",
        "rlcurr train recipes/dump_arith.yaml trainer.steps=100 algo.clip_high=0.28",
        "```",
        "",
        "The run's `config.yaml` is the resolved recipe, with every default below filled in.",
        "What the curriculum keys do is in [curriculum.md](curriculum.md); the keys that place work",
        "on GPUs and nodes are explained in [scaling.md](scaling.md).",
        "",
        "## Shipped recipes",
        "",
        "`rlcurr recipes` lists them too.",
        "",
        *shipped_recipes(),
        "",
        "## Keys",
        "",
        "A section whose default is `null` is off until the recipe sets it; `{}` turns it on with the",
        "defaults listed in its own table.",
        "",
    ]
    for t in schema_tables():
        lines += t.render()
    lines += ["## Environment keys", "",
              "`env.name` picks the environment's config class; the rest of `env` are that class's fields.", ""]
    for t in env_tables():
        lines += t.render()
    stale = sorted(set(FALLBACK) - _USED)
    if stale:
        raise SystemExit(f"scripts/recipe_docs.py: FALLBACK describes keys that have a description of their own "
                         f"or no longer exist: {', '.join(stale)}; remove them")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    p.add_argument("--check", action="store_true", help=f"exit 1 if {OUT.relative_to(ROOT)} is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run python scripts/recipe_docs.py --write", file=sys.stderr)
            return 1
        return 0
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUT.relative_to(ROOT)}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
