"""Family name -> family: the one place `nas/` and `objectives/` look families up.

A family is a model module (see `shufflenet_v1.py`: `Arch`, `build_model`, `PRESETS`,
`preset`, `LATENCY_REFERENCES`, `macs_breakdown`, `analytic_params`, `summary`, `blocks`)
and a search space class beside it (`shufflenet_v1_space.py`). `search_spaces/__init__.py`
registers each pair by name; a duplicate name raises instead of silently overwriting.
"""

from __future__ import annotations

import ast
import inspect
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

#: the attributes a family's model module must define
FAMILY_API = ("Arch", "build_model", "PRESETS", "preset", "LATENCY_REFERENCES", "macs_breakdown",
              "analytic_params", "summary", "blocks")
#: the family of experiment files and arch JSON that name none (the project's first)
DEFAULT_FAMILY = "shufflenet_v1"


@dataclass(frozen=True)
class Family:
    """A registered family: its model module (whose names it answers for), its `Space`, and its
    weight-sharing supernet module where it has one (the one-shot signal; None: that signal is unavailable)."""

    name: str
    model: ModuleType
    Space: type
    supernet: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:  # fam.PRESETS, fam.build_model, ...: the model module's
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(object.__getattribute__(self, "model"), attr)


_FAMILIES: dict[str, Family] = {}


def register_family(model: ModuleType, space: type, supernet: ModuleType | None = None) -> Family:
    missing = [a for a in FAMILY_API if not hasattr(model, a)]
    if missing:
        raise TypeError(f"family module {model.__name__} lacks {missing}")
    name = model.Arch.FAMILY
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} is already registered")
    for other in _FAMILIES.values():
        clash = set(other.PRESETS) & set(model.PRESETS)
        if clash:
            raise ValueError(f"family {name!r}: preset names {sorted(clash)} are already taken")
    _FAMILIES[name] = Family(name, model, space, supernet)
    return _FAMILIES[name]


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def family_of(arch: Any) -> Family:
    """The family of an architecture (dispatch on its `family` field)."""
    return get_family(getattr(arch, "family", None) or type(arch).__name__)


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def family_of_preset(name: str) -> Family | None:
    for fam in _FAMILIES.values():
        if name in fam.PRESETS:
            return fam
    return None


def get_space(name: str, **bounds: Any) -> Any:
    """A family's search space with these bounds (`name` is the family)."""
    return get_family(name).Space(**bounds)


def list_spaces() -> list[str]:
    return list_families()


# ---------------------------------------------------------------------------- export


def network_source(name: str, roots: tuple[str, ...] = ("Arch", "build_model")) -> str:
    """The family's network as one torch + stdlib source: every top-level definition of
    `network.py`, `shuffle.py` and the model module that `roots` need, transitively, in
    their original order, under the imports they use.

    This is how an export ships the very code the search built with, and no more: no
    presets, MACs counters, latency parts or search space. The `__future__` import is left
    to the caller, which must put it first.
    """
    from . import network, shuffle

    defs: list[tuple[set[str], set[str], str]] = []  # (names defined, names used, source)
    imports: dict[str, tuple[str | None, str]] = {}  # bound name -> (module or None, imported name)
    for mod in (network, shuffle, sys.modules[get_family(name).model.__name__]):
        src = inspect.getsource(mod)
        lines = src.splitlines()
        for node in ast.parse(src).body:
            if isinstance(node, ast.ImportFrom) and node.module != "__future__" and not node.level:
                imports.update({a.asname or a.name: (node.module, a.name) for a in node.names})
            elif isinstance(node, ast.Import):
                imports.update({a.asname or a.name: (None, a.name) for a in node.names})
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)):
                defs.append((_defined(node), {n.id for n in ast.walk(node) if isinstance(n, ast.Name)},
                             _segment(lines, node)))
    wanted, queue = set(), list(roots)
    while queue:
        n = queue.pop()
        for defined, used, _src in defs:
            if n in defined and n not in wanted:
                wanted |= defined
                queue.extend(used - wanted)
    chosen = [d for d in defs if d[0] & wanted]
    used = set().union(*(d[1] for d in chosen))
    head: dict[str | None, list[str]] = {}
    for bound, (module, real) in imports.items():
        if bound in used:
            head.setdefault(module, []).append(real if bound == real else f"{real} as {bound}")
    ordered = sorted((n, f"import {n}") for n in head.pop(None, []))
    ordered += sorted((m, f"from {m} import {', '.join(sorted(ns))}") for m, ns in head.items())
    stdlib = [line for root, line in ordered if root.split(".")[0] != "torch"]
    torch = [line for root, line in ordered if root.split(".")[0] == "torch"]
    return "\n".join([*stdlib, "", *torch]) + "\n\n\n" + "\n\n\n".join(src for _d, _u, src in chosen) + "\n"


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]  # type: ignore[attr-defined]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _segment(lines: list[str], node: ast.stmt) -> str:
    """A definition's lines with its decorators and the `#:` comment lines right above it."""
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
    while start > 0 and lines[start - 1].startswith("#:"):
        start -= 1
    return "\n".join(lines[start:node.end_lineno])
