"""User-facing errors: the CLI prints their message alone (no traceback) and exits non-zero."""


class UserError(Exception):
    """A mistake in the user's input (recipe, override, data file, reward function)."""
