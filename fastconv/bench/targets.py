"""Goals a per-table summary is checked against. The library holds none: they are data, read from the file
named by ``--targets FILE`` (a project keeps its own, e.g. ``benchmarks/targets.json``).

A targets file is a JSON object ``{table: goal}``, each goal an object with any of

    geomean               the lowest acceptable geometric-mean ratio (peer time / fastconv time)
    min                   the lowest acceptable ratio of any one layer
    median_copy_fraction  the lowest acceptable median fraction of the measured copy bandwidth (pools)
    layers                the goal is about a subset of the table's layers: one of :data:`SUBSETS`
    tables                the goal is about several tables' layers together (a list of table names): the
                          summary gets an entry of its own named by the goal's key, which should not be a
                          table's name (e.g. one geomean over the ResNet-50 and MobileNet layers of
                          suite cpu-layers)
    op                    the op group the goal is about (:data:`OPS`; default: the forward groups, conv,
                          pool and network), e.g. ``conv_input`` for a goal about data gradients

Tables without a goal are summarised without one. A goal with ``layers`` is checked on that subset only,
which the summary then reports as an entry of its own beside the whole table.
"""
from __future__ import annotations

import json
from typing import Dict, Optional

from .cases import CONV_OPS

#: the goal keys that are thresholds, checked as summary entry value >= goal
THRESHOLDS = ("geomean", "min", "median_copy_fraction")
#: the op groups a goal's ``op`` can name (:func:`.report.op_group`)
OPS = ("conv", "pool", "network", "conv_input", "conv_weight", "pool_backward")


def _is_depthwise(case: dict) -> bool:
    """One input channel per group, as ``ConvSpec.is_depthwise`` says (a JSON case record holds no spec)."""
    g = case.get("kwargs", {}).get("groups", 1)
    return case["op"] in CONV_OPS and case["input_shape"][1] == g


#: the named subsets of a table a goal can be about (a case record of the JSON -> in the subset)
SUBSETS = {"depthwise": _is_depthwise}


def check_targets(targets: dict, where: str = "targets") -> Dict[str, dict]:
    """``targets`` validated (ValueError naming what is wrong): a table -> goal mapping as described in the
    module docstring."""
    if not isinstance(targets, dict):
        raise ValueError(f"{where}: expected a JSON object of table -> goal, got {type(targets).__name__}")
    for table, goal in targets.items():
        if not isinstance(goal, dict):
            raise ValueError(f"{where}: the goal of table {table!r} is not an object")
        for key, value in goal.items():
            if key == "layers":
                if value not in SUBSETS:
                    raise ValueError(f"{where}: {table}.layers is {value!r}; known subsets: {', '.join(SUBSETS)}")
            elif key == "tables":
                if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
                    raise ValueError(f"{where}: {table}.tables is {value!r}, not a list of table names")
            elif key == "op":
                if value not in OPS:
                    raise ValueError(f"{where}: {table}.op is {value!r}; the op groups are {', '.join(OPS)}")
            elif key not in THRESHOLDS:
                raise ValueError(f"{where}: {table} has unknown key {key!r}; goals are "
                                 f"{', '.join(THRESHOLDS + ('layers', 'tables', 'op'))}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: {table}.{key} is {value!r}, not a number")
    return targets


def load_targets(path: str) -> Dict[str, dict]:
    """The goals in the JSON file at ``path``; OSError or ValueError (naming the file) when it cannot be used."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    return check_targets(data, path)


def target_text(goal: Optional[dict], peer: str) -> Optional[str]:
    """The goal in words, e.g. ``geomean >= 1x torch-cuda, no layer < 0.7x``."""
    if not goal:
        return None
    parts = []
    if "geomean" in goal:
        parts.append(f"geomean >= {goal['geomean']:g}x {peer}")
    if "min" in goal:
        parts.append(f"no layer < {goal['min']:g}x")
    if "median_copy_fraction" in goal:
        parts.append(f"median >= {100 * goal['median_copy_fraction']:.0f}% of copy bandwidth")
    return (f"{goal['op']}: " if "op" in goal else "") + ", ".join(parts)


def target_met(goal: dict, entry: dict) -> Optional[bool]:
    """Whether summary ``entry`` meets ``goal``: False when a measured figure misses it, None when it cannot
    be told (a layer not timed, no copy-bandwidth reference), else True."""
    got = [entry.get(k) >= v if entry.get(k) is not None else None for k, v in goal.items() if k in THRESHOLDS]
    if False in got:
        return False
    if None in got or entry["timed"] < entry["layers"]:
        return None
    return True
