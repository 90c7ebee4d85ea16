"""The docs stay true to the code: the recipe reference is the schema's, every docs page and
section the code cites exists, and nothing cites a file a clone of the repository does not have."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh"}
# where code, tests, recipes and benches live (bench/runs and bench/results hold data)
SOURCE_DIRS = ("rlcurr", "envs", "bench", "recipes", "tests", "scripts")
SKIP_PARTS = {"__pycache__", "runs", "results", ".venv"}


def _files(dirs=SOURCE_DIRS, suffixes=TEXT_SUFFIXES) -> list[Path]:
    out = []
    for d in dirs:
        for p in sorted((ROOT / d).rglob("*")):
            if p.is_file() and p.suffix in suffixes and not SKIP_PARTS & set(p.relative_to(ROOT).parts):
                out.append(p)
    return out


def _citing_files() -> list[Path]:
    """Every file that may cite a docs page: the sources, the docs themselves and the README."""
    files = _files() + sorted(DOCS.glob("**/*.md")) + [ROOT / "README.md"]
    return [p for p in files if p.name != "test_docs.py"]  # its own docstrings show the form


def _load_generator():
    spec = importlib.util.spec_from_file_location("recipe_docs", ROOT / "scripts" / "recipe_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipe_reference_is_generated_from_the_schema():
    text = _load_generator().render()
    committed = (DOCS / "recipes.md").read_text(encoding="utf-8") if (DOCS / "recipes.md").is_file() else ""
    assert committed == text, ("docs/recipes.md is out of date with the config schema or recipes/; regenerate it: "
                               "python scripts/recipe_docs.py --write")


def test_recipe_reference_lists_every_key_and_recipe():
    text = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for key in ("curriculum.ucb.c", "curriculum.greso.p_easy", "trainer.max_staleness", "rollout.engine",
                "learner.strategy", "env.lengths", "rewards[].name"):
        assert f"| `{key}` |" in text, key
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        assert f"[`{recipe.stem}`]" in text, recipe.name
    # every row has a description
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    empty = [r for r in rows if r.rstrip().endswith("|  |")]
    assert not empty, f"keys without a description (add one to the field, or FALLBACK in scripts/recipe_docs.py): {empty}"


# ---------------------------------------------------------------- references outside the repository

_OUTSIDE = re.compile(r"\bMETHODS\b|\bDESIGN\b")


def test_nothing_cites_files_outside_the_repository():
    """METHODS.md and DESIGN.md were notes outside the repository; their content is in docs/."""
    hits = []
    for p in _files(("rlcurr", "envs", "bench", "recipes", "tests")):
        if p.name == "test_docs.py":
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, ("cite the docs page instead (docs/<page>.md, \"<heading>\"):\n" + "\n".join(hits))


# ---------------------------------------------------------------- docs paths and sections

_DOC_PATH = re.compile(r"(?<![\w/.])docs/([\w\-/]+\.md)")
# docs/X.md, "Section" -- also across a line break inside a comment or docstring
_DOC_SECTION = re.compile(r"(?<![\w/.])docs/([\w\-/]+\.md),?[ \t]*(?:\n[ \t]*#?[ \t]*)?\"([^\"\n]+)\"")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def headings(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return [m.group(2).strip() for m in _HEADING.finditer(text)]


def _plain(heading: str) -> str:
    return heading.replace("`", "").strip()


def slugs(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings (lowercase, punctuation dropped, spaces -> '-',
    repeats numbered)."""
    seen: dict[str, int] = {}
    out = set()
    for h in headings(page):
        base = re.sub(r"[^\w\- ]", "", _plain(h).lower()).replace(" ", "-")
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_cited_docs_pages_exist():
    missing = []
    for p in _citing_files():
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in _DOC_PATH.finditer(line):
                if not (DOCS / m.group(1)).is_file():
                    missing.append(f"{p.relative_to(ROOT)}:{n}: docs/{m.group(1)}")
    assert not missing, "cited docs pages that do not exist:\n" + "\n".join(missing)


def test_cited_docs_sections_are_headings():
    wrong = []
    for p in _citing_files():
        text = p.read_text(encoding="utf-8", errors="replace")
        for m in _DOC_SECTION.finditer(text):
            page, section = DOCS / m.group(1), m.group(2).strip()
            if not page.is_file():
                continue  # reported by test_cited_docs_pages_exist
            if _plain(section) not in {_plain(h) for h in headings(page)}:
                line = text.count("\n", 0, m.start()) + 1
                wrong.append(f"{p.relative_to(ROOT)}:{line}: docs/{m.group(1)}, \"{section}\" "
                             f"(headings there: {'; '.join(headings(page))})")
    assert not wrong, "cited sections that are not headings of their page:\n" + "\n".join(wrong)


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", sorted(DOCS.glob("**/*.md")), ids=lambda p: p.name)
def test_docs_links_resolve(page):
    """Relative links in the docs point at files that exist, and #anchors at headings."""
    bad = []
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    for m in _LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"
