"""Reward functions by name: a registry of built-ins plus import paths to user code.

A reward function follows TRL's contract::

    fn(prompts, completions, **columns) -> list[float | None]     # None = not applicable

`async def` functions are allowed (the runner awaits them). rlcurr always calls a reward by
keyword -- ``fn(prompts=..., completions=..., **columns)`` -- exactly as TRL's GRPOTrainer does,
so TRL functions that take ``completions`` first (``think_format_reward(completions, **kwargs)``,
``accuracy_reward(completions, solution, **kwargs)``) work unchanged. The one signature rule is
that a reward must accept ``**kwargs``: every environment column is passed to every function.

A recipe names a reward in one of three ways (and may bind keyword parameters to it with
``params``, see `resolve_reward`; a class with a ``reward_from_params`` classmethod, such as the
model rewards of `rlcurr.rewards.model_rewards`, is constructed with them instead, its instance
being the reward):

- a registered name: ``exact_match`` (see `registered_names()`; built-ins live in
  `rlcurr.rewards.builtin`, user code can add its own with ``@register("name")``; the name
  table itself is `rlcurr.rewards.table`, which this module re-exports `register` from);
- an import path: ``my_pkg.my_rewards:fn`` or ``my_pkg.my_rewards.fn`` (the current working
  directory is searched too, so a ``my_rewards.py`` next to the recipe works);
- a file path: ``path/to/my_rewards.py:fn``. The file is read as UTF-8 (or the encoding its
  PEP 263 coding line declares); a directory, an unreadable file, bytes that do not decode, a
  SyntaxError or any exception at import give one UserError naming the file.

Completion format. TRL hands completions to reward functions as plain strings for plain-text
prompts and as message lists (``[[{"role": "assistant", "content": ...}], ...]``) for chat
prompts; TRL's own reward functions read ``completion[0]["content"]``. rlcurr decides per
function (`completion_format`):

1. the type annotation of the function's ``completions`` parameter, if it has one: an annotation
   mentioning ``dict`` (TRL's ``list[list[dict[str, str]]]``) means messages, any other
   annotation (``list[str]``) means strings;
2. otherwise TRL's rule: messages when the model's tokenizer has a chat template, strings when it
   does not (the runner's ``conversational`` flag, see `rlcurr.prompting.has_chat_template`).

So TRL's built-in reward functions always get messages, an unannotated user function sees what
it would see under TRL, and rlcurr's built-ins accept both forms.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Literal, Sequence

from rlcurr.errors import UserError
from rlcurr.rewards.table import RewardFn, lookup, names, register

__all__ = ["RewardFn", "register", "registered_names", "resolve_reward", "bind_params", "check_signature",
           "required_columns", "completion_format", "reward_label", "import_object"]

CompletionFormat = Literal["text", "messages"]


def registered_names() -> list[str]:
    _load_builtins()
    return names()


def resolve_reward(name: str, params: dict[str, Any] | None = None) -> RewardFn:
    """Return the callable a recipe's reward `name` refers to, with `params` (the recipe's
    ``rewards[i].params``) bound as keyword arguments, or raise a UserError saying why not."""
    _load_builtins()
    fn = lookup(name)
    if fn is None:
        if ":" not in name and "." not in name:
            raise UserError(_unknown_name_message(name))
        fn = _import_object(name)
        if not _built_from_params(fn):
            check_signature(fn, name)
    if _built_from_params(fn):
        # A reward class (model rewards, rlcurr.rewards.model_rewards): its instance, constructed with
        # the params, is the reward function; it checks them itself, now, before any run starts.
        _check_param_names(fn, params or {}, name)
        return fn.reward_from_params(dict(params or {}), name)
    return bind_params(fn, params, name)


def _built_from_params(fn: Any) -> bool:
    return inspect.isclass(fn) and callable(getattr(fn, "reward_from_params", None))


def bind_params(fn: RewardFn, params: dict[str, Any] | None, name: str) -> RewardFn:
    """`fn` with keyword `params` bound (functools.partial, keeping its name). Every key must be a
    named keyword parameter of `fn` other than prompts/completions: **kwargs would swallow a typo."""
    if not params:
        return fn
    _check_param_names(fn, params, name)
    bound = functools.partial(fn, **params)
    bound.__name__ = reward_label(fn)  # type: ignore[attr-defined]
    bound.__module__ = getattr(fn, "__module__", None)  # type: ignore[attr-defined]
    return bound


def _check_param_names(fn: Any, params: dict[str, Any], name: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    accepted = [p.name for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("prompts", "completions")]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise UserError(f"reward {name!r} has no parameter(s) {unknown} (from its params); "
                        f"its keyword parameters are {accepted}")


def check_signature(fn: Any, name: str) -> None:
    """A reward must be callable by keyword with prompts=, completions= and arbitrary columns."""
    if not callable(fn):
        raise UserError(f"reward {name!r} is not callable (it is a {type(fn).__name__})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some C callables have no inspectable signature; calling them will tell
    params = list(sig.parameters.values())
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        raise UserError(
            f"reward {name!r} has signature {sig}; a reward function must accept **kwargs "
            "(rlcurr passes prompts=, completions= and every data column by keyword), "
            "e.g. def my_reward(prompts, completions, **kwargs)"
        )
    for p in params:
        if p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            raise UserError(
                f"reward {name!r} has signature {sig}; parameter {p.name!r} is positional-only, "
                "but rlcurr calls reward functions by keyword (as TRL does)"
            )


def required_columns(fn: RewardFn) -> list[str]:
    """Keyword parameters without a default, other than prompts/completions: columns it needs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
        and p.name not in ("prompts", "completions")
    ]


