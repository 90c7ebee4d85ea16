"""The README stays a short front page whose commands and links are real: every `rlcurr`, `make`
and `python` line of its ```bash blocks parses with the CLI's own argparse parser (nothing is
run), names files and Makefile targets that exist, and its recipe overrides validate; every
relative link resolves to a file, and every #anchor to a heading."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from rlcurr import cli
from rlcurr.config import load_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 220

_BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
# paths a command may name inside the repository
_REPO_PATH = re.compile(r"(?<![\w/.])((?:recipes/[\w.\-/]+\.yaml)|(?:bench/[\w.\-/]+\.py)|(?:scripts/[\w.\-/]+))")


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _commands(prefixes=("rlcurr ", "make ", "python ")) -> list[str]:
    """The README's ```bash lines that start with one of `prefixes` (continuations joined)."""
    out = []
    for block in _BASH.findall(_text()):
        joined = re.sub(r"\\\n\s*", " ", block)
        out += [line.strip() for line in joined.splitlines() if line.strip().startswith(prefixes)]
    return out


def _argv(line: str) -> list[str]:
    """The command's words without its trailing `# comment` (shell rules)."""
    return shlex.split(line, comments=True)


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


@pytest.fixture(scope="module")
def rlcurr_parser() -> argparse.ArgumentParser:
    """The parser `rlcurr.cli.main` builds, taken at its parse_args call (no command runs)."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        cli.main([])
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    pytest.fail("rlcurr.cli.main did not call parse_args")


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)\s*:(?!=)", text, flags=re.M)}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in _HEADING.finditer(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = _slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_readme_is_short():
    n = len(_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines (at most {MAX_LINES}): move detail to a page in docs/"


def test_readme_cites_no_notes_outside_the_repository():
    hits = [line for line in _text().splitlines() if re.search(r"\bMETHODS\b|\bDESIGN\b|\b[Ii]ssue \d", line)]
    assert not hits, hits


def test_readme_has_commands_to_check():
    words = {_argv(c)[0] + " " + _argv(c)[1] for c in _commands() if len(_argv(c)) > 1}
    assert {"make quickstart", "make test"} <= words
    assert {"rlcurr train", "rlcurr inspect", "rlcurr plan", "rlcurr profile"} <= words, words
    assert any(_argv(c)[:2] == ["rlcurr", "doctor"] for c in _commands())


@pytest.mark.parametrize("line", _commands(("rlcurr ",)))
def test_rlcurr_commands_parse(line, rlcurr_parser):
    argv = _argv(line)[1:]
    try:
        args = rlcurr_parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`{line}` does not parse with rlcurr's parser (exit {e.code})")
    assert args.command == argv[0] and callable(args.fn)


@pytest.mark.parametrize("line", _commands(("make ",)))
def test_make_targets_exist(line):
    targets = [w for w in _argv(line)[1:] if not w.startswith("-") and "=" not in w]
    missing = set(targets) - _makefile_targets()
    assert targets and not missing, f"`{line}`: no Makefile target {sorted(missing)}"


@pytest.mark.parametrize("line", _commands())
def test_named_repository_paths_exist(line):
    missing = [p for p in _REPO_PATH.findall(line) if not (ROOT / p).exists()]
    assert not missing, f"`{line}` names {missing}, which the repository does not have"


def test_python_scripts_exist():
    for line in _commands(("python ",)):
        script = next((w for w in _argv(line)[1:] if not w.startswith("-")), None)
        assert script and (ROOT / script).is_file(), f"`{line}`: no such script"


_RECIPE_COMMANDS = [c for c in _commands(("rlcurr ",))
                    if _argv(c)[1] in ("train", "plan", "profile") and len(_argv(c)) > 2
                    and _argv(c)[2].endswith(".yaml")]


@pytest.mark.parametrize("line", _RECIPE_COMMANDS)
def test_recipe_overrides_validate(line, monkeypatch):
    """`rlcurr train RECIPE k=v ...` (and plan / profile): the recipe and its dotted overrides load
    as the CLI loads them (rlcurr.config.load_config)."""
    monkeypatch.chdir(ROOT)
    words = _argv(line)
    overrides = [w for w in words[3:] if "=" in w and not w.startswith("-")]
    cfg = load_config(words[2], overrides)
    for o in overrides:  # each override reached the config
        key, _, _ = o.partition("=")
        node = cfg
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
    assert _RECIPE_COMMANDS, "the README shows no recipe command"


def test_relative_links_resolve():
    bad = []
    for m in _LINK.finditer(_FENCE.sub("", _text())):
        target = m.group(1)
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (ROOT / path).resolve() if path else README
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not bad, "README.md:\n" + "\n".join(bad)


def test_readme_links_every_docs_page():
    text = _text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name}" in text, f"README.md does not link docs/{page.name}"
