"""Search progress bar: trials done of total, feasible share, best so far, ETA (rich)."""

from __future__ import annotations

import sys
from typing import Any


def describe_value(name: str, v: float) -> str:
    """One objective value with its unit ("acc 0.896", "5.8 MMACs", "0.84 ms")."""
    if name == "accuracy":
        return f"acc {v:.3f}"
    if name == "mmacs":
        return f"{v:.1f} MMACs"
    if name == "latency_ms":
        return f"{v:.2f} ms"
    if name == "params":
        return f"{v:.2f} M params"  # the objective is already in millions
    return f"{name} {v:.4g}"


def describe_best(best: dict[str, float], trials: dict[str, int] | None = None) -> str:
    """Each objective's best value, with the trial it comes from: separate trials, not one network."""
    parts = [describe_value(name, v) + (f" (trial {trials[name]})" if trials and name in trials else "")
             for name, v in best.items()]
    return ", ".join(parts) or "-"


class SearchProgress:
    """Context manager; `update(summary)` with a nas.analysis.summary.Summary. Silent when disabled
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

    def update(self, summary: Any, rungs: dict[int, int] | None = None) -> None:
        """`rungs` ({rung: trials that finished it}) for a multi-fidelity search."""
        if self._progress is None:
            return
        from nas.analysis.summary import eta_text

        share = "-" if summary.feasible_share is None else f"{summary.feasible_share:.0%}"
        info = (f"fit {share} | best of each {describe_best(summary.best)} | "
                f"ETA {eta_text(summary.eta_s)} | failed {summary.counts.get('FAIL', 0)}")
        if rungs:
            info += " | per rung " + "/".join(str(n) for n in rungs.values())
        self._progress.update(self._task, completed=min(summary.done, self.total), info=info)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
