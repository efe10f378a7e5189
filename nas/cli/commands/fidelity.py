"""`shufflenas fidelity`: does the experiment's proxy rank architectures as real training does?"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity",
        help="train a reference set with an experiment's proxy and report how well it ranks them (Kendall tau)",
        description=(
            "Train (or, for an experiment that optimises naswot, score at initialisation; for oneshot_accuracy, score "
            "by its trained supernet's inherited weights) every architecture of a reference set "
            "(default: the bundled set trained stand-alone on the experiment's own data when there is one, e.g. "
            "41 networks of the quickstart space on Fashion-MNIST, 2 seeds each; else the family's paper table, "
            "e.g. the ShuffleNet v1 paper's Tables 2 and 3, 21 networks with their ImageNet top-1) with "
            "EXPERIMENT's own proxy -- its data and train sections, "
            "through the same evaluate path a search uses -- and report Kendall tau (bootstrap 95% interval), "
            "Spearman rho, the share of 'shuffle helps' pairs and of equal-MACs group pairs ordered as the "
            "reference orders them, beside the same figures for the free baselines (MACs, params, zero-cost "
            "scores) and, for a set trained with several seeds, the seed-vs-seed ceiling on the same networks. "
            "Results are cached per (arch, proxy recipe), so a rerun is free."
        ),
    )
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--reference", default=None, metavar="NAME|FILE",
                   help="bundled reference set name or a JSON file in the same format (default: the bundled "
                        "set trained on the experiment's data, e.g. FAMILY_fashion_mnist, else the family's "
                        "paper table FAMILY_imagenet); a set with per-seed figures adds its seed-vs-seed "
                        "ceiling row")
    p.add_argument("--against", default=None, metavar="LONG.yaml",
                   help="use a longer protocol's proxy accuracy on the same architectures as the reference")
    p.add_argument("--only", default=None, metavar="PREFIX[,PREFIX]",
                   help="entries whose id starts with one of these, e.g. table2/ or table2/g3_,table3/")
    p.add_argument("--plot", action="append", default=[], metavar="FILE",
                   help="proxy-vs-reference scatter, .png (matplotlib) or .html (plotly); repeatable")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="store the figures on this study (user attr 'fidelity'), shown by status and pareto")
    p.add_argument("--storage", default=None, help="storage URL of --study (default sqlite:///runs/NAME/study.db)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="result cache folder (default ~/.cache/shufflenas/fidelity or $SHUFFLENAS_DATA/../fidelity)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _select(ref: Any, only: str | None) -> Any:
    from nas.cli.args import UserError

    if not only:
        return ref
    prefixes = [s.strip() for s in only.split(",") if s.strip()]
    ids = [e.id for e in ref.entries if any(e.id.startswith(p) for p in prefixes)]
    if len(ids) < 2:
        raise UserError(f"argument --only: {only!r} selects {len(ids)} entr{'y' if len(ids) == 1 else 'ies'} of "
                        f"{ref.name}; need at least 2 (ids look like {ref.entries[0].id})")
    return ref.subset(ids)


def _check_plots(paths: list[str]) -> None:
    from nas.cli.args import UserError

    for p in paths:
        if Path(p).suffix.lower() not in (".png", ".html"):
            raise UserError(f"argument --plot: {p!r} must end in .png or .html")


def run(args: argparse.Namespace) -> int:
    from nas.analysis.fidelity_run import STUDY_ATTR, run_fidelity
    from nas.cli.args import UserError
    from nas.experiment import load_experiment
    from nas.pipeline.supernets import require_supernet
    from objectives.ranking import load_reference

    _check_plots(args.plot)
    exp = load_experiment(args.experiment)
    against = load_experiment(args.against) if args.against else None
    require_supernet(exp, str(args.experiment))  # a one-shot signal needs its trained supernet
    if against is not None:
        require_supernet(against, str(args.against))
    reference = args.reference or default_reference(exp)
    try:
        ref = load_reference(reference)
    except ValueError as e:
        raise UserError(f"argument --reference: {e}") from None
    ref = _select(ref, args.only)
    study = None
    if args.study:  # fail before hours of training, not after
        from nas.storage import open_study

        study = open_study(args.study, args.storage, read_only=False)
    cache = Path(args.cache).expanduser() if args.cache else None
    from objectives.data import DataError

    try:
        with _Bar(len(ref.entries) * (2 if against else 1), enabled=not args.json) as bar:
            result = run_fidelity(exp, ref, cache_dir=cache, progress=bar.update, against=against)
    except DataError as e:
        raise UserError(f"{args.experiment}: data: {e}") from None
    except OSError as e:  # the cache folder (the only thing written) is not writable
        raise UserError(f"--cache {cache or 'default'}: cannot write results ({e.__class__.__name__}: {e})") from None
    written = []
    for p in args.plot:
        try:
            written.append(str(plot_fidelity(result, p)))
        except OSError as e:
            raise UserError(f"argument --plot: cannot write {p} ({e.__class__.__name__}: {e})") from None
    if study is not None:
        study.set_user_attr(STUDY_ATTR, result.summary())
    if args.json:
        print(json.dumps({**result.to_dict(), "written": written}, indent=2, default=_nan_none))
        return 0
    _print(result, written, args.study)
    return 0


def default_reference(exp: Any) -> str:
    """The bundled set trained on the experiment's own data when there is one (FAMILY_fashion_mnist),
    else the family's paper table (FAMILY_imagenet)."""
    from objectives.data import ALIASES
    from objectives.ranking import bundled_references

    data = ALIASES.get(exp.data.name, exp.data.name).replace("-", "_")
    own = f"{exp.space['family']}_{data}"
    return own if own in bundled_references() else f"{exp.space['family']}_imagenet"


