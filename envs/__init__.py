"""Built-in environments: arith, calc, chain, dataset (a local Hugging Face dataset), math,
reasoning_gym and skills.

Each module defines a config class (a subclass of `rlcurr.EnvConfigBase`). They are plugins
like any other: the names below are registered with rlcurr as short names for their import paths
(`rlcurr.env_registry`), and a module is imported only when a recipe uses it. Environments
outside rlcurr are named by import path, or register names the same way (docs/extending.md).
"""

from rlcurr.env_registry import register_env

BUILTIN = {
    "arith": "envs.arith:ArithConfig",
    "calc": "envs.calc:CalcConfig",
    "chain": "envs.chain:ChainConfig",
    "dataset": "envs.dataset:DatasetConfig",
    "math": "envs.math:MathConfig",
    "reasoning_gym": "envs.reasoning_gym:ReasoningGymConfig",
    "skills": "envs.skills:SkillsConfig",
}

for _name, _path in BUILTIN.items():
    register_env(_name, _path)
