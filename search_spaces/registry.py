"""Name -> search space factory. A new space is a new file that registers itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_SPACES: dict[str, Callable[..., Any]] = {}


def register_space(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator; a duplicate name raises instead of silently overwriting."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _SPACES:
            raise ValueError(f"search space {name!r} is already registered")
        _SPACES[name] = factory
        return factory

    return deco


def get_space(name: str, **bounds: Any) -> Any:
    if name not in _SPACES:
        raise ValueError(f"unknown search space {name!r}; known: {sorted(_SPACES)}")
    return _SPACES[name](**bounds)


def list_spaces() -> list[str]:
    return sorted(_SPACES)
