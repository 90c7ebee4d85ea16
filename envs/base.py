"""What the built-in environments share: rlcurr's environment classes, and `PoolEnvironment`.

`EnvConfigBase` and `Environment` are defined in `rlcurr.environment` (a plugin imports them as
``from rlcurr import EnvConfigBase, Environment``); they are re-exported here so the built-ins
import everything from one place. The built-ins are plugins like any other: `envs/__init__.py`
registers their names with rlcurr (docs/extending.md).
"""

from __future__ import annotations

from rlcurr.environment import EnvConfigBase, Environment
from rlcurr.types import Prompt

__all__ = ["EnvConfigBase", "Environment", "PoolEnvironment"]


class PoolEnvironment(Environment):
    """An environment whose pools are built once, in `__init__`: `self._train` and `self._eval`,
    dicts from distribution to prompts; the distributions are `self._train`'s keys, in order."""

    _train: dict[str, list[Prompt]]
    _eval: dict[str, list[Prompt]]

    def distributions(self) -> list[str]:
        return list(self._train)

    def train_prompts(self, distribution: str) -> list[Prompt]:
        return self._train[distribution]

    def eval_prompts(self, distribution: str) -> list[Prompt]:
        return self._eval.get(distribution, [])
