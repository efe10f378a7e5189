"""`shufflenas pareto`: the Pareto set of a study as a table, CSV, JSON and plots."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pareto",
        help="show the Pareto front of a study (table, CSV, PNG/HTML plots, hypervolume)",
        description=(
            "Pareto set of a study's COMPLETE trials (paper presets evaluated for comparison are shown, "
            "not part of the front), its hypervolume and its knee. Hypervolume reference point: accuracy 0, "
            "the budget for MMACs/latency, else the worst value plus 10% of the range. latency_ms is the "
            "end-of-search re-measured value where the front was measured again (the first value is shown beside "
            "it, and in --json as latency_first_ms / latency_change); trials whose speed probe moved are counted as "
            "flagged."
        ),
    )
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/STUDY/study.db)")
    p.add_argument("--objectives", default=None, help="comma-separated subset, e.g. accuracy,mmacs (default: all)")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the Pareto set as CSV")
    p.add_argument("--all-csv", default=None, metavar="FILE", help="write every trial as CSV")
    p.add_argument("--plot", action="append", default=[], metavar="FILE",
                   help="Pareto plot, .png or .html (2 or 3 objectives: a PNG shows one panel per pair, the HTML "
                        "a rotatable 3-D view); repeat for several files")
    p.add_argument("--hv-plot", action="append", default=[], metavar="FILE",
                   help="hypervolume-over-trials plot, .png or .html; repeatable")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--wide", action="store_true",
                   help="every column (channels, stem, family, latency source and re-measure, arch id); the default "
                        "table fits the terminal")
    p.add_argument("--rung", type=int, default=None, metavar="N",
                   help="multi-fidelity studies: the front of the trials that finished rung N, at rung N "
                        "(default: the highest rung a search trial reached; rungs are never mixed in one front)")
    p.set_defaults(func=run)


#: architecture columns (each family fills its own; the table shows those the front has)
_ARCH_COLUMNS = ("groups", "cardinality", "base_width", "channels", "repeats", "shuffle", "kernel")
_COLUMNS = (*_ARCH_COLUMNS, "stem", "family", "latency_backend", "arch_id")
#: drift-aware latency (nas.timing): where the value came from, its probe, and the re-measure
_LATENCY_COLUMNS = ("latency_source", "latency_raw_ms", "latency_probe", "latency_flagged", "latency_remeasured",
                    "latency_first_ms", "latency_change")


def run(args: argparse.Namespace) -> int:
    from nas.analysis.frame import trials_frame
    from nas.analysis.front import pareto_info
    from nas.cli.args import UserError
    from nas.schedulers.rungs import at_rung, rung_label
    from nas.storage import open_study

    study = open_study(args.study, args.storage)
    df = at_rung(trials_frame(study), study, args.rung)
    objectives = None
    if args.objectives is not None:
        objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
        if not objectives:
            raise UserError(f"argument --objectives: expected names such as accuracy,mmacs, got {args.objectives!r}")
    try:
        info = pareto_info(df, objectives)
    except ValueError as e:
        raise UserError(f"argument --objectives: {e}") from None
    written: list[str] = []
    try:
        from nas.visualization.plots import plot_hypervolume, plot_pareto

        written += [str(plot_pareto(info, f)) for f in args.plot]
        written += [str(plot_hypervolume(info, f)) for f in args.hv_plot]
    except ValueError as e:
        raise UserError(str(e)) from None
    for flag, frame in ((args.csv, info.front), (args.all_csv, info.trials)):
        if flag:
            try:
                out = frame.copy()
                if flag is args.csv:
                    out.insert(1, "knee", out["number"] == info.knee)
                out.to_csv(flag, index=False)
            except OSError as e:
                raise UserError(f"cannot write {flag} ({e.__class__.__name__}: {e})") from None
            written.append(flag)
    fidelity = study.user_attrs.get("fidelity")
    from nas.timing.remeasure import flag_counts

    flags = flag_counts(study)
    if args.json:
        import json

        print(json.dumps({**_as_json(info, written), "fidelity": fidelity, "rung": df.attrs.get("rung"),
                          "latency_drift": flags}, indent=2, default=str))
        return 0
    _print(info, written, wide=args.wide)
    line = drift_line(flags, study.user_attrs.get("experiment"))
    if line:
        print(line)
    if rung_label(df):
        print(rung_label(df, (study.user_attrs.get("experiment") or {}).get("train", {}).get("epochs")))
    from nas.analysis.fidelity_run import describe_summary

    line = describe_summary(fidelity)
    if line:
        print(line)
    return 0


def _row_json(row, info) -> dict:  # noqa: ANN001
    import math

    out = {"number": int(row["number"])}  # latency_ms: the re-measured value when there is one
    for c in (*info.objectives, *_COLUMNS, *_LATENCY_COLUMNS, "reference_preset", "arch"):
        v = row.get(c)
        if isinstance(v, float) and math.isnan(v):
            v = None
        out[c] = v
    return out


def _as_json(info, written: list[str]) -> dict:  # noqa: ANN001
    return {
        "study": info.study,
        "objectives": info.objectives,
        "directions": info.directions,
        "units": info.units,
        "budget": info.budget,
        "n_trials": len(info.trials),
        "n_complete": len(info.feasible),
        "front": [_row_json(r, info) for _, r in info.front.iterrows()],
        "references": [_row_json(r, info) for _, r in info.references.iterrows()],
        "knee": info.knee,
        "hypervolume": info.hypervolume,
        "reference_point": info.ref_point,
        "hypervolume_history": [{"number": n, "hypervolume": h} for n, h in info.checkpoints(10)],
        "written": written,
    }


def _fmt(v, name: str) -> str:  # noqa: ANN001
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name == "accuracy":
        return f"{v:.4f}"
    if name == "width" and isinstance(v, (int, float)):
        return f"{v:g}"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


#: short headers, so a front of three objectives and its architecture fits 80 columns
_SHORT = {"accuracy": "acc", "latency_ms": "ms", "mmacs": "MMACs", "params": "Mparams"}
#: shown by default when the front has them (groups and repeats always, the others only where they differ)
_NARROW = ("width", "groups", "repeats", "cardinality", "base_width", "kernel", "shuffle")


def _varies(frame, c: str) -> bool:  # noqa: ANN001 - DataFrame
    vals = {str(v) for v in frame[c] if v is not None and str(v) != "nan"} if c in frame.columns else set()
    return len(vals) > 1 or (c in ("groups", "repeats", "cardinality") and bool(vals))


def _print(info, written: list[str], wide: bool = False) -> None:  # noqa: ANN001
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    # a terminal's own width; a pipe or file gets 80 columns (--wide: every column, unwrapped)
    probe = Console()
    con = Console(width=probe.width if probe.is_terminal else (240 if wide else 80))
    both = pd.concat([info.front, info.references]) if len(info.references) else info.front
    t = Table(title=f"Pareto set of study {info.study} ({len(info.front)} of {len(info.feasible)} complete trials)",
              pad_edge=False, collapse_padding=True)
    names = [str(r) for r in info.references["reference_preset"]] if len(info.references) else []
    t.add_column("trial", justify="right", no_wrap=True, min_width=max([5, *(len(n) for n in names)]))
    for o, d in zip(info.objectives, info.directions, strict=False):
        head = o if wide else _SHORT.get(o, o)
        unit = info.units.get(o, "")
        if wide and unit:
            head = f"{o} ({unit})"
        t.add_column(f"{head} {'↑' if d == 'maximize' else '↓'}", justify="right", no_wrap=True)
    cols = [c for c in (*_NARROW, "channels", "stem", "family", "latency_backend", "arch_id") if c in both.columns
            and both[c].notna().any()] if wide else [c for c in _NARROW if _varies(both, c)]
    for c in cols:
        t.add_column(c, no_wrap=not wide)
    lat = _latency_columns(info.front, wide)
    for c in lat:
        t.add_column(_LATENCY_HEADERS[c], justify="right", no_wrap=True, min_width=len(_LATENCY_HEADERS[c]))
    for _, r in info.front.iterrows():
        knee = r["number"] == info.knee
        t.add_row(
            f"{r['number']}{' knee' if knee else ''}",
            *[_fmt(r[o], o) for o in info.objectives],
            *[_fmt(r.get(c), c) for c in cols],
            *[_latency_cell(r, c, wide) for c in lat],
            style="bold" if knee else None,
        )
    for _, r in info.references.iterrows():
        t.add_row(
            f"[dim]{r['reference_preset']}[/]",
            *[f"[dim]{_fmt(r[o], o)}[/]" for o in info.objectives],
            *[f"[dim]{_fmt(r.get(c), c)}[/]" for c in cols],
            *[f"[dim]{_latency_cell(r, c, wide)}[/]" for c in lat],
        )
    con.print(t)
    if info.front.empty:
        con.print(f"no COMPLETE trials yet ({len(info.trials)} trials in the study)")
    if info.budget:
        con.print("budget: " + ", ".join(f"{k}={v:g}" for k, v in info.budget.items()))
    ref = ", ".join(f"{o}={v:g}" for o, v in zip(info.objectives, info.ref_point, strict=False))
    con.print(f"hypervolume: [bold]{info.hypervolume:.6g}[/] (reference point {ref})")
    cps = info.checkpoints(5)
    if cps:
        con.print("hypervolume history: " + "  ".join(f"#{n}: {h:.4g}" for n, h in cps))
    if info.knee is not None:
        con.print(f"knee: trial {info.knee} (closest to the ideal point after scaling the front to [0, 1])")
    if not wide:
        con.print("[dim]--wide: every column (channels, stem, latency source and re-measure, arch id)[/]")
    for w in written:
        con.print(f"wrote {w}")


_LATENCY_HEADERS = {"latency_source": "measured by", "latency_change": "1st ms"}


def _latency_columns(front, wide: bool = False) -> list[str]:  # noqa: ANN001 - DataFrame
    """With --wide, where the value came from (measured / predicted / cached, flagged; the drift line under
    the table counts flagged trials); the first value once the front was re-measured (--wide: and how far
    the re-measure moved it)."""
    cols = []
    src = front["latency_source"] if "latency_source" in front.columns else None
    if src is not None and src.notna().any() and wide:
        cols.append("latency_source")
    if "latency_remeasured" in front.columns and front["latency_remeasured"].fillna(False).astype(bool).any():
        cols.append("latency_change")
    return cols


def _latency_cell(r, c: str, wide: bool = True) -> str:  # noqa: ANN001 - a frame row
    import math

    if c == "latency_source":
        v = r.get("latency_source")
        if not isinstance(v, str):
            return "-"
        return f"{v} FLAGGED" if r.get("latency_flagged") is True else v
    v, first = r.get("latency_change"), r.get("latency_first_ms")
    if not isinstance(v, float) or math.isnan(v):
        return "-"
    return f"{first:.3f} ({v:+.1%})" if wide else f"{first:.3f}"


def drift_line(flags: dict[str, int], experiment: dict | None) -> str:
    """One line on the study's latency drift: trials flagged, trials re-measured (empty without probes)."""
    if not flags.get("probed") and not flags.get("remeasured"):
        return ""
    thr = ((experiment or {}).get("latency") or {}).get("drift", {}).get("flag_threshold", 0.05)
    return (f"latency drift: {flags['flagged']} of {flags['probed']} measured trials flagged (speed probe moved more "
            f"than {thr:.0%} from the study's baseline); {flags['remeasured']} trial(s) re-measured at the end "
            "in one window (latency_ms is the re-measured value)")
