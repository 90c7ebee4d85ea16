"""Paths a recipe names: where a relative one is looked for."""

from __future__ import annotations

from pathlib import Path


def recipe_relative(value: str | None, recipe_dir: str | None) -> str | None:
    """A path from a recipe: absolute as given; a relative one is looked up in the recipe's
    directory, then the working directory, and returned absolute once found (the run's
    config.yaml then resumes from anywhere). One found in neither is returned as given: whoever
    loads it says it is missing, naming it."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    for base in ([Path(recipe_dir)] if recipe_dir else []) + [Path.cwd()]:
        if (base / path).exists():
            return str((base / path).resolve())
    return value
