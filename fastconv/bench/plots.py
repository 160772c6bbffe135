"""The plot of a report: throughput against stride, padding and dilation per runner (a row per op), the
ratio to the best peer beneath, and the ratio per standard layer when the run has layers.

Every point carries its spread: throughput error bars span the rates at the row's first and third timing
quartiles (``spec work / q3_s`` to ``/ q1_s``), ratio error bars its ``ratio_iqr``. Throughput axes start at
zero; ratios are on a log scale with a line at 1x. A panel with nothing to draw says why (no peer in the
run and the peers' reasons, nothing timed, no such sweep) instead of staying blank.

:func:`figure` builds the matplotlib Figure without saving it (no pyplot, no global state); :func:`plot`
writes it as a PNG.
"""
from __future__ import annotations

import io
import textwrap
from typing import List, Optional, Tuple

from .. import _files
from .cases import CONV_OPS, table_of
from .report import missing_peer

#: the sweeps the plot draws, in this order
PLOT_SWEEPS = ("stride", "padding", "dilation")

_NOTE = dict(ha="center", va="center", fontsize=9, color="dimgray")


def _order(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _log_ratio_axis(ax) -> None:
    """Log scale with plain tick labels (0.2, 0.5, 1, 2, ...) and a line at 1x, spanning at least 0.5x to
    2x so that ratios near 1 are not blown up into noise (call it once the data are drawn)."""
    from matplotlib import ticker
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, 0.5), max(hi, 2.0))
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.axhline(1.0, color="gray", linewidth=0.8)


def _note(ax, text: str, width: int = 48) -> None:
    """Say in the panel why it has nothing to draw (the panel keeps its frame, loses its ticks)."""
    ax.text(0.5, 0.5, textwrap.fill(text, width), transform=ax.transAxes, **_NOTE)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_op(case: dict) -> str:
    """The plot row of a JSON case record: its op, and for a gradient the spec's op too."""
    if case.get("direction", "forward") == "forward":
        return case["op"]
    return f"{case['op']} {case['spec_op']}"


def throughput_spread(row: dict) -> Tuple[float, float]:
    """(below, above) the row's throughput: the rates at its third and first timing quartiles (the work is
    fixed, so rate = throughput * median / time); (0, 0) for a row without quartiles."""
    tp, med, q1, q3 = row["throughput"], row.get("median_s"), row.get("q1_s"), row.get("q3_s")
    if not (med and q1 and q3):
        return 0.0, 0.0
    return max(0.0, tp - tp * med / q3), max(0.0, tp * med / q1 - tp)


def ratio_spread(row: dict) -> Tuple[float, float]:
    """(below, above) the row's ratio to the best peer: its ``ratio_iqr``; (0, 0) without one."""
    r, iqr = row["ratio_to_best_peer"], row.get("ratio_iqr")
    if not iqr or iqr[0] is None or iqr[1] is None:
        return 0.0, 0.0
    return max(0.0, r - iqr[0]), max(0.0, iqr[1] - r)


def _errorbar(ax, pts: List[tuple], **style) -> None:
    """``pts``: (x, y, (below, above)); a line with error bars."""
    xs, ys, err = zip(*pts)
    ax.errorbar(xs, ys, yerr=[[e[0] for e in err], [e[1] for e in err]], capsize=3, **style)


