"""Draw a `ParetoInfo`: Pareto plots (PNG via matplotlib: one 2-D panel per pair of objectives;
HTML via plotly: 2-D, or a rotatable 3-D view for three objectives) and
the hypervolume-over-trials curve. Nothing here computes a front or a volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.analysis.front import ParetoInfo

#: budget key that bounds each objective (drawn as a dashed line)
BUDGET_KEYS: dict[str, str] = {"mmacs": "max_mmacs", "latency_ms": "max_latency_ms"}


def _label(preset: str) -> str:
    """A reference preset's name without its family prefix (g3_x0_5), short enough for a plot."""
    from search_spaces import family_of_preset

    fam = family_of_preset(preset)
    prefix = f"{fam.Arch.FAMILY}_" if fam is not None else ""
    return preset.removeprefix(prefix)


def axis_label(info: ParetoInfo, name: str) -> str:
    unit = info.units.get(name, "")
    arrow = "↑" if info.directions[info.objectives.index(name)] == "maximize" else "↓"
    base = {"accuracy": "top-1 accuracy", "mmacs": "MMACs", "latency_ms": "latency (ms)"}.get(name, name)
    if unit and unit not in base and unit != "top-1":
        base = f"{base} ({unit})"
    return f"{base} {arrow}"


def _title(info: ParetoInfo) -> str:
    return f"study {info.study}: {len(info.front)} Pareto / {len(info.feasible)} complete trials, HV {info.hypervolume:.4g}"


