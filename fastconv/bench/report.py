"""What a run reports: throughput and ratios per row, the text table, the per-table summary (text and
Markdown) and the JSON file.

Summaries keep apart what they must not average together: per fastconv runner, the forward convolutions
(``conv``), their data and weight gradients (``conv_input``, ``conv_weight``), the pools (``pool``) and the
pool gradients (``pool_backward``) and whole networks (``network``) are each a group of their own
(:func:`op_group`); goals (``--targets``) are about the forward groups (conv, pool, network) unless a goal
names its ``op``.

Throughput is ``spec.flops()`` / time (GFLOP/s) for convolutions and ``spec.bytes()`` / time (GB/s) for
pools, from the spec of the case itself (never the reduced verification copy). The ratio to the best peer
is ``best peer median time / runner median time`` (> 1: faster than every peer measured).
"""
from __future__ import annotations

import json
import math
from typing import Dict, List, Optional, Sequence, Tuple

from .. import _files, _timing
from .cases import CONV_OPS, Case, table_of
from .targets import SUBSETS, target_met, target_text
from .timing import FULL_POLICY, MAX_SPREAD, quartiles
from .verification import PEER_LOOSE_SCALE


def add_throughput(case: Case, spec, rows: List[dict], peak: Optional[dict], verify_n,
                   copy_ref: Optional[dict] = None) -> None:
    """Add throughput, fraction of peak, fraction of the measured copy bandwidth (pools), the ratio to the
    best peer, its interquartile range and whether it is noisy (``ratio_noisy``: the row or that peer is
    ``noisy``) to each timed row."""
    work = spec.flops() if case.is_conv else spec.bytes()
    unit = "GFLOP/s" if case.is_conv else "GB/s"
    peak_value = None
    if peak:
        peak_value = peak.get("fp32_gflops") if case.is_conv else peak.get("mem_gbps")
    copy_gbps = copy_ref.get("gbps") if copy_ref and not case.is_conv else None
    peers = [r for r in rows if r["kind"] == "peer" and r["status"] == "ok"]
    best = min(peers, key=lambda r: r["median_s"]) if peers else None
    for r in rows:
        r["verify_n"] = verify_n
        r["unit"] = unit
        if r["status"] != "ok":
            r.update(throughput=None, peak_fraction=None, copy_fraction=None, ratio_to_best_peer=None,
                     ratio_iqr=None, ratio_noisy=None)
            continue
        tp = work / r["median_s"] / 1e9
        r["throughput"] = tp
        r["peak_fraction"] = tp / peak_value if peak_value else None
        r["copy_fraction"] = tp / copy_gbps if copy_gbps else None
        r["ratio_to_best_peer"] = best["median_s"] / r["median_s"] if best else None
        r["ratio_iqr"] = [best["q1_s"] / r["q3_s"], best["q3_s"] / r["q1_s"]] if best else None
        r["ratio_noisy"] = bool(r.get("noisy") or best.get("noisy")) if best else None


def op_group(case: dict) -> str:
    """The summary group of a JSON case record: ``conv`` or ``pool`` (forward; also every case of a
    fastconv-bench/1 report), ``conv_input``, ``conv_weight`` or ``pool_backward``; ``network`` for a
    whole network (:mod:`.networks`)."""
    if case["op"] == "network":
        return "network"
    is_conv = case["op"] in CONV_OPS
    if case.get("direction", "forward") == "forward":
        return "conv" if is_conv else "pool"
    return case["spec_op"] if is_conv else "pool_backward"


FORWARD_GROUPS = ("conv", "pool", "network")


def _with_op(label: str, group: str) -> str:
    """A runner label with its group when that is a gradient: ``numba:auto conv_input``."""
    return label if group in FORWARD_GROUPS else f"{label} {group}"


# ---------------------------------------------------------------------------------------------------
# The text table and the per-runner line
# ---------------------------------------------------------------------------------------------------
def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def peak_legend(report: dict) -> Tuple[str, str]:
    """The header of the table's fraction column and the line under the table that says what it is a
    fraction of: on the CPU (``copy%``) the pools' fraction of the copy bandwidth measured in the run with
    one thread of ``numpy.copyto`` (CPU convolutions have no peak); on the GPU (``peak%``) the
    convolutions' fraction of the fp32 FMA peak and the pools' of the memory bandwidth."""
    pk = report.get("peak") or {}
    conv_ref, pool_ref = pk.get("fp32_gflops"), pk.get("mem_gbps")
    if report.get("settings", {}).get("device", "cpu") == "cpu":
        if not pool_ref:
            return "copy%", ("copy%: pools' throughput as a % of the copy bandwidth measured in the run (no pool in "
                             "this run); convolutions: - (no CPU peak)")
        how = (report.get("copy_bandwidth") or {}).get("how") or pk.get("source", "")
        return "copy%", (f"copy%: pools' throughput as a % of the copy bandwidth measured in this run, "
                         f"{pool_ref:.1f} GB/s ({how}); convolutions: - (no CPU peak)")
    parts = []
    if conv_ref:
        parts.append(f"convolutions: % of the fp32 FMA peak, {conv_ref / 1000:.1f} TFLOP/s")
    if pool_ref:
        parts.append(f"pools: % of the memory bandwidth, {pool_ref:.0f} GB/s")
    if not parts:
        return "peak%", "peak%: - (the device's peak is unknown)"
    source = pk.get("source", "").split(";")[0]
    return "peak%", "peak%: " + "; ".join(parts) + (f" ({source})" if source else "")


