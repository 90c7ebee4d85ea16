"""The package's import arrows point one way.

- `rlcurr` never imports `envs` (the built-in environments are a consumer of rlcurr, like a
  plugin: they register their names with `rlcurr.env_registry`, which finds them by name); every
  rlcurr module imports with `envs` blocked.
- No import cycle among the modules of rlcurr and envs at module level, and none through the
  inspect / compare / plan / config / environment modules even counting imports inside functions
  (no function-level import that dodges a cycle).
- `rlcurr.compare` and `rlcurr.report` share `rlcurr.rundata` and `rlcurr.display`; only the
  `inspect` command (rlcurr.report.command) imports compare, and compare imports no report module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rlcurr", "envs")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, top_level_only: bool) -> set[str]:
    """The modules of rlcurr / envs that module `name` imports (a `from pkg import sub` counts as sub)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_rlcurr_never_imports_envs():
    wrong = {m: sorted(e for e in _imports(m, top_level_only=False) if e.split(".")[0] == "envs")
             for m in MODULES if m.split(".")[0] == "rlcurr"}
    assert not {m: e for m, e in wrong.items() if e}


def test_no_import_cycle_at_module_level():
    assert _cycles({m: _imports(m, top_level_only=True) for m in MODULES}) == []


def test_no_import_cycle_even_inside_functions():
    """A function-level import is for start-up time (torch, ray), never to dodge a cycle."""
    assert _cycles({m: _imports(m, top_level_only=False) for m in MODULES}) == []


def test_compare_and_report_do_not_import_each_other():
    report = [m for m in MODULES if m == "rlcurr.report" or m.startswith("rlcurr.report.")]
    assert len(report) > 3  # a package, one module per job
    assert not [m for m in _imports("rlcurr.compare", top_level_only=False) if m in report]
    importers = {m for m in report if "rlcurr.compare" in _imports(m, top_level_only=False)}
    assert importers == {"rlcurr.report.command"}


def _run_python(code: str) -> str:
    """stdout of `code` run in a fresh interpreter from the repository root (asserting it ran)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_every_rlcurr_module_imports_without_envs():
    code = ("import importlib, pkgutil, sys\n"
            "sys.modules['envs'] = None  # any import of envs now raises\n"
            "import rlcurr\n"
            "names = sorted(m.name for m in pkgutil.walk_packages(rlcurr.__path__, 'rlcurr.'))\n"
            "for name in names:\n"
            "    importlib.import_module(name)\n"
            "print(len(names))\n")
    assert int(_run_python(code).split()[-1]) == len([m for m in MODULES if m.startswith("rlcurr.")])


def test_built_in_names_resolve_through_the_registry_and_import_only_their_module():
    code = ("import sys\n"
            "from rlcurr.config import build_config\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'envs']\n"
            "cfg = build_config({'name': 'x', 'model': {'tiny': {}}, 'env': {'name': 'arith'}})\n"
            "from envs.arith import ArithConfig\n"
            "assert type(cfg.env) is ArithConfig\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'envs'))\n")
    assert _run_python(code).split("\n")[-2] == "['envs', 'envs.arith', 'envs.base']"


def test_a_module_over_400_lines_says_why():
    """The house rule: a module longer than about 400 lines says in its docstring why it is one
    module ("Over 400 lines on purpose: ...")."""
    import ast

    long = {name: path for name, path in _modules().items() if len(path.read_text().splitlines()) > 400}
    silent = [name for name, path in long.items()
              if "Over 400 lines" not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert silent == []