def completion_format(fn: RewardFn, conversational: bool) -> CompletionFormat:
    """Which form `fn` gets its completions in (see the module docstring)."""
    try:
        param = inspect.signature(fn).parameters.get("completions")
    except (TypeError, ValueError):
        param = None
    if param is not None and param.annotation is not inspect.Parameter.empty:
        text = param.annotation if isinstance(param.annotation, str) else repr(param.annotation)
        return "messages" if "dict" in text.lower() else "text"
    return "messages" if conversational else "text"


def reward_label(fn: RewardFn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


# ---------------------------------------------------------------- helpers


def _load_builtins() -> None:
    # On first use rather than at import: the built-ins pull in math-verify and reasoning-gym lazily.
    import rlcurr.rewards.builtin  # noqa: F401
    import rlcurr.rewards.model_rewards  # noqa: F401  (reward_model, judge; torch/ray load on first call)


def _unknown_name_message(name: str) -> str:
    known = names()
    close = difflib.get_close_matches(name, known, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown reward {name!r}{maybe}. Registered rewards: {', '.join(known)}. "
        "A user function is referenced by import path, e.g. 'my_module:my_reward' "
        "or 'path/to/file.py:my_reward'"
    )


def _import_object(name: str) -> Any:
    return import_object(name, what="reward")[0]


def import_object(name: str, *, what: str = "reward", search_dirs: Sequence[str | Path] = ()) -> tuple[Any, str]:
    """The object an import path names, and that path with a file made absolute.

    `name` is ``path/to/file.py:attr``, ``pkg.mod:attr`` or ``pkg.mod.attr`` (``attr`` may be
    dotted: ``Class.method``). A relative file path is looked up in each of `search_dirs`, then
    in the current working directory; a module is imported with the working directory on
    ``sys.path``. Every way this can fail is one UserError starting with ``{what} {name!r}:``.
    """
    target, attr = _split_path(name, what)
    if target.endswith(".py"):
        path = _find_file(target, name, what, search_dirs)
        module, canonical = _import_file(path, name, what), f"{path}:{attr}"
    else:
        module, canonical = _import_module(target, name, what), name
    obj: Any = module
    for part in attr.split("."):  # 'module:Class.method' is allowed
        if not hasattr(obj, part):
            public = sorted(
                a for a, v in vars(module).items()
                if not a.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__
            )
            where = module.__file__ if target.endswith(".py") else repr(module.__name__)
            raise UserError(
                f"{what} {name!r}: module {where} has no attribute {attr!r}. "
                f"{'Functions' if what == 'reward' else 'Names'} defined there: {', '.join(public[:30]) or '(none)'}"
            )
        obj = getattr(obj, part)
    return obj, canonical


def _split_path(name: str, what: str = "reward") -> tuple[str, str]:
    if ":" in name:
        target, attr = name.rsplit(":", 1)
    else:
        target, attr = name.rsplit(".", 1)
    if not target or not attr:
        raise UserError(f"{what} {name!r}: expected 'module:name', 'module.name' or 'path/to/file.py:name'")
    return target, attr


def _find_file(file: str, name: str, what: str, search_dirs: Sequence[str | Path]) -> Path:
    """The first of search_dirs/file, ./file that exists (absolute, resolved); else a UserError."""
    path = Path(file).expanduser()
    candidates = [path] if path.is_absolute() else [Path(d) / path for d in search_dirs] + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = ", ".join(str(c.resolve()) for c in dict.fromkeys(candidates))
    raise UserError(f"{what} {name!r}: file not found: {tried}")


def _import_module(module_name: str, name: str, what: str = "reward") -> Any:
    # The console script's sys.path does not include the working directory; users expect a
    # my_rewards.py next to their recipe to be importable, as with `python -m`.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except Exception as e:  # ImportError, SyntaxError, or anything the module raises at import
        raise UserError(
            f"{what} {name!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}"
        ) from None


def _import_file(path: Path, name: str, what: str = "reward") -> Any:
    """Execute a user's file (an absolute path) as a module; every way it can be broken is one UserError."""
    if path.is_dir():
        raise UserError(f"{what} {name!r}: {path} is a directory, not a Python file")
    if not path.exists():
        raise UserError(f"{what} {name!r}: file not found: {path}")
    module_name = f"rlcurr_user_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{what} {name!r}: cannot read {path}: {e.strerror or e}") from None
    try:
        source = importlib.util.decode_source(data)  # UTF-8 unless a PEP 263 coding line says otherwise
    except (SyntaxError, UnicodeDecodeError, LookupError) as e:
        raise UserError(f"{what} {name!r}: {path} is not UTF-8 text and declares no other encoding "
                        f"(# -*- coding: ... -*-): {getattr(e, 'msg', None) or e}") from None
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise UserError(f"{what} {name!r}: {path} is not valid Python{where}: "
                        f"{type(e).__name__}: {getattr(e, 'msg', None) or e}") from None
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(module_name, path))
    sys.modules[module_name] = module  # before exec: dataclasses and pickle look modules up here
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as e:
        del sys.modules[module_name]
        raise UserError(f"{what} {name!r}: cannot import {path}: {type(e).__name__}: {e}") from None
    return module
