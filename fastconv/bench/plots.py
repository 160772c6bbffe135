"""The plot of a report: throughput against stride, padding and dilation per runner (a row per op), the
ratio to the best peer beneath, and the ratio per standard layer when the run has layers."""
from __future__ import annotations

import io
from typing import Optional

from .. import _files
from .cases import CONV_OPS

#: the sweeps the plot draws, in this order
PLOT_SWEEPS = ("stride", "padding", "dilation")


def _order(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _log_ratio_axis(ax) -> None:
    """Log scale with plain tick labels (0.2, 0.5, 1, 2, ...)."""
    from matplotlib import ticker
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _plot_op(case: dict) -> str:
    """The plot row of a JSON case record: its op, and for a gradient the spec's op too."""
    if case.get("direction", "forward") == "forward":
        return case["op"]
    return f"{case['op']} {case['spec_op']}"


def plot(report: dict, path: str) -> Optional[str]:
    """Draw throughput against stride, padding and dilation per runner (a row per op) and the ratio to the
    best peer (a row per op); plus the ratio per standard layer when there are layers. Returns None, or why
    no plot was drawn (matplotlib missing, nothing to draw)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install matplotlib (or fastconv[bench])"
    ok = [r for r in report["results"] if r["status"] == "ok"]
    ops = []                          # a row per op and direction: "conv2d", "conv2d conv_input", ...
    for c in report["cases"]:
        if any(s in c["sweeps"] for s in PLOT_SWEEPS) and _plot_op(c) not in ops:
            ops.append(_plot_op(c))
    layers = [c["name"] for c in report["cases"] if c["source"].startswith("layers")]
    if not ops and not layers:
        return "no sweep or layer cases to plot"
    nrows = 2 * len(ops) + (1 if layers else 0)
    fig = plt.figure(figsize=(15, 3.0 * nrows + 0.8))
    grid = fig.add_gridspec(nrows, len(PLOT_SWEEPS))
    labels = sorted({(r["kind"] != "fastconv", f"{r['backend']}:{r['algo']}") for r in ok})
    colors = {lab: plt.cm.tab10(i % 10) for i, (_, lab) in enumerate(labels)}
    for oi, op in enumerate(ops):
        unit = "GFLOP/s" if op.split()[0] in CONV_OPS else "GB/s"
        legend_done = False
        for si, sweep in enumerate(PLOT_SWEEPS):
            ax_t = fig.add_subplot(grid[2 * oi, si])
            ax_r = fig.add_subplot(grid[2 * oi + 1, si])
            on = [c for c in report["cases"] if _plot_op(c) == op and sweep in c["sweeps"]]
            xs = sorted({c["sweeps"][sweep] for c in on}, key=_order)
            ax_t.set_title(f"{op}: {sweep}", fontsize=10)
            if len(xs) < 1:
                ax_t.text(0.5, 0.5, f"no {sweep} sweep in this suite", ha="center", va="center",
                          transform=ax_t.transAxes)
                ax_t.axis("off")
                ax_r.axis("off")
                continue
            for peer, lab in labels:
                pts_t, pts_r = [], []
                for xi, x in enumerate(xs):
                    case = next(c["name"] for c in on if c["sweeps"][sweep] == x)
                    row = next((r for r in ok if r["case"] == case and f"{r['backend']}:{r['algo']}" == lab),
                               None)
                    if row:
                        pts_t.append((xi, row["throughput"]))
                        if not peer and row["ratio_to_best_peer"]:
                            pts_r.append((xi, row["ratio_to_best_peer"]))
                style = dict(color=colors[lab], marker="o", linestyle="--" if peer else "-", label=lab)
                if pts_t:
                    ax_t.plot(*zip(*pts_t), **style)
                if pts_r:
                    ax_r.plot(*zip(*pts_r), **style)
            for ax in (ax_t, ax_r):
                ax.set_xticks(range(len(xs)))
                ax.set_xticklabels(xs)
                ax.grid(alpha=0.3)
            ax_t.set_ylabel(unit)
            ax_r.set_ylabel("vs best peer (x, log)")
            _log_ratio_axis(ax_r)
            ax_r.axhline(1.0, color="gray", linewidth=0.8)
            ax_r.set_xlabel(sweep)
            if not legend_done and ax_t.get_legend_handles_labels()[0]:
                ax_t.legend(fontsize=7)
                legend_done = True
    if layers:
        ax = fig.add_subplot(grid[nrows - 1, :])
        fc = sorted({f"{r['backend']}:{r['algo']}" for r in ok if r["kind"] == "fastconv"})
        width = 0.8 / max(1, len(fc))
        for j, lab in enumerate(fc):
            ys = []
            for name in layers:
                row = next((r for r in ok if r["case"] == name and f"{r['backend']}:{r['algo']}" == lab), None)
                ys.append(row["ratio_to_best_peer"] if row and row["ratio_to_best_peer"] else float("nan"))
            ax.bar([i + j * width for i in range(len(layers))], ys, width, label=lab, color=colors.get(lab))
        ax.axhline(1.0, color="gray", linewidth=0.8)
        _log_ratio_axis(ax)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
        ax.set_xticklabels([n.split("/", 1)[-1] for n in layers], rotation=70, fontsize=7)
        ax.set_ylabel("vs best peer (x, log)")
        ax.set_title("standard layers: speed relative to the best peer (> 1: faster)", fontsize=10)
        ax.legend(fontsize=7)
    m = report["machine"]
    dev = m["gpu"]["name"] if m.get("gpu") else f"{m['cpu_model']} ({m['cpu_cores_usable']} cores)"
    fig.suptitle(f"fastconv bench: suite {report['settings']['suite']} on {dev}, {m['date']}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    _files.atomic_write(path, png.getvalue())
    return None
