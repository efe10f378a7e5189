"""The layout's promises (README, "Layout"): dependencies point nas -> objectives -> search_spaces,
no import circle inside a package, no two modules share a name, and no family is named outside
its own modules."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "objectives", "search_spaces")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside functions (TYPE_CHECKING too)."""
    found: set[str] = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # a package's __init__ re-exports: importing it is importing the package, not each submodule
    return {m: _imports(p, m, known) for m, p in mods.items()}


def test_the_graph_is_not_empty() -> None:
    g = _graph()
    assert len(g) > 40 and sum(len(v) for v in g.values()) > 100


def test_dependencies_point_one_way() -> None:
    rank = {"search_spaces": 0, "objectives": 1, "nas": 2}
    bad = [(m, d) for m, deps in _graph().items() for d in deps if rank[d.split(".")[0]] > rank[m.split(".")[0]]]
    assert not bad, f"imports against nas -> objectives -> search_spaces: {bad}"


def test_no_import_circle_between_modules() -> None:
    """Tarjan's strongly connected components over module imports (a package's __init__ left out:
    it only re-exports)."""
    mods = _modules()
    inits = {m for m, p in mods.items() if p.name == "__init__.py"}
    g = {m: {d for d in deps if d not in inits} for m, deps in _graph().items() if m not in inits}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_no_two_modules_share_a_name() -> None:
    names = Counter(p.stem for p in _modules().values() if p.name not in ("__init__.py", "__main__.py"))
    assert names["evaluate"] == 1  # the check sees the tree
    dup = sorted(n for n, c in names.items() if c > 1)
    assert not dup, f"modules sharing a name: {dup}"


def test_no_family_is_named_outside_its_modules() -> None:
    """A new family is one new file: nas/ and objectives/ dispatch through the registry."""
    from search_spaces import list_families

    families = list_families()
    assert "shufflenet_v1" in families
    pattern = re.compile(r"shufflenet_v\d")  # the grep: examples in help texts may name resnext
    hits = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("nas", "objectives") for p in (ROOT / pkg).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, f"family names outside search_spaces/: {hits}"
