"""Where an experiment's supernet lives, whether it is trained, and the one loaded copy per process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.experiment import Experiment

_LOADED: dict[tuple[str, int], tuple[Any, str]] = {}


def supernet_checkpoint(exp: Experiment) -> tuple[Path, str]:
    """Where `shufflenas supernet train` keeps the experiment's supernet, and its key (space, data, recipe)."""
    from objectives.oneshot import checkpoint_path, supernet_key

    space = exp.build_space()
    key = supernet_key(space, exp.data.model_dump(mode="json"), exp.oneshot_recipe.to_config())
    return checkpoint_path(exp.run_dir / "supernet", space, key), key


def require_supernet(exp: Experiment, source: str = "EXPERIMENT.yaml") -> None:
    """A one-shot study refuses to start (UserError, one line) until its supernet is trained."""
    if "oneshot_accuracy" not in exp.objectives:
        return
    from nas.errors import UserError
    from objectives.oneshot import read_meta

    path, _key = supernet_checkpoint(exp)
    meta = read_meta(path) if path.exists() else {}
    if meta.get("step") is None or meta.get("step") != meta.get("steps"):
        state = "none" if not meta else f"only {meta.get('step')} of {meta.get('steps')} steps"
        raise UserError(f"objective oneshot_accuracy needs a trained supernet ({state} at {path}): "
                        f"run `shufflenas supernet train {source}` first")


def trained_supernet(exp: Experiment, data: Any) -> tuple[Any, Path, str]:
    """(supernet, checkpoint, key), loaded once per process on `data`'s device (again only if the file changed)."""
    from objectives.oneshot import load_supernet

    path, key = supernet_checkpoint(exp)
    if not path.exists():
        raise RuntimeError(f"no trained supernet at {path}: run `shufflenas supernet train` for this experiment")
    cache = (str(path), path.stat().st_mtime_ns)
    if cache not in _LOADED:
        _LOADED.clear()
        device = data.train.tensors[0].device
        _LOADED[cache] = (load_supernet(path, exp.build_space(), data, key, device), key)
    net, key = _LOADED[cache]
    return net, path, key
