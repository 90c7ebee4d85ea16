"""rlcurr: RL post-training for language models with an observable curriculum controller.

The public names an environment written outside rlcurr needs (docs/extending.md)::

    from rlcurr import EnvConfigBase, Environment, Prompt

`import rlcurr` stays light: pydantic, no torch, no Ray.
"""

from __future__ import annotations

from rlcurr.environment import EnvConfigBase, Environment
from rlcurr.types import Prompt

__all__ = ["EnvConfigBase", "Environment", "Prompt"]