def _nan_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else str(v)


class _Bar:
    """Entries trained of total, with ETA (rich, on stderr; silent when not a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        import sys

        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self._p: Any = None
        self._done = 0
        self._last = -1

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(TextColumn("[bold]fidelity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                               console=Console(stderr=True))
            self._p.__enter__()
            self._task = self._p.add_task("fidelity", total=self.total, info="")
        return self

    def update(self, i: int, n: int, entry: str) -> None:
        if self._p is None:
            return
        if i < self._last:  # a second pass (--against) restarts at 0
            self._done += self._last
        self._last = i
        self._p.update(self._task, completed=min(self._done + i, self.total), info=entry)

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)


def _fmt(v: float, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _print(result: Any, written: list[str], study: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if Console().is_terminal else 140)
    ref = result.reference
    t = Table(title=f"proxy of {result.experiment} vs {ref.name} ({ref.metric}, {len(result.rows)} networks)")
    for c in ("signal", "Kendall tau", "95% interval", "Spearman rho", "shuffle helps", "equal-MACs groups"):
        t.add_column(c, justify="left" if c == "signal" else "right")
    for i, f in enumerate(result.figures):
        name = f.name
        t.add_row(name, _fmt(f.tau), f"[{_fmt(f.tau_low)}, {_fmt(f.tau_high)}]", _fmt(f.rho),
                  f"{f.shuffle_right}/{f.shuffle_pairs}" if f.shuffle_pairs else "-",
                  f"{f.group_right}/{f.group_pairs}" if f.group_pairs else "-", style="bold" if i == 0 else None)
    ceiling = ref.seed_ceiling()
    if ceiling is not None:  # the reference's own noise: no signal can be expected to rank better
        t.add_row(ceiling.name, _fmt(ceiling.tau), f"[{_fmt(ceiling.tau_low)}, {_fmt(ceiling.tau_high)}]",
                  _fmt(ceiling.rho), "-", f"{ceiling.group_right}/{ceiling.group_pairs}" if ceiling.group_pairs else "-",
                  style="italic")
    con.print(t)
    con.print(f"proxy CPU time {result.cpu_s / 60:.1f} min as measured ({result.cached} of {len(result.rows)} from the cache; "
              f"proxy hash {result.proxy_hash})")
    style = "green" if not result.beaten_by() else "bold red"
    con.print(f"[{style}]{result.verdict()}[/]")
    if study:
        con.print(f"stored on study {study} (user attr 'fidelity')")
    for w in written:
        con.print(f"wrote {w}")


def plot_fidelity(result: Any, path: str | Path) -> Path:
    """Proxy signal vs reference, one point per network (PNG via matplotlib, HTML via plotly)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    x = [r["reference"] for r in rows]
    y = [r["signal"] for r in rows]
    labels = [r["id"] for r in rows]
    p = result.proxy
    title = (f"{result.experiment}: proxy vs {result.reference.name}, Kendall tau {_fmt(p.tau)} "
             f"[{_fmt(p.tau_low)}, {_fmt(p.tau_high)}]")
    xl = result.reference.metric
    yl = "proxy top-1 (fraction)" if result.signal == "accuracy" else f"proxy signal: {result.signal}"
    if path.suffix.lower() == ".png":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
        colors = ["#1f77b4" if r["tags"].get("shuffle", True) else "#d62728" for r in rows]
        ax.scatter(x, y, c=colors, s=24)
        for xi, yi, lab in zip(x, y, labels, strict=True):
            ax.annotate(lab.split("/")[-1], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    else:
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(x=x, y=y, mode="markers+text", text=[lab.split("/")[-1] for lab in labels],
                                   textposition="top center", hovertext=labels))
        fig.update_layout(title=title, xaxis_title=xl, yaxis_title=yl)
        fig.write_html(str(path), include_plotlyjs=True)
    return path
