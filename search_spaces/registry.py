"""Family name -> family module: the one place `nas/` and `objectives/` look families up.

A family is one module (see `shufflenet_v1.py`) defining `Arch`, `build_model`,
`PRESETS` and `preset`, `Space`, `macs_breakdown`, `analytic_params`, `summary`,
`blocks` and `block_module`. `search_spaces/__init__.py` registers each by name;
a duplicate name raises instead of silently overwriting.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

#: the attributes a family module must define
FAMILY_API = ("Arch", "build_model", "PRESETS", "preset", "Space", "macs_breakdown", "analytic_params",
              "summary", "blocks", "block_module")
#: the family of experiment files and arch JSON that name none (the project's first)
DEFAULT_FAMILY = "shufflenet_v1"

_FAMILIES: dict[str, ModuleType] = {}


def register_family(module: ModuleType) -> ModuleType:
    missing = [a for a in FAMILY_API if not hasattr(module, a)]
    if missing:
        raise TypeError(f"family module {module.__name__} lacks {missing}")
    name = module.Arch.FAMILY
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} is already registered")
    for other in _FAMILIES.values():
        clash = set(other.PRESETS) & set(module.PRESETS)
        if clash:
            raise ValueError(f"family {name!r}: preset names {sorted(clash)} are already taken")
    _FAMILIES[name] = module
    return module


def get_family(name: str) -> ModuleType:
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def family_of(arch: Any) -> ModuleType:
    """The module of an architecture's family (dispatch on its `family` field)."""
    return get_family(getattr(arch, "family", None) or type(arch).__name__)


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def family_of_preset(name: str) -> ModuleType | None:
    for fam in _FAMILIES.values():
        if name in fam.PRESETS:
            return fam
    return None


def get_space(name: str, **bounds: Any) -> Any:
    """A family's search space with these bounds (`name` is the family)."""
    return get_family(name).Space(**bounds)


def list_spaces() -> list[str]:
    return list_families()



def standalone_source(name: str) -> str:
    """`core.py`, `shuffle.py` and the family's module as one torch + stdlib source.

    The package-relative imports are dropped (their names are defined above them in the
    result) and the `__future__` import is left to the caller, which must put it first.
    This is how an export ships the very code the search built, not a second copy.
    """
    import inspect
    import re
    import sys

    from . import core, shuffle

    family = sys.modules[get_family(name).__name__]
    relative = re.compile(r"^from \.\w* import (\([^)]*\)|[^\n]*)\n", re.M)
    future = re.compile(r"^from __future__ import annotations\n", re.M)
    chunks = []
    for mod in (core, shuffle, family):
        src = future.sub("", relative.sub("", inspect.getsource(mod)))
        chunks.append(f"# {'-' * 70} {mod.__name__}\n\n{src.strip()}\n")
    return "\n\n".join(chunks)
