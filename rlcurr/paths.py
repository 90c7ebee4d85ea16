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


def read_utf8(path: Path, where: str, hint: str = "") -> str:
    """A user's text file, or one UserError naming `where` (and the line of a bad byte)."""
    from rlcurr.errors import UserError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise UserError(f"{where}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}){hint}") from None
    except OSError as e:
        raise UserError(f"{where}: cannot read: {e.strerror or e}") from None