def plot_pareto(info: ParetoInfo, path: str | Path) -> Path:
    """PNG or HTML by suffix; 2 or 3 objectives."""
    path = Path(path)
    n = len(info.objectives)
    if n not in (2, 3):
        raise ValueError(f"--plot draws 2 or 3 objectives, got {n} ({', '.join(info.objectives)}); pass --objectives")
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html"):
        raise ValueError(f"--plot {path}: the file must end in .png or .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        _png2d(info, path)  # 3 objectives: one 2-D panel per pair (the 3-D view is in the HTML)
    else:
        _html(info, path)
    return path


def _names(df) -> list[str]:  # noqa: ANN001 - DataFrame
    return [str(v) for v in df["reference_preset"]] if "reference_preset" in df.columns else []


def _png2d(info: ParetoInfo, path: Path) -> None:
    """One panel per pair of objectives (1 for 2 objectives, 3 for 3): every pair is readable."""
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(itertools.combinations(info.objectives, 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(8 if len(pairs) == 1 else 5.2 * len(pairs), 5.5), dpi=110,
                             squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        _panel(ax, info, x, y, steps=len(info.objectives) == 2)
    handles, names = axes[0][0].get_legend_handles_labels()
    if len(pairs) == 1:
        axes[0][0].legend(fontsize=8, loc="best")
        axes[0][0].set_title(_title(info), fontsize=10)
    else:  # one legend for all panels (budget lines differ per panel: each panel labels its own)
        fig.legend(handles, names, fontsize=8, loc="lower center", ncol=min(len(names), 5))
        fig.suptitle(_title(info) + "\nPareto front of all three objectives, seen pair by pair", fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if len(pairs) > 1 else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _panel(ax, info: ParetoInfo, x: str, y: str, *, steps: bool) -> None:  # noqa: ANN001 - matplotlib Axes
    """Trials (grey), the front (blue; a staircase for 2 objectives, points when it is the projection of
    a 3-objective front), knee (red ring), paper presets (orange stars) and budget lines."""
    ax.scatter(info.feasible[x], info.feasible[y], s=14, c="#b0b0b0", label="trials", zorder=1)
    f = info.front.sort_values(x)
    if steps:
        ax.plot(f[x], f[y], "-o", c="#1f77b4", ms=5, lw=1.2, label="Pareto front", zorder=3, drawstyle="steps-post")
    else:
        ax.scatter(f[x], f[y], s=30, c="#1f77b4", label="Pareto front (3 objectives)", zorder=3)
    if info.knee is not None:
        k = info.front[info.front["number"] == info.knee].iloc[0]
        ax.scatter([k[x]], [k[y]], s=160, facecolors="none", edgecolors="#d62728", lw=2, zorder=4,
                   label=f"knee (trial {info.knee})")
    r = info.references
    if len(r):
        ax.scatter(r[x], r[y], marker="*", s=120, c="#ff7f0e", zorder=5, label="paper presets")
        for name, xv, yv in zip(_names(r), r[x], r[y], strict=False):
            ax.annotate(_label(name), (xv, yv), textcoords="offset points", xytext=(5, 4),
                        fontsize=8, color="#a04000")
    for obj, line in ((x, ax.axvline), (y, ax.axhline)):
        key = BUDGET_KEYS.get(obj)
        if key and key in info.budget:
            line(info.budget[key], ls="--", c="#2ca02c", lw=1.2, label=f"budget {key}={info.budget[key]:g}")
    ax.set_xlabel(axis_label(info, x))
    ax.set_ylabel(axis_label(info, y))
    ax.grid(alpha=0.3)


def _hover(df, info: ParetoInfo) -> list[str]:  # noqa: ANN001 - DataFrame
    out = []
    for _, row in df.iterrows():
        parts = [f"trial {row['number']}"]
        if isinstance(row.get("reference_preset"), str):
            parts.append(row["reference_preset"])
        parts += [f"{o}={row[o]:.4g} {info.units.get(o, '')}".rstrip() for o in info.objectives]
        for col in ("groups", "channels", "repeats", "shuffle", "kernel"):
            if col in row and isinstance(row[col], str):
                parts.append(f"{col}={row[col]}")
        out.append("<br>".join(parts))
    return out


def _html(info: ParetoInfo, path: Path) -> None:
    import plotly.graph_objects as go

    objs = info.objectives
    three = len(objs) == 3
    Scatter = go.Scatter3d if three else go.Scatter

    def trace(df, name: str, **kw) -> go.BaseTraceType:  # noqa: ANN001
        coords = dict(zip("xyz", (df[o] for o in objs), strict=False))
        return Scatter(**coords, name=name, text=_hover(df, info), hoverinfo="text", **kw)

    fig = go.Figure()
    fig.add_trace(trace(info.feasible, "trials", mode="markers", marker=dict(color="#b0b0b0", size=5)))
    f = info.front.sort_values(objs[0])
    fig.add_trace(trace(f, "Pareto front", mode="markers" if three else "lines+markers",
                        marker=dict(color="#1f77b4", size=7), **({} if three else {"line": dict(shape="hv")})))
    if info.knee is not None:
        k = info.front[info.front["number"] == info.knee]
        fig.add_trace(trace(k, f"knee (trial {info.knee})", mode="markers",
                            marker=dict(color="rgba(0,0,0,0)", size=16, line=dict(color="#d62728", width=3))))
    r = info.references
    if len(r):
        fig.add_trace(trace(r, "paper presets", mode="markers+text",
                            textposition="top center", marker=dict(color="#ff7f0e", size=10, symbol="diamond")))
        fig.data[-1].update(text=[_label(n) for n in _names(r)],
                            hovertext=_hover(r, info), hoverinfo="text")
    if not three:
        for obj, axis in zip(objs, ("x", "y"), strict=False):
            key = BUDGET_KEYS.get(obj)
            if key and key in info.budget:
                v = info.budget[key]
                if axis == "x":
                    fig.add_vline(x=v, line_dash="dash", line_color="#2ca02c", annotation_text=f"budget {key}={v:g}")
                else:
                    fig.add_hline(y=v, line_dash="dash", line_color="#2ca02c", annotation_text=f"budget {key}={v:g}")
        fig.update_layout(xaxis_title=axis_label(info, objs[0]), yaxis_title=axis_label(info, objs[1]))
    else:
        fig.update_layout(scene=dict(xaxis_title=axis_label(info, objs[0]), yaxis_title=axis_label(info, objs[1]),
                                     zaxis_title=axis_label(info, objs[2])))
    fig.update_layout(title=_title(info), template="plotly_white")
    # self-contained: viewers of a run on an air-gapped machine have no CDN
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def plot_hypervolume(info: ParetoInfo, path: str | Path) -> Path:
    """Hypervolume of the trials so far against the trial number (PNG or HTML)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html"):
        raise ValueError(f"--hv-plot {path}: the file must end in .png or .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    h = info.history
    ref = ", ".join(f"{o}={v:g}" for o, v in zip(info.objectives, info.ref_point, strict=False))
    title = f"study {info.study}: hypervolume over trials ({' vs '.join(info.objectives)})"
    if suffix == ".html":
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(x=h["number"], y=h["hypervolume"], mode="lines+markers", line=dict(shape="hv")))
        fig.update_layout(title=f"{title}<br><sub>reference point {ref}</sub>", xaxis_title="trial number",
                          yaxis_title="hypervolume", template="plotly_white")
        fig.write_html(str(path), include_plotlyjs=True, full_html=True)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.step(h["number"], h["hypervolume"], where="post", c="#1f77b4")
    ax.scatter(h["number"], h["hypervolume"], s=8, c="#1f77b4")
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{title}\nreference point {ref}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