def table(report: dict) -> str:
    """The results as a fixed-width text table, with a line under it that says what the fraction column
    is a fraction of (:func:`peak_legend`); the spread column marks noisy rows, and a line says how many
    there are and what noisy means."""
    wc = max([32] + [len(r["case"]) + 1 for r in report["results"]])     # gradient names are longer
    peak_head, legend = peak_legend(report)
    head = (f"{'case':<{wc}} {'backend':<11} {'algo':<7} {'time':>10} {'throughput':>16} {peak_head:>6} "
            f"{'vs peer':>8} {'spread':>6}")
    lines = [head, "-" * len(head)]
    last = None
    for r in report["results"]:
        case = r["case"] if r["case"] != last else ""
        last = r["case"]
        if r["status"] != "ok":
            msg = r["status"] + (f": {r['error'][:60]}" if r.get("error") else "")
            lines.append(f"{case:<{wc}} {r['backend']:<11} {r['algo']:<7} {msg}")
            continue
        tp = f"{r['throughput']:.2f} {r['unit']}"
        pk = _pct(r["peak_fraction"])
        ratio = f"{r['ratio_to_best_peer']:.2f}x" if r["ratio_to_best_peer"] is not None else "-"
        loose = {"loose": f" (verified at {PEER_LOOSE_SCALE:g}x tolerance)",
                 "fp16-accumulate": " (verified at the float16-accumulation tolerance)"}.get(r.get("verified"), "")
        lines.append(f"{case:<{wc}} {r['backend']:<11} {r['algo']:<7} {fmt_time(r['median_s']):>10} "
                     f"{tp:>16} {pk:>6} {ratio:>8} {_spread_cell(r)}{loose}")
    lines.append(legend)
    noisy = sum(bool(r.get("noisy")) for r in report["results"])
    if noisy:
        lines.append(f"{noisy} noisy row(s): {NOISY_MEANS.format(_max_spread(report))}")
    return "\n".join(lines)


#: what "noisy" means, in the table's legend and the summaries' notes (``{}``: the threshold)
NOISY_MEANS = "the 95% confidence interval of the row's median time is wider than +-{:.0%}"


def _max_spread(report: dict) -> float:
    """The spread above which this report's rows are noisy (its policy's; older reports: the default)."""
    return (report.get("settings", {}).get("policy") or {}).get("max_spread", MAX_SPREAD)


def _spread_cell(r: dict) -> str:
    """The table's spread column (the 95% interval of the median): ``+-4%``, ``+-38% noisy``, or ``-`` for a
    report without spreads."""
    if r.get("spread") is None:
        return f"{'-':>6}"
    return f"{'+-%.0f%%' % (100 * r['spread']):>6}" + (" noisy" if r.get("noisy") else "")


