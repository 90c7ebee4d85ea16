"""Environment names: what a recipe's `env.name` means (docs/extending.md).

An environment is a config class (a subclass of `rlcurr.EnvConfigBase`) whose `build(seed)`
returns an `rlcurr.Environment`. A recipe names it by import path (``my_envs.py:MyConfig`` or
``my_pkg.envs:MyConfig``), or by a short name registered for such a path with
``register_env("skills", "envs.skills:SkillsConfig")``. The built-in environments register their
names this way, from their own package (envs/__init__.py), as any other package can: rlcurr
imports no environment at module import time. The packages that register names (`ENV_PACKAGES`)
are imported on the first look-up, and an environment's module only when a recipe uses it; a
registered name is then checked and resolved like an import path (`env_config_class`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from rlcurr.environment import EnvConfigBase, Environment
from rlcurr.errors import UserError
from rlcurr.rewards.registry import import_object

#: packages imported on the first look-up, for the names they register (the built-ins' package)
ENV_PACKAGES: tuple[str, ...] = ("envs",)

_PATHS: dict[str, str] = {}  # short name -> import path of its config class
_loaded = False


def register_env(name: str, path: str) -> None:
    """Make `name` stand for the config class at import path `path` ('pkg.module:Class'). The
    class's `name` field should be ``Literal[name]`` with that default, so that the resolved
    config.yaml names it back; a class without one is given it (as for an import path)."""
    if not name or ":" in name or "." in name:
        raise ValueError(f"environment name {name!r}: a short name has no ':' or '.' (those mean an import path)")
    if ":" not in path:
        raise ValueError(f"environment {name!r}: {path!r} is not an import path 'pkg.module:Class'")
    if _PATHS.get(name, path) != path:
        raise ValueError(f"environment name {name!r} is already registered for {_PATHS[name]}")
    _PATHS[name] = path


def env_paths() -> dict[str, str]:
    """Every registered name and its import path (importing `ENV_PACKAGES` first)."""
    global _loaded
    if not _loaded:
        for package in ENV_PACKAGES:
            importlib.import_module(package)
        _loaded = True
    return dict(_PATHS)


class _Registered(Mapping):
    """Registered name -> its config class, imported on first use (the class as registered)."""

    def __getitem__(self, name: str) -> Any:
        return import_object(env_paths()[name], what="env.name")[0]

    def __contains__(self, name: object) -> bool:
        return name in env_paths()

    def __iter__(self) -> Iterator[str]:
        return iter(env_paths())

    def __len__(self) -> int:
        return len(env_paths())


#: registered name -> config class (`ENVS["skills"]` imports envs.skills and returns SkillsConfig)
ENVS: Mapping[str, Any] = _Registered()


def env_config_class(name: Any, recipe_dir: str | Path | None = None) -> type[EnvConfigBase]:
    """The config class `env.name` refers to: a registered name (`register_env`: the built-ins
    and any a package registers) or an import path to a subclass of `EnvConfigBase`
    defined outside rlcurr:

    - ``path/to/my_envs.py:MyConfig`` -- a relative path is looked up in the recipe's directory,
      then in the working directory;
    - ``my_pkg.envs:MyConfig`` (or ``my_pkg.envs.MyConfig``) -- imported with the working
      directory on ``sys.path``.

    A registered name is the import path it stands for, checked the same way. For an import path
    (or a registered class without a matching `name` field) the class returned is a subclass of
    the user's class whose `name` field is the name itself (a file made absolute), so the
    resolved config.yaml names the same class when a run is resumed from another directory. A
    name that cannot be resolved is one UserError naming env.name (and the file)."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"env.name must be a string naming an environment (got {name!r}); {env_name_forms()}")
    registered = env_paths()
    if name in registered:
        return _checked_class(name, registered[name], registered=True)
    if ":" not in name and "." not in name:
        close = difflib.get_close_matches(name, sorted(registered), n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"env.name {name!r}: unknown environment{maybe}; {env_name_forms()}")
    if name.endswith(".py"):
        raise UserError(f"env.name {name!r}: name the config class after the file, e.g. '{name}:MyConfig'")
    return _checked_class(name, name, recipe_dir=recipe_dir)


