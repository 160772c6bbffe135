"""What ``fastconv bench`` leaves and shows: the default results folder (ignored by git), the plot (every
point's spread, axes from zero or ratios on a log scale, panels that say why they are empty), the table's
fraction column and its legend, the line that says no peer was timed, and user-facing text that speaks
of the product.

The bench runs here use the NumPy oracle backend on one or two quick cases (nothing compiles); the plot
tests build matplotlib Figures from hand-made reports whose every bar is known.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess

import pytest

from fastconv import bench, cli

from .fakes import has, synthetic_report

TORCH_MISSING = "torch is not installed (No module named 'torch')"


def _bench(capsys, *args):
    """``fastconv bench`` on the oracle backend (in this process); (exit status, stdout + stderr)."""
    rc = cli.main(["bench", "--quick", "--backend", "numpy", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


# ---------------------------------------------------------------------------------------------------
# The results folder
# ---------------------------------------------------------------------------------------------------
def test_default_files_land_in_one_results_folder_that_git_ignores(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1")
    assert rc == 0, out
    assert [p.name for p in tmp_path.iterdir()] == ["fastconv-results"]          # nothing beside it
    folder = tmp_path / "fastconv-results"
    assert "*" in (folder / ".gitignore").read_text().splitlines()
    files = sorted(p.name for p in folder.iterdir() if p.name != ".gitignore")
    assert len(files) == (2 if has("matplotlib") else 1) and files[0].endswith(".json")
    stem = files[0][:-len(".json")]
    assert re.fullmatch(r"[a-z0-9-]+-quick-\d{4}-\d\d-\d\dT\d{6}", stem), stem   # device, suite, date and time
    assert f"JSON: fastconv-results/{stem}.json" in out                           # says where the files went
    assert "created fastconv-results/" in out and ".gitignore" in out
    if shutil.which("git"):                         # a repository that knows nothing of fastconv ignores it
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                                capture_output=True, text=True, check=True).stdout
        assert status == ""
    # a second run adds its files to the same folder and leaves its .gitignore as the user keeps it
    (folder / ".gitignore").write_text("*\n# mine\n")
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1", "--no-plot",
                     "--dtype", "float16")
    assert rc == 0 and "created" not in out
    assert (folder / ".gitignore").read_text() == "*\n# mine\n"
    assert len(list(folder.glob("*-float16.json"))) == 1


def test_json_plot_and_out_keep_their_meaning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1", "--no-plot",
                     "--json", "r.json")
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1", "--no-plot",
                     "--out", "mine")
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["mine", "r.json"]
    (js,) = (tmp_path / "mine").iterdir()                             # no .gitignore in the user's folder
    assert js.suffix == ".json" and "-quick-" in js.name
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1", "--no-plot",
                     "--no-json")
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["mine", "r.json"]   # nothing to write
    (tmp_path / "fastconv-results").write_text("")          # a file where the folder would go: said, not raised
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1", "--no-plot")
    assert rc == 2 and "fastconv bench: cannot write the results" in out and "--out DIR" in out


def test_default_names_differ_by_device_suite_direction_dtype_and_second():
    report = {"machine": {"date": "2026-12-01T17:05:28Z", "cpu_model": "AMD EPYC 7B13 (x)", "gpu": None},
              "settings": {"direction": "forward"}}
    args = argparse.Namespace(out=None, dtype="float32")
    assert cli._stem(args, report, "quick") == "fastconv-results/amd-epyc-7b13-x-quick-2026-12-01T170528"
    later = dict(report, machine=dict(report["machine"], date="2026-12-01T17:05:29Z"))
    assert cli._stem(args, later, "quick") != cli._stem(args, report, "quick")
    gpu = dict(report, machine=dict(report["machine"], gpu={"name": "NVIDIA H100 80GB HBM3"}),
               settings={"direction": "backward"})
    assert cli._stem(argparse.Namespace(out="o", dtype="float16"), gpu, "layers") == \
        "o/nvidia-h100-80gb-hbm3-layers-backward-2026-12-01T170528-float16"


# ---------------------------------------------------------------------------------------------------
# The table's fraction column; the line that says no peer was timed
# ---------------------------------------------------------------------------------------------------
def test_cpu_table_says_the_pool_column_is_a_fraction_of_one_thread_copyto(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out = _bench(capsys, "--no-peers", "--filter", "1d:base", "--max-cases", "2", "--no-plot", "--no-json")
    assert rc == 0, out
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("case "))
    assert re.search(r"\bcopy%", head) and not re.search(r"\bpeak\b", head)
    legend = next(line for line in lines if line.startswith("copy%:"))
    assert "numpy.copyto" in legend and "one thread" in legend and re.search(r"\d GB/s", legend)
    pool = next(line for line in lines if line.startswith("max_pool1d:base"))
    assert re.search(r" \d+(\.\d)?% ", pool)                          # the pool row has its copy%
    assert not INTERNAL.search(out), INTERNAL.search(out).group(0)      # the console speaks of the product


def _timed(rep):
    """``rep`` with the fields the text table reads on every row (the synthetic report has ratios only)."""
    for r in rep["results"]:
        r.update(throughput=1.0, unit="GB/s", median_s=1e-3)
    return rep


def test_gpu_table_and_markdown_say_what_each_fraction_is_of():
    rep = _timed(synthetic_report())
    rep["settings"]["device"] = "gpu"
    text = bench.table(rep)
    assert re.search(r"\bpeak%", text.splitlines()[0])
    legend = text.splitlines()[-1]
    assert legend.startswith("peak%:") and "fp32 FMA peak, 66.9 TFLOP/s" in legend and \
        "memory bandwidth, 3352 GB/s" in legend
    cpu = dict(synthetic_report(), copy_bandwidth={"gbps": 9.5, "method": "numpy.copyto", "bytes": 64 * 2**20,
                                                   "how": "numpy.copyto of 64 MiB, best of 5, one thread"})
    assert "copy bandwidth 10 GB/s, the pools' % copy BW reference (numpy.copyto of 64 MiB, best of 5, one " \
           "thread)" in bench.markdown([cpu])


def test_no_peer_line_says_the_ratio_needs_a_peer_and_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out = _bench(capsys, "--no-peers", "--filter", "conv1d:base", "--max-cases", "1", "--no-plot",
                     "--no-json")
    (line,) = [s for s in out.splitlines() if "ratios need a peer" in s]
    assert line.startswith("vs peer: '-' everywhere, no peer: none was run (--no-peers)")
    assert "run without --no-peers" in line and "pip install torch" in line
    monkeypatch.setattr(bench.TorchRunner, "unavailable", lambda self: TORCH_MISSING)
    rc, out = _bench(capsys, "--filter", "conv1d:base", "--max-cases", "1", "--no-plot", "--no-json")
    (line,) = [s for s in out.splitlines() if "ratios need a peer" in s]
    assert f"no peer: torch: {TORCH_MISSING}" in line
    assert "pip install torch for the CPU peer" in line and "CUDA build of torch" in line and "cuDNN" in line
    assert bench.report.no_peer_line(synthetic_report()) is None                   # a peer was timed
    gpu = dict(synthetic_report(), settings={"device": "gpu"},
               results=[r for r in synthetic_report()["results"] if r["kind"] == "fastconv"],
               runners=[{"kind": "peer", "name": "torch-cuda", "available": False, "reason": "no CUDA device"}])
    assert "CUDA build of torch for the cuDNN peer" in bench.report.no_peer_line(gpu)


# ---------------------------------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------------------------------
def _row(case, kind, backend, algo, tp, q, ratio=None, iqr=None, status="ok"):
    """A result row: throughput ``tp`` at a median of 1 s, quartile times ``q`` = (q1_s, q3_s)."""
    return {"case": case, "kind": kind, "backend": backend, "algo": algo, "status": status, "throughput": tp,
            "median_s": 1.0, "q1_s": q[0], "q3_s": q[1], "ratio_to_best_peer": ratio, "ratio_iqr": iqr,
            "unit": "GFLOP/s"}


def _plot_report(peer: bool, runners=None):
    """conv2d at stride 1 and 2 (no padding or dilation sweep), one standard layer, a max pool nothing
    timed; fastconv 'a' at 2 GFLOP/s (quartiles 0.5 s and 2 s: 1 to 4 GFLOP/s) and, with ``peer``, torch
    at 1 GFLOP/s (ratio 2, interquartile range 1.5-3)."""
    def case(name, op, sweeps, source="sweep"):
        return {"name": name, "op": op, "sweeps": sweeps, "source": source}
    cases = [case("c:s1", "conv2d", {"stride": "1"}), case("c:s2", "conv2d", {"stride": "2"}),
             case("net/l", "conv2d", {}, "layers:net"), case("p:s1", "max_pool2d", {"stride": "1"})]
    results = []
    for c in ("c:s1", "c:s2", "net/l"):
        results.append(_row(c, "fastconv", "f", "a", 2.0, (0.5, 2.0), *((2.0, [1.5, 3.0]) if peer else ())))
        if peer:
            results.append(_row(c, "peer", "torch", "aten", 1.0, (0.8, 1.25), 1.0, [1.0, 1.0]))
    results.append(_row("p:s1", "fastconv", "f", "pools", None, (None, None), status="unsupported"))
    if runners is None:
        runners = [{"kind": "peer", "name": "torch", "available": peer, "reason": None if peer else TORCH_MISSING}]
    return {"cases": cases, "results": results, "runners": runners, "settings": {"suite": "quick", "device": "cpu"},
            "machine": {"date": "2026-12-01T00:00:00Z", "cpu_model": "x", "cpu_cores_usable": 2, "gpu": None}}


def _axes(fig):
    return {ax.get_title() or ax.get_xlabel() or "layers": ax for ax in fig.axes}


def _texts(ax):
    return " ".join(t.get_text().replace("\n", " ") for t in ax.texts)


def _bars(ax):
    """[(low, high)] of each error bar of the axes (to 9 decimals)."""
    from matplotlib.container import ErrorbarContainer
    out = []
    for cont in ax.containers:
        if isinstance(cont, ErrorbarContainer):
            for seg in cont.lines[2][0].get_segments():
                out.append(tuple(sorted(round(float(y), 9) for _, y in seg)))
    return sorted(out)


needs_mpl = pytest.mark.skipif(not has("matplotlib"), reason="matplotlib is not installed")


@needs_mpl
def test_plot_with_a_peer_has_spreads_zero_based_throughput_and_log_ratios():
    fig, why = bench.plots.figure(_plot_report(peer=True))
    assert why is None
    ax = fig.axes
    thr, ratio = ax[0], ax[1]                               # conv2d: stride, its ratio panel beneath
    assert thr.get_title() == "conv2d: stride" and ratio.get_xlabel() == "stride"
    assert _bars(thr) == [(0.8, 1.25)] * 2 + [(1.0, 4.0)] * 2     # each runner at each stride: its quartiles
    assert thr.get_ylim()[0] == 0 and thr.get_yscale() == "linear"
    assert ratio.get_yscale() == "log" and _bars(ratio) == [(1.5, 3.0)] * 2
    lo, hi = ratio.get_ylim()
    assert lo <= 0.5 and hi >= 3.0                         # 1x and the whole spread in view
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ratio.lines)     # the line at 1x
    layers = fig.axes[-1]
    assert layers.get_title().startswith("standard layers") and layers.get_yscale() == "log"
    assert _bars(layers) == [(1.5, 3.0)] and len(layers.patches) == 1
    for a in fig.axes:                                     # every panel draws something or says why not
        assert a.containers or a.texts, a.get_title()
    texts = {a.get_title(): _texts(a) for a in fig.axes}
    assert texts["conv2d: padding"] == "no padding sweep in this run"
    assert texts["max_pool2d: stride"] == "nothing timed (unsupported)"
    pool_ratio = fig.axes[fig.axes.index(next(a for a in fig.axes if a.get_title() == "max_pool2d: stride")) + 1]
    assert _texts(pool_ratio) == "nothing timed (unsupported)" and not pool_ratio.lines    # no axis, no 1x line


@needs_mpl
@pytest.mark.parametrize("runners, why", [(None, f"no peer: torch: {TORCH_MISSING}"),
                                          ([], "no peer: none was run (--no-peers)")])
def test_plot_without_a_peer_labels_the_ratio_panels(runners, why):
    fig, _ = bench.plots.figure(_plot_report(peer=False, runners=runners))
    thr, ratio, layers = fig.axes[0], fig.axes[1], fig.axes[-1]
    assert _bars(thr) == [(1.0, 4.0)] * 2 and thr.get_ylim()[0] == 0       # throughput as with a peer
    for a in (ratio, layers):
        assert why in _texts(a) and not a.containers


# ---------------------------------------------------------------------------------------------------
# User-facing text speaks of the product
# ---------------------------------------------------------------------------------------------------
#: words of the project's own process, which a user reading fastconv's help or output has no use for
INTERNAL = re.compile(r"\b(issues?|sessions?|lead|helpers?|brief|prompts?|tickets?|todo|fixme|xxx|we|our)\b|"
                      r"GPU-performance|#\d+", re.IGNORECASE)


def _helps(monkeypatch) -> dict:
    monkeypatch.setenv("COLUMNS", "2000")              # one line per option: nothing hyphenated by the wrap
    ap = cli.parser()
    subs = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {"fastconv": ap.format_help(), **{f"fastconv {n}": p.format_help() for n, p in subs.items()}}


def test_help_speaks_of_the_product(monkeypatch):
    helps = _helps(monkeypatch)
    assert set(helps) == {"fastconv", "fastconv bench", "fastconv summary", "fastconv info", "fastconv warmup"}
    for name, text in helps.items():
        assert not INTERNAL.search(text), (name, INTERNAL.search(text).group(0))
    assert "summary" in helps["fastconv"].split("positional arguments")[0]    # the description names every command
    bench_help = helps["fastconv bench"]
    assert "./fastconv-results" in bench_help and ".gitignore" in bench_help     # where the files go


def test_report_text_speaks_of_the_product():
    rep = _timed(synthetic_report())            # the console of a real run: in the copy% test above
    for name, text in (("table", bench.table(rep)), ("summary", bench.summary_text(bench.table_summary(rep))),
                       ("markdown", bench.markdown([rep])), ("no-peer line", bench.report.no_peer_line(
                           dict(rep, results=[r for r in rep["results"] if r["kind"] == "fastconv"], runners=[])))):
        assert not INTERNAL.search(text), (name, INTERNAL.search(text).group(0))
