"""Search progress bar: trials done of total, feasible share, best so far, ETA (rich)."""

from __future__ import annotations

import sys
from typing import Any


def describe_best(best: dict[str, float]) -> str:
    parts = []
    for name, v in best.items():
        if name == "accuracy":
            parts.append(f"acc {v:.3f}")
        elif name == "mmacs":
            parts.append(f"{v:.1f} MMACs")
        elif name == "latency_ms":
            parts.append(f"{v:.2f} ms")
        elif name == "params":
            parts.append(f"{v:.3f} Mparams")  # the objective is in millions already
        else:
            parts.append(f"{name} {v:.4g}")
    return ", ".join(parts) or "-"


class SearchProgress:
    """Context manager; `update(summary)` with an optuna_backend.Summary. Silent when disabled
    or when stderr is not a terminal (logs carry one line per trial instead)."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> SearchProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("search", total=self.total, info="")
        return self

    def update(self, summary: Any) -> None:
        if self._progress is None:
            return
        from nas.optuna_backend import eta_text

        share = "-" if summary.feasible_share is None else f"{summary.feasible_share:.0%}"
        info = (f"fit {share} | best {describe_best(summary.best)} | "
                f"ETA {eta_text(summary.eta_s)} | failed {summary.counts.get('FAIL', 0)}")
        self._progress.update(self._task, completed=min(summary.done, self.total), info=info)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
