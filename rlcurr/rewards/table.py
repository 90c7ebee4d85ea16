"""The reward name table: registered name -> reward function, and its register / lookup API.

A leaf module (it imports nothing from rlcurr.rewards): `rlcurr.rewards.builtin` registers its
functions here, `rlcurr.rewards.registry` resolves recipe names against it (loading the built-ins
first), so the import graph is table <- builtin <- registry, without a cycle. User code
registers with ``from rlcurr.rewards.registry import register`` (the same function).
"""

from __future__ import annotations

from typing import Any, Callable

RewardFn = Callable[..., Any]

_TABLE: dict[str, RewardFn] = {}


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make `fn` available to recipes as `name`."""

    def deco(fn: RewardFn) -> RewardFn:
        old = _TABLE.get(name)
        # Re-importing the same module (reloads in notebooks/tests) re-registers the same function.
        if old is not None and _qualified(old) != _qualified(fn):
            raise ValueError(f"reward name {name!r} is already registered to {_qualified(old)}")
        _TABLE[name] = fn
        return fn

    return deco


def lookup(name: str) -> RewardFn | None:
    """The function registered as `name`, or None (built-ins only once builtin.py is imported)."""
    return _TABLE.get(name)


def names() -> list[str]:
    """Registered names, sorted."""
    return sorted(_TABLE)
