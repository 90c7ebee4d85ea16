"""Built-in environments: arith, chain, reasoning_gym, math and dataset (a local Hugging Face
dataset). Each module defines a config class (a subclass of `envs.base.EnvConfigBase`, also
importable as `rlcurr.EnvConfigBase`) that `rlcurr.config.BUILTIN_ENVS` lists by its `name`.
Environments outside rlcurr are named by import path instead (README "Add an environment")."""