def figure(report: dict):
    """The Figure of ``report`` (matplotlib.figure.Figure, not saved) and None, or (None, why no plot can be
    drawn: matplotlib missing, nothing to draw)."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        return None, f"matplotlib is not installed ({e}); pip install matplotlib (or fastconv[bench])"
    ok = [r for r in report["results"] if r["status"] == "ok"]
    ops = []                          # a row per op and direction: "conv2d", "conv2d conv_input", ...
    for c in report["cases"]:
        if any(s in c["sweeps"] for s in PLOT_SWEEPS) and _plot_op(c) not in ops:
            ops.append(_plot_op(c))
    layers = [c["name"] for c in report["cases"] if table_of(c["source"])]     # layers, tiny calls, networks
    if not ops and not layers:
        return None, "no sweep or layer cases to plot"
    no_peer = missing_peer(report)
    nrows = 2 * len(ops) + (1 if layers else 0)
    fig = Figure(figsize=(15, 3.0 * nrows + 0.8))
    grid = fig.add_gridspec(nrows, len(PLOT_SWEEPS))
    labels = sorted({(r["kind"] != "fastconv", f"{r['backend']}:{r['algo']}") for r in ok})
    tab10 = matplotlib.colormaps["tab10"]
    colors = {lab: tab10(i % 10) for i, (_, lab) in enumerate(labels)}
    for oi, op in enumerate(ops):
        unit = "GFLOP/s" if op.split()[0] in CONV_OPS else "GB/s"
        legend_done = False
        for si, sweep in enumerate(PLOT_SWEEPS):
            ax_t = fig.add_subplot(grid[2 * oi, si])
            ax_r = fig.add_subplot(grid[2 * oi + 1, si])
            on = [c for c in report["cases"] if _plot_op(c) == op and sweep in c["sweeps"]]
            xs = sorted({c["sweeps"][sweep] for c in on}, key=_order)
            ax_t.set_title(f"{op}: {sweep}", fontsize=10)
            if not xs:
                _note(ax_t, f"no {sweep} sweep in this run")
                _note(ax_r, f"no {sweep} sweep in this run")
                continue
            names = {c["name"] for c in on}
            drawn_t = drawn_r = False
            for li, (peer, lab) in enumerate(labels):
                dodge = 0.05 * (li - (len(labels) - 1) / 2)      # runners side by side, their bars apart
                pts_t, pts_r = [], []
                for xi, x in enumerate(xs):
                    case = next(c["name"] for c in on if c["sweeps"][sweep] == x)
                    row = next((r for r in ok if r["case"] == case and f"{r['backend']}:{r['algo']}" == lab),
                               None)
                    if row:
                        pts_t.append((xi + dodge, row["throughput"], throughput_spread(row)))
                        if not peer and row.get("ratio_to_best_peer"):
                            pts_r.append((xi + dodge, row["ratio_to_best_peer"], ratio_spread(row)))
                style = dict(color=colors[lab], marker="o", linestyle="--" if peer else "-", label=lab)
                if pts_t:
                    _errorbar(ax_t, pts_t, **style)
                    drawn_t = True
                if pts_r:
                    _errorbar(ax_r, pts_r, **style)
                    drawn_r = True
            ax_r.set_xlabel(sweep)
            ax_r.set_ylabel("vs best peer (x, log)")
            if not drawn_t:
                states = sorted({r["status"] for r in report["results"] if r["case"] in names})
                nothing = "nothing timed" + (f" ({', '.join(states)})" if states else "")
                _note(ax_t, nothing)
                _note(ax_r, nothing)
            else:
                ax_t.set_ylim(bottom=0)
                ax_t.set_ylabel(unit)
            if drawn_r:
                _log_ratio_axis(ax_r)
            elif drawn_t:
                _note(ax_r, f"no peer: {no_peer}" if no_peer else
                      "no ratio: no fastconv runner and peer were both timed on these cases")
            for ax, drawn in ((ax_t, drawn_t), (ax_r, drawn_r)):
                if drawn:
                    ax.set_xticks(range(len(xs)))
                    ax.set_xticklabels(xs)
                    ax.set_xlim(-0.5, len(xs) - 0.5)
                    ax.grid(alpha=0.3)
            if not legend_done and ax_t.get_legend_handles_labels()[0]:
                ax_t.legend(fontsize=7)
                legend_done = True
    if layers:
        ax = fig.add_subplot(grid[nrows - 1, :])
        ax.set_title("standard layers, tiny calls and networks: speed relative to the best peer (> 1: faster)",
                     fontsize=10)
        fc = sorted({f"{r['backend']}:{r['algo']}" for r in ok if r["kind"] == "fastconv"})
        width = 0.8 / max(1, len(fc))
        drawn = False
        for j, lab in enumerate(fc):
            pts = []
            for i, name in enumerate(layers):
                row = next((r for r in ok if r["case"] == name and f"{r['backend']}:{r['algo']}" == lab), None)
                if row and row.get("ratio_to_best_peer"):
                    pts.append((i + j * width, row["ratio_to_best_peer"], ratio_spread(row)))
            if pts:
                xs_b, ys, err = zip(*pts)
                ax.bar(xs_b, ys, width, yerr=[[e[0] for e in err], [e[1] for e in err]], capsize=2,
                       error_kw=dict(elinewidth=0.8), label=lab, color=colors.get(lab))
                drawn = True
        if drawn:
            _log_ratio_axis(ax)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
            ax.set_xticklabels([n.split("/", 1)[-1] for n in layers], rotation=70, fontsize=7)
            ax.set_ylabel("vs best peer (x, log)")
            ax.legend(fontsize=7)
        else:
            _note(ax, f"no peer: {no_peer}" if no_peer else
                  "no ratio: no fastconv runner and peer were both timed on these layers", width=150)
    m = report["machine"]
    dev = m["gpu"]["name"] if m.get("gpu") else f"{m['cpu_model']} ({m['cpu_cores_usable']} cores)"
    fig.suptitle(f"fastconv bench: suite {report['settings']['suite']} on {dev}, {m['date']}; error bars: "
                 "interquartile range of the timed calls", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig, None


def plot(report: dict, path: str) -> Optional[str]:
    """Draw :func:`figure` into the PNG ``path``. Returns None, or why no plot was drawn (matplotlib
    missing, nothing to draw)."""
    fig, why = figure(report)
    if fig is None:
        return why
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    _files.atomic_write(path, png.getvalue())
    return None