def verified_text(report: dict) -> str:
    """How many rows passed the check against the NumPy oracle, out of those checked (every row but the
    unsupported ones), fastconv's and the peers' apart, and which failed (verification failed, or the
    runner crashed before it could be judged)."""
    lines = []
    for kind, who in (("fastconv", "fastconv"), ("peer", "peers")):
        rows = [r for r in report["results"] if r["kind"] == kind and r["status"] != "unsupported"]
        if not rows:
            continue
        passed = [r for r in rows if r.get("verified")]
        wider = sum(r["verified"] != "strict" for r in passed)
        unsupported = sum(r["kind"] == kind and r["status"] == "unsupported" for r in report["results"])
        lines.append(f"{who}: {len(passed)}/{len(rows)} verified against the NumPy oracle"
                     + (f" ({wider} at a peer's wider tolerance)" if wider else "")
                     + (f"; {unsupported} unsupported, not run" if unsupported else ""))
        failed = [r for r in rows if not r.get("verified")]
        if failed:
            names = [f"{r['case']} {r['backend']}:{r['algo']} ({r['status']})" for r in failed]
            lines.append("  not verified: " + ", ".join(names[:10])
                         + (f" and {len(names) - 10} more" if len(names) > 10 else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# No peer: why, and what to install
# ---------------------------------------------------------------------------------------------------
#: how to install the peer of each device
PEER_INSTALL = {"cpu": "pip install torch for the CPU peer (for cuDNN on a GPU: a CUDA build of torch, "
                       "https://pytorch.org/get-started/locally/)",
                "gpu": "a CUDA build of torch for the cuDNN peer (https://pytorch.org/get-started/locally/; on "
                       "Linux x86-64 plain pip install torch is one)"}


def missing_peer(report: dict) -> Optional[str]:
    """Why the report holds no peer result (None when it holds one), for "no peer: ...": none was run,
    each peer's own reason (``torch: torch is not installed ...``), or that the peers ran but timed no
    case."""
    if any(r["kind"] == "peer" and r["status"] == "ok" for r in report["results"]):
        return None
    peers = [p for p in report.get("runners", []) if p["kind"] == "peer"]
    if not peers:
        return "none was run (--no-peers)"
    gone = [f"{p['name']}: {p['reason']}" for p in peers if not p["available"]]
    if len(gone) == len(peers):
        return "; ".join(gone)
    ran = ", ".join(p["name"] for p in peers if p["available"])
    return f"{ran} timed no case (each unsupported or failed, see the table)"


def no_peer_line(report: dict) -> Optional[str]:
    """The console line when no peer was timed: why, and that the 'vs peer' ratios need one and how to
    get it (None when a peer was timed)."""
    why = missing_peer(report)
    if why is None:
        return None
    device = report.get("settings", {}).get("device", "cpu")
    if not any(p["kind"] == "peer" for p in report.get("runners", [])):
        fix = "run without --no-peers, with torch installed (pip install torch)"
    elif any(p["kind"] == "peer" and p["available"] for p in report["runners"]):
        fix = "see why in the table"
    else:
        fix = PEER_INSTALL.get(device, PEER_INSTALL["cpu"])
    return f"vs peer: '-' everywhere, no peer: {why}. The ratios need a peer: {fix}"


def _geomean(vals: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def noise_refused(noisy: int, n: int) -> bool:
    """The rule for every geomean fastconv prints (:func:`summary`, :func:`table_summary`, Markdown): none when
    more than half of the ``n`` ratios it would average are noisy (``ratio_noisy``: the fastconv row or its
    best peer has a spread above the policy's ``max_spread``). The numbers stay in the JSON, flagged."""
    return n > 0 and 2 * noisy > n


def _noise_note(report: dict) -> str:
    """Why a geomean was refused and what to do, with the run's load average (advice the run already
    followed is left out)."""
    m, st = report.get("machine", {}), report.get("settings", {})
    la, lb = m.get("loadavg_start"), m.get("loadavg_end")
    load = (f"load average {la[0]:.1f} at the start, {lb[0]:.1f} at the end, on {m.get('cpu_cores_usable')} cores; "
            if la and lb else "")
    todo = [] if (st.get("threads") or {}).get("requested") == 1 else ["--threads 1"]
    todo.append("a quiet machine")
    if (st.get("policy") or {}).get("max_time", FULL_POLICY.max_time) < FULL_POLICY.max_time:
        todo.append("a longer budget (a suite without --quick)")
    return (f"noisy: {NOISY_MEANS.format(_max_spread(report))} (or its peer's); {load}for numbers to trust: "
            + ", ".join(todo[:-1]) + (" or " if len(todo) > 1 else "") + todo[-1])


def _headline_groups(report: dict) -> Dict[Tuple[str, str], List[dict]]:
    """The fastconv rows with a ratio, per (runner label, :func:`op_group`)."""
    group_of = {c["name"]: op_group(c) for c in report["cases"]}
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for r in report["results"]:
        if r["kind"] == "fastconv" and r.get("ratio_to_best_peer"):
            groups.setdefault((f"{r['backend']}:{r['algo']}", group_of[r["case"]]), []).append(r)
    return groups


def _refused(rows: Sequence[dict]) -> bool:
    return noise_refused(sum(bool(r.get("ratio_noisy")) for r in rows), len(rows))


def noise_note(report: dict) -> Optional[str]:
    """The note on noise (what it is, the load average, what to do) when :func:`summary` or a per-table
    entry refused a geomean, else None."""
    if any(_refused(rows) for rows in _headline_groups(report).values()) or any(
            e.get("refused") for e in report.get("summary") or ()):
        return _noise_note(report)
    return None


def summary(report: dict, note: bool = True) -> str:
    """Geometric-mean ratio to the best peer per fastconv runner and :func:`op_group` (convs, pools and
    each gradient apart), over every row with a ratio, noisy ones included (their count is given); where
    more than half of them are noisy (:func:`noise_refused`), no geomean but how many, followed (``note``)
    by a note with the load average and what to do."""
    groups = _headline_groups(report)
    wf = max([5] + [len(f) for _, f in groups])
    lines, refused = [], False
    for (label, family), rows in sorted(groups.items()):
        vals = [r["ratio_to_best_peer"] for r in rows]
        noisy = sum(bool(r.get("ratio_noisy")) for r in rows)
        head = f"{label:<18} {family:<{wf}} "
        if noise_refused(noisy, len(rows)):
            refused = True
            lines.append(head + f"no geomean vs best peer: {noisy} of {len(rows)} cases are noisy")
            continue
        lines.append(head + f"geomean vs best peer {_geomean(vals):.2f}x over {len(vals)} cases "
                     f"(min {min(vals):.2f}x, max {max(vals):.2f}x" + (f"; {noisy} noisy" if noisy else "") + ")")
    if refused and note:
        lines.append(_noise_note(report))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The per-table summary
# ---------------------------------------------------------------------------------------------------
def _median(vals: Sequence[float]) -> Optional[float]:
    return _timing.median(list(vals)) if vals else None


def _row_label(row: dict, op: str) -> str:
    """The fastconv runner a result row belongs to: ``backend:algo`` for convs, ``backend:pools`` for pools
    (whose row ``algo`` is the implementation dispatch picked)."""
    return f"{row['backend']}:{row['algo'] if op in CONV_OPS or op == 'network' else 'pools'}"


def table_summary(report: dict, targets: Optional[dict] = None) -> List[dict]:
    """Per standard-layer table, fastconv runner (``backend:algo``; ``backend:pools`` for pools) and
    :func:`op_group` (``op``: conv, pool, conv_input, conv_weight, pool_backward): the geometric mean,
    median, quartiles and lowest ratio to the best peer (with its layer), how many layers were timed,
    unsupported or failed, the median fraction of the fp32 FMA peak (fastconv and peer; convs), the median
    and lowest fraction of the measured copy bandwidth (pools); with ``targets`` (see :mod:`.targets`;
    the forward groups, or the goal's ``op``), the table's goal and whether it is met (None when not every
    layer was timed); a goal over several ``tables`` is an entry of its own, named by its key, over their
    layers together.
    ``noisy``: how many of the timed ratios are noisy (``ratio_noisy``); ``refused``: None, or why the
    geomean is not to be printed (:func:`noise_refused`: more than half of them noisy; the figures stay in
    the entry, and the goal is not judged: ``met`` None), with ``noise_note``: the load average and what
    to do."""
    cases = {c["name"]: c for c in report["cases"]}
    tables: Dict[str, List[str]] = {}
    for c in report["cases"]:
        table_name = table_of(c.get("source", ""))
        if table_name:
            tables.setdefault(table_name, []).append(c["name"])
    unions = {}
    for key, goal in (targets or {}).items():     # a goal over several tables: their layers as one table
        names = [n for t in goal.get("tables") or () for n in tables.get(t, [])]
        if names:
            unions[key] = names
    tables.update(unions)
    dtype = report.get("settings", {}).get("dtype", "float32")
    out = []
    for table_name, names in tables.items():
        in_table = set(names)
        rows = [r for r in report["results"] if r["case"] in in_table]
        groups: Dict[Tuple[str, str], List[dict]] = {}
        for r in rows:
            if r["kind"] == "fastconv":
                c = cases[r["case"]]
                groups.setdefault((_row_label(r, c["op"]), op_group(c)), []).append(r)
        peers = sorted({r["backend"] for r in rows if r["kind"] == "peer" and r["status"] == "ok"})
        peer = "/".join(peers) or "peer"
        for (label, group), rs_all in groups.items():
            goal = goal_for(targets, table_name, group)
            if goal is None and table_name in unions:      # a union is there for its goal's groups only
                continue
            subset = goal.get("layers") if goal else None
            layers_all = [n for n in names if op_group(cases[n]) == group]
            parts = [(None, layers_all)]
            if subset:
                sub = [n for n in layers_all if SUBSETS[subset](cases[n])]
                if sub and len(sub) < len(layers_all):
                    parts.append((subset, sub))
            for part, layers in parts:
                rs = [r for r in rs_all if r["case"] in set(layers)]
                entry = _summary_entry(table_name, label, part, layers, rs, rows, cases, dtype, peer)
                entry["op"] = group
                if entry["refused"]:
                    entry["noise_note"] = _noise_note(report)
                if goal and part == subset:
                    entry["target"] = target_text(goal, peer)
                    entry["met"] = None if entry["refused"] else target_met(goal, entry)
                out.append(entry)
    return out


def goal_for(targets: Optional[dict], table_name: str, group: str) -> Optional[dict]:
    """The goal of ``targets`` about ``group`` of ``table_name``: a goal with an ``op`` is about that
    op group only, one without about the forward groups."""
    goal = (targets or {}).get(table_name)
    if not goal:
        return None
    return goal if group == goal.get("op", group if group in FORWARD_GROUPS else None) else None


def _summary_entry(table_name, label, part, layers, rs, rows, cases, dtype, peer) -> dict:
    """One :func:`table_summary` entry: the rows ``rs`` of fastconv runner ``label`` on ``layers``."""
    is_conv = not label.endswith(":pools")
    ok = [r for r in rs if r["status"] == "ok" and r.get("ratio_to_best_peer")]
    ratios = [(r["ratio_to_best_peer"], r["case"]) for r in ok]
    values = [v for v, _ in ratios]
    noisy = sum(bool(r.get("ratio_noisy")) for r in ok)
    q1, median, q3 = quartiles(values, "inclusive")   # the table's layers are the population
    peer_rows = [r for r in rows if r["kind"] == "peer" and r["status"] == "ok" and r["case"] in set(layers)]
    lo = min(ratios) if ratios else (None, None)
    hi = max(ratios) if ratios else (None, None)
    entry = {
        "table": table_name, "layer_subset": part, "runner": label, "dtype": dtype, "peer": peer,
        "batch": sorted({cases[n]["input_shape"][0] for n in layers}),
        "layers": len(layers), "timed": len(ratios), "noisy": noisy,
        "refused": f"{noisy} of {len(ok)} layers are noisy" if noise_refused(noisy, len(ok)) else None,
        "unsupported": sum(r["status"] == "unsupported" for r in rs),
        "failed": sum(r["status"] in ("verify-failed", "error") for r in rs),
        "geomean": _geomean(values) if ratios else None, "median": median, "q1": q1, "q3": q3,
        "min": lo[0], "min_layer": lo[1], "max": hi[0], "max_layer": hi[1],
        "median_peak_fraction": _median([r["peak_fraction"] for r in ok if r.get("peak_fraction") is not None]),
        "peer_median_peak_fraction": _median([r["peak_fraction"] for r in peer_rows
                                              if r.get("peak_fraction") is not None]),
    }
    if not is_conv:
        fr = [(r["copy_fraction"], r["case"]) for r in ok if r.get("copy_fraction") is not None]
        entry["median_copy_fraction"] = _median([f for f, _ in fr])
        entry["min_copy_fraction"], entry["min_copy_layer"] = min(fr) if fr else (None, None)
        entry["peer_median_copy_fraction"] = _median([r["copy_fraction"] for r in peer_rows
                                                      if r.get("copy_fraction") is not None])
    entry["target"], entry["met"] = None, None
    return entry


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if v < 0.1 else f"{100 * v:.0f}%"


def _table_name(e: dict) -> str:
    return e["table"] + (f" [{e['layer_subset']}]" if e.get("layer_subset") else "")


def _spread(e: dict) -> str:
    """Median ratio and its quartiles, e.g. ``1.10x (0.85-1.40x)``."""
    if e.get("median") is None:
        return "-"
    return f"{_x(e['median'])} ({e['q1']:.2f}-{e['q3']:.2f}x)"


def summary_text(entries: Sequence[dict], note: bool = True) -> str:
    """One line per :func:`table_summary` entry; with ``note``, the note on noise once after them when an
    entry was refused."""
    lines = []
    for e in entries:
        head = (f"{_table_name(e)} (N={','.join(map(str, e['batch']))}, {e['dtype']}) "
                f"{_with_op(e['runner'], e.get('op', 'conv'))}: ")
        timed = f"{e['timed']}/{e['layers']} layers timed" + (
            f" ({e['unsupported']} unsupported, {e['failed']} failed)" if e["unsupported"] or e["failed"] else "")
        if e.get("refused"):      # no ratio figure from a table that was mostly noise: say why instead
            lines.append(head + f"no geomean vs {e['peer']}, {timed}: {e['refused']}"
                         + (f"; target {e['target']}: not judged" if e["target"] else ""))
            continue
        line = (head + f"geomean {_x(e['geomean'])} vs {e['peer']}, median {_spread(e)}, min {_x(e['min'])}"
                + (f" ({e['min_layer'].split('/', 1)[-1]})" if e["min_layer"] else "") + f", {timed}"
                + (f" ({e['noisy']} noisy)" if e.get("noisy") else ""))
        if "median_copy_fraction" in e:
            line += (f", median {_pct(e['median_copy_fraction'])} of copy bandwidth "
                     f"(peer {_pct(e.get('peer_median_copy_fraction'))})")
        elif e["median_peak_fraction"] is not None:
            line += (f", median {_pct(e['median_peak_fraction'])} of fp32 peak "
                     f"(peer {_pct(e['peer_median_peak_fraction'])})")
        if e["target"]:
            verdict = {True: "met", False: "NOT met", None: "not every layer timed"}[e["met"]]
            line += f"; target {e['target']}: {verdict}"
        lines.append(line)
    if note:
        lines += list(dict.fromkeys(e["noise_note"] for e in entries if e.get("refused") and e.get("noise_note")))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------
def _cuda_version(v) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if isinstance(v, int) else "-"


#: the vector ISA of OpenBLAS's x86-64 kernel families (``openblas_get_corename``) that the CPU facts name
BLAS_KERNEL_ISA = {"haswell": "AVX2", "zen": "AVX2", "skylakex": "AVX-512", "cooperlake": "AVX-512",
                   "sapphirerapids": "AVX-512", "sandybridge": "AVX", "nehalem": "SSE4.2"}


def _blas_text(m: dict) -> str:
    """"; NumPy's OpenBLAS: Haswell kernels (AVX2)", with a note where they are narrower than the CPU's ISA
    (the im2col paths' GEMMs then run below the CPU's speed), or "" where the report has no BLAS kernels."""
    core = m.get("blas_kernels")
    if not core:
        return ""
    isa = BLAS_KERNEL_ISA.get(core.lower())
    text = f"; NumPy's OpenBLAS: {core} kernels" + (f" ({isa})" if isa else "")
    env = m.get("blas_coretype_env")
    if env:
        text += f", as OPENBLAS_CORETYPE={env} asks"
    if isa == "AVX2" and m.get("cpu_isa") == "AVX-512":
        text += (", narrower than this CPU's AVX-512 (OPENBLAS_CORETYPE, set or unset before NumPy is "
                 "imported, chooses others: README, Threads on the CPU)")
    return text


def _facts(rep: dict, entries: Sequence[dict]) -> List[str]:
    """The machine, versions and physical limits of one report, one line each."""
    m, v, st = rep["machine"], rep["versions"], rep["settings"]
    g = m.get("gpu") or {}
    peer = next((r.get("settings", {}) for r in rep["runners"] if r["kind"] == "peer" and r["available"]), {})
    facts = []
    if not g and m.get("cpu_isa") is not None:
        facts.append(f"CPU: {m.get('cpu_model')}, {m['cpu_isa']} ({' '.join(m.get('cpu_flags') or [])}), "
                     f"{m.get('cpu_cores_usable')} usable cores" + _blas_text(m))
    th = threads_text(st.get("threads"))
    if th:
        facts.append(th)
    bz = busy_text(st)
    if bz:
        facts.append(bz)
    if g:
        facts.append(f"driver {g.get('nvidia_driver') or '-'} (CUDA driver API {_cuda_version(g.get('cuda_driver'))}), "
                     f"CUDA runtime {_cuda_version(g.get('cuda_runtime'))}, compute capability "
                     f"{g.get('compute_capability')}")
    facts.append(f"fastconv {v.get('fastconv')}, CuPy {v.get('cupy') or '-'}, PyTorch {v.get('torch') or '-'}"
                 + (f", cuDNN {peer['cudnn']}" if peer.get("cudnn") else "")
                 + (", TF32 off" if peer.get("allow_tf32") is False else ""))
    pk = rep.get("peak")
    if pk:
        lim = []
        if pk.get("fp32_gflops"):
            lim.append(f"fp32 FMA peak {pk['fp32_gflops'] / 1000:.1f} TFLOP/s")
        if pk.get("mem_gbps"):
            lim.append(f"memory bandwidth {pk['mem_gbps']:.0f} GB/s")
        vend = pk.get("vendor")
        facts.append("limits: " + ", ".join(lim) + f" ({pk['source'].split(';')[0]}"
                     + (f"; spec sheet: {vend['fp32_gflops'] / 1000:.1f} TFLOP/s, {vend['mem_gbps']:.0f} GB/s"
                        if vend else "") + ")")
    cp = rep.get("copy_bandwidth")
    if cp and cp.get("gbps"):
        facts.append(f"measured copy bandwidth {cp['gbps']:.0f} GB/s, the pools' % copy BW reference ("
                     + (cp.get("how") or f"{cp.get('method')}, {cp.get('bytes', 0) / 2**20:.0f} MiB") + ")")
    elif cp:
        facts.append(f"copy bandwidth not measured: {cp.get('error')}")
    if m.get("loadavg_start") and m.get("loadavg_end"):
        most = m.get("loadavg_max")
        facts.append(f"load average {m['loadavg_start'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the "
                     "end" + (f", at most {most:.1f} after a case" if most is not None else "")
                     + f", on {m['cpu_cores_usable']} usable cores")
    facts.append(f"ratio = {' / '.join(sorted({e['peer'] for e in entries})) or 'peer'} "
                 "median time / fastconv median time (> 1: fastconv faster); medians of "
                 f"{st['policy']['min_repeat']}-{st['policy']['max_repeat']} timed calls")
    timed = [r for r in rep["results"] if r["status"] == "ok" and "noisy" in r]
    if timed:       # reports that predate the noise flags say nothing about it
        facts.append(f"the runners of a case timed together in alternating rounds; "
                     f"{sum(bool(r['noisy']) for r in timed)} of {len(timed)} rows noisy "
                     f"({NOISY_MEANS.format(_max_spread(rep))})")
    return facts


def threads_text(threads: Optional[dict]) -> Optional[str]:
    """The threads line of a report: what numba, torch and the BLAS pools ran with (None when unrecorded)."""
    if not threads:
        return None
    parts = [f"{k} {threads[k]}" for k in ("numba", "torch") if threads.get(k) is not None]
    blas = threads.get("blas") or {}
    pools = blas.get("pools") or []
    counts = sorted({p.get("num_threads") for p in pools if p.get("user_api") == "blas"} - {None})
    if counts:
        parts.append("BLAS " + "/".join(map(str, counts)) + ("" if blas.get("limited") else " (not limited)"))
    requested = threads.get("requested")
    return ("threads: " + ", ".join(parts) + (f" (--threads {requested})" if requested else " (their defaults)")
            if parts else None)


def busy_text(settings: dict) -> Optional[str]:
    """The busy-machine line of a report (``settings.busy``, :mod:`.busy`); None for reports that predate it."""
    b = settings.get("busy")
    if b is None:
        return None
    if not b.get("cores"):
        return "quiet run: no busy process started (--busy-cores 0; the load average says what else ran)"
    pinned = [c for c in b.get("pinned") or [] if c is not None]
    held = [h for h in b.get("held") or [] if h is not None]
    many = "es" if b["cores"] > 1 else ""
    return (f"BUSY machine: {b['cores']} child process{many} kept {b['cores']} core{'s' if many else ''} busy "
            "for the whole run"
            + (f", pinned to core(s) {', '.join(map(str, pinned))}" if pinned else "")
            + (f", getting {'/'.join(f'{h:.2f}' for h in held)} of its core" if held else "")
            + " (--busy-cores)")


def busy_label(settings: dict) -> str:
    """``", busy: 1 core"`` for a busy run (headers, file names), "" otherwise."""
    n = (settings.get("busy") or {}).get("cores")
    return f", busy: {n} core{'s' if n > 1 else ''}" if n else ""


def markdown(reports: Sequence[dict], targets: Optional[dict] = None) -> str:
    """The per-table summary of one or more reports (e.g. a float32 and a float16 run) as Markdown: per
    report the machine, versions and physical limits, then one table row per (table, fastconv runner);
    with ``targets``, a goal and a verdict column."""
    parts = []
    for rep in reports:
        m, st = rep["machine"], rep["settings"]
        g = m.get("gpu") or {}
        isa = f", {m['cpu_isa']}" if m.get("cpu_isa") else ""
        dev = g.get("name") or f"{m['cpu_model']} ({m['cpu_cores_usable']} cores{isa})"
        suite = f"suite {st['suite']}, " if st.get("suite") else ""
        parts.append(f"### {dev}, {suite}{st.get('dtype', 'float32')}{busy_label(st)}, {m['date']}\n")
        entries = table_summary(rep, targets)
        parts.append("".join(f"- {f}\n" for f in _facts(rep, entries)))
        if not entries:
            parts.append("\n(no standard-layer tables in this run)\n")
            continue
        goal_cols = ["target", "met"] if targets else []
        cols = ["table (N)", "fastconv", "layers timed", "geomean ratio", "min ratio (layer)",
                "median ratio (quartiles)", "median % fp32 peak: fastconv / peer",
                "median % copy BW: fastconv (min) / peer"] + goal_cols
        parts.append("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for e in entries:
            copy = "-"
            if "median_copy_fraction" in e:
                copy = (f"{_pct(e['median_copy_fraction'])} ({_pct(e['min_copy_fraction'])}) / "
                        f"{_pct(e.get('peer_median_copy_fraction'))}")
            layer = f" ({e['min_layer'].split('/', 1)[-1]})" if e["min_layer"] else ""
            peakf = "-" if "median_copy_fraction" in e else \
                f"{_pct(e['median_peak_fraction'])} / {_pct(e['peer_median_peak_fraction'])}"
            timed = f"{e['timed']}/{e['layers']}" + (f" ({e['unsupported']} unsupported)" if e["unsupported"] else "") \
                + (f" ({e['failed']} failed)" if e["failed"] else "")
            op = "" if e.get("op", "conv") in FORWARD_GROUPS else f" {e['op']}"
            geo, low, mid = _x(e["geomean"]), f"{_x(e['min'])}{layer}", _spread(e)
            if e.get("refused"):       # the same rule as the console: no ratio figures from noise
                geo, low, mid = f"none: {e['noisy']}/{e['timed']} noisy", "-", "-"
            cells = [f"{_table_name(e)} ({','.join(map(str, e['batch']))})", f"`{e['runner']}`{op}", timed,
                     geo, low, mid, peakf, copy]
            if targets:
                cells += [e["target"] or "-", {True: "yes", False: "no", None: "-"}[e["met"]]]
            parts.append("| " + " | ".join(cells) + " |\n")
        if any(e.get("refused") for e in entries):
            parts.append(f"\n{_noise_note(rep)}\n")
        parts.append("\n")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------
# Files (written atomically: a reader never sees half a report)
# ---------------------------------------------------------------------------------------------------
def write_markdown(reports: Sequence[dict], path: str, targets: Optional[dict] = None) -> None:
    _files.atomic_write(path, markdown(reports, targets))


def _clean(v):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_json(report: dict, path: str) -> None:
    _files.atomic_write(path, json.dumps(_clean(report), indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------
# A busy run against a quiet one
# ---------------------------------------------------------------------------------------------------
#: how far a fastconv row's ratio to the peer may fall on a busy machine, relative to the quiet run's
BUSY_WITHIN = 0.25


def busy_comparison(quiet: dict, busy: dict, within: float = BUSY_WITHIN) -> List[dict]:
    """Per fastconv row with a ratio in both reports (same case, backend and algo): ``quiet`` and ``busy``
    ratios to the peer, ``change`` (busy / quiet) and ``met``: the busy ratio is at least ``1 - within`` x
    the quiet one (fastconv keeps its standing against the peer when a core is taken; a ratio that rises
    meets it). ``noisy``: either row's ratio was noisy."""
    def key(r):
        return (r["case"], r["backend"], r["algo"])
    before = {key(r): r for r in quiet["results"] if r["kind"] == "fastconv" and r.get("ratio_to_best_peer")}
    out = []
    for r in busy["results"]:
        q = before.get(key(r))
        if r["kind"] != "fastconv" or not r.get("ratio_to_best_peer") or q is None:
            continue
        change = r["ratio_to_best_peer"] / q["ratio_to_best_peer"]
        out.append({"case": r["case"], "runner": f"{r['backend']}:{r['algo']}", "quiet": q["ratio_to_best_peer"],
                    "busy": r["ratio_to_best_peer"], "change": change, "met": change >= 1 - within,
                    "noisy": bool(q.get("ratio_noisy") or r.get("ratio_noisy"))})
    return out


def busy_markdown(quiet: dict, busy: dict, within: float = BUSY_WITHIN) -> str:
    """:func:`busy_comparison` as Markdown: both runs' machine lines (load average, busy children), one row
    per case and the count of rows that keep their standing."""
    rows = busy_comparison(quiet, busy, within)
    st_q, st_b = quiet.get("settings", {}), busy.get("settings", {})
    head = [f"### suite {st_b.get('suite')}: busy ({busy_label(st_b).lstrip(', ') or 'no busy process'}) "
            f"against quiet\n"]
    for name, rep in (("quiet", quiet), ("busy", busy)):
        m = rep.get("machine", {})
        la, lb = m.get("loadavg_start"), m.get("loadavg_end")
        head.append(f"- {name}: {m.get('date')}, " + (f"load average {la[0]:.1f} at the start, {lb[0]:.1f} at "
                                                      "the end; " if la and lb else "")
                    + (busy_text(rep.get("settings", {})) or "-") + "\n")
    met = sum(r["met"] for r in rows)
    head.append(f"- goal: on the busy machine each ratio to the peer at least {1 - within:.2f}x its quiet value; "
                f"{met} of {len(rows)} rows meet it\n\n")
    lines = ["| case | fastconv | quiet ratio | busy ratio | busy / quiet | met |\n|---|---|---|---|---|---|\n"]
    for r in rows:
        lines.append(f"| {r['case']} | `{r['runner']}` | {_x(r['quiet'])} | {_x(r['busy'])} | {r['change']:.2f} | "
                     f"{'yes' if r['met'] else 'no'}{' (noisy)' if r['noisy'] else ''} |\n")
    return "".join(head + lines)
