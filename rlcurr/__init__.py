"""rlcurr: RL post-training for language models with an observable curriculum controller.

The public names an environment written outside rlcurr needs (see README "Add an environment")::

    from rlcurr import EnvConfigBase, Environment, Prompt

They are looked up on first use, so `import rlcurr` stays light (no torch, no Ray) and
`envs.base`, which itself imports `rlcurr.types`, can be imported first without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EnvConfigBase", "Environment", "Prompt"]

if TYPE_CHECKING:
    from envs.base import EnvConfigBase, Environment
    from rlcurr.types import Prompt


def __getattr__(name: str) -> Any:
    if name in ("EnvConfigBase", "Environment"):
        import envs.base

        return getattr(envs.base, name)
    if name == "Prompt":
        from rlcurr.types import Prompt

        return Prompt
    raise AttributeError(f"module 'rlcurr' has no attribute {name!r}")