def _checked_class(name: str, path: str, recipe_dir: str | Path | None = None,
                   registered: bool = False) -> type[EnvConfigBase]:
    """The EnvConfigBase subclass at import path `path` (the one `env.name` `name` stands for)."""
    search = [recipe_dir] if recipe_dir is not None else []
    obj, canonical = import_object(path, what="env.name", search_dirs=search)
    where = canonical.rsplit(":", 1)[0] if ":" in canonical else canonical
    if not (isinstance(obj, type) and issubclass(obj, EnvConfigBase)):
        what = f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        extra = ""
        if isinstance(obj, type) and issubclass(obj, Environment):
            extra = (" (that is the environment; point env.name at its config class, the EnvConfigBase "
                     "subclass whose build(seed) returns it)")
        raise UserError(f"env.name {name!r}: {what} in {where} is not a subclass of rlcurr.EnvConfigBase{extra}")
    if obj.build is EnvConfigBase.build:
        raise UserError(f"env.name {name!r}: {obj.__name__} in {where} defines no build(self, seed) returning "
                        f"an rlcurr.Environment")
    own = obj.model_fields.get("name")
    if registered and own is not None and own.default == name:
        return obj  # a registered class that names itself (the built-ins): used as it is
    return _named_plugin_class(obj, name if registered else canonical)


def env_name_forms() -> str:
    """What env.name may be, for error messages: the registered names and the import path forms."""
    return (f"built-in environments: {', '.join(sorted(env_paths()))}; your own is an import path to its "
            f"config class (a subclass of rlcurr.EnvConfigBase): 'my_envs.py:MyConfig' (relative to the "
            f"recipe's directory, then the working directory) or 'my_pkg.envs:MyConfig'")


_PLUGIN_CLASSES: dict[tuple[type, str], type[EnvConfigBase]] = {}


def _named_plugin_class(user_cls: type[EnvConfigBase], name: str) -> type[EnvConfigBase]:
    """`user_cls` with a `name` field fixed to `name`, its import path or registered name (cached:
    one class per name), and a `build` that checks it returns an Environment."""
    key = (user_cls, name)
    if key not in _PLUGIN_CLASSES:

        def build(self, seed: int):
            env = user_cls.build(self, seed)
            if not isinstance(env, Environment):
                raise UserError(f"env.name {name!r}: {user_cls.__name__}.build(seed) returned a "
                                f"{type(env).__name__}, not an rlcurr.Environment")
            return env

        namespace = {"__module__": user_cls.__module__, "__qualname__": user_cls.__qualname__,
                     "__doc__": user_cls.__doc__, "__annotations__": {"name": Literal[name]}, "name": name,
                     "build": build}
        _PLUGIN_CLASSES[key] = type(user_cls.__name__, (user_cls,), namespace)
    return _PLUGIN_CLASSES[key]


def validate_env(value: Any, recipe_dir: str | Path | None = None) -> EnvConfigBase:
    """The recipe's `env` mapping validated by the config class its `name` picks. Field errors are
    pydantic's (reported as env.<field> by `rlcurr.config.format_validation_error`); a name that does not resolve
    is a UserError (see `env_config_class`)."""
    if isinstance(value, EnvConfigBase):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping with a name, e.g. {{name: arith}}; {env_name_forms()}")
    if "name" not in value:
        raise ValidationError.from_exception_data("env", [{"type": "missing", "loc": ("name",), "input": value}])
    cls = env_config_class(value["name"], recipe_dir)
    data = {**value, "name": cls.model_fields["name"].default}  # a file path made absolute
    return cls.model_validate(data, context={"recipe_dir": str(recipe_dir) if recipe_dir is not None else None})
