"""Standard network layers: the shape tables and the cases made of their rows.

The tables ship inside the package (``fastconv/bench/shapes/*.csv``, described in its README.md); a run may
read another directory instead (``--shapes DIR``, else ``$FASTCONV_SHAPES``). :func:`shapes_dir` is the one
place that decides which. Columns: ``name,C,H,W,K,R,S,stride,pad,dilation,groups`` for conv layers,
``name,C,H,W,kind,kernel,stride,pad`` for pools (``kind``: max or avg); the batch is the benchmark's choice.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .. import _config
from .cases import SIZES, Builder, Case

#: the tables shipped with the package
SHIPPED_SHAPES = Path(__file__).resolve().parent / "shapes"


def shapes_dir(override: Optional[str] = None) -> Path:
    """The directory the standard layer tables are read from: ``override`` (``--shapes DIR``), else
    ``$FASTCONV_SHAPES``, else the tables shipped in the package."""
    if override:
        return Path(override)
    env = _config.get("FASTCONV_SHAPES")
    return Path(env) if env else SHIPPED_SHAPES


def layer_tables(shapes: Optional[str] = None,
                 names: Optional[Sequence[str]] = None) -> Tuple[str, Dict[str, List[dict]]]:
    """(the directory, {table name: rows}) of every ``*.csv`` in :func:`shapes_dir`, or of the tables
    ``names`` in that order. FileNotFoundError when the directory, or a named table, is missing."""
    d = shapes_dir(shapes)
    if not d.is_dir():
        raise FileNotFoundError(f"shapes directory {d} (from --shapes or $FASTCONV_SHAPES) does not exist")
    tables = {}
    for path in sorted(d.glob("*.csv")):
        with open(path, newline="") as f:
            tables[path.stem] = list(csv.DictReader(f))
    if not tables:
        raise FileNotFoundError(f"shapes directory {d} holds no *.csv layer table")
    if names is not None:
        missing = [n for n in names if n not in tables]
        if missing:
            raise FileNotFoundError(f"shapes directory {d} has no {', '.join(n + '.csv' for n in missing)}")
        tables = {n: tables[n] for n in names}
    return str(d), tables


def _conv_kwargs(row: dict) -> dict:
    return dict(stride=int(row["stride"]), padding=int(row["pad"]), dilation=int(row["dilation"]),
                groups=int(row["groups"]))


def layer_cases(device: str = "cpu", n: Optional[int] = None, table_batch: Optional[Dict[str, int]] = None,
                shapes: Optional[str] = None, tables: Optional[Sequence[str]] = None,
                variants: Sequence[str] = ()) -> List[Case]:
    """conv2d / max_pool2d / avg_pool2d cases of the standard layers (every table, or ``tables``) at batch
    ``table_batch[table]``, else ``n``, else the device's default. The 3x3 conv layers of the tables named in
    ``variants`` (R = 3) also get a stride-2 copy (``<layer>_s2``) and a dilation-2 copy with padding 2
    (``<layer>_d2``), after the table's own rows."""
    n = n or SIZES[device]["layers_N"]
    _, rows_of = layer_tables(shapes, tables)
    b = Builder()
    for table, rows in rows_of.items():
        n_table = (table_batch or {}).get(table, n)
        source = f"layers:{table}"

        def conv(name, row, **changes):
            C, H, W, g = int(row["C"]), int(row["H"]), int(row["W"]), int(row["groups"])
            b.add("conv2d", "layer", name, (n_table, C, H, W), dict(_conv_kwargs(row), **changes),
                  (int(row["K"]), C // g, int(row["R"]), int(row["S"])), name=f"{table}/{name}", source=source)

        for row in rows:
            if "K" in row:
                conv(row["name"], row)
            elif "kind" in row:
                op = {"max": "max_pool2d", "avg": "avg_pool2d"}[row["kind"]]
                kw = dict(kernel_size=int(row["kernel"]), stride=int(row["stride"]), padding=int(row["pad"]))
                b.add(op, "layer", row["name"], (n_table, int(row["C"]), int(row["H"]), int(row["W"])), kw,
                      name=f"{table}/{row['name']}", source=source)
        if table in variants:
            for row in rows:
                if "K" in row and int(row["R"]) == 3:
                    conv(row["name"] + "_s2", row, stride=2)
                    conv(row["name"] + "_d2", row, dilation=2, padding=2)
    return list(b.cases.values())
