"""Every lazy import of fastconv goes through :func:`import_module`: a failed or interrupted import is
retried cleanly on the next call.

Python removes a module whose own code fails (or is interrupted: Ctrl-C) from ``sys.modules``, but keeps
the submodules it had finished importing. The next import then builds a fresh parent package while its
children stay registered, and the fresh parent never gets them as attributes: Numba's ``import numba``
then fails for good with ``module 'numba' has no attribute 'core'``. :func:`import_module` removes those
orphans -- modules whose parent package is no longer in ``sys.modules`` -- when an import fails, so the
next attempt starts from where the first one did. Complete packages imported along the way (NumPy's C
extensions, which cannot be loaded twice, among them) are kept: only orphans are removed, and an orphan
is broken anyway. No lock is taken (the import system's own per-module locks order concurrent imports,
and a package is registered before its children, so a concurrent import never looks like an orphan).
"""
from __future__ import annotations

import importlib
import sys
from typing import Iterable


def _orphans(names: Iterable[str]):
    """Those of ``names`` (modules in sys.modules) with an ancestor package missing from sys.modules."""
    out = []
    for name in names:
        parts = name.split(".")
        if any(".".join(parts[:i]) not in sys.modules for i in range(1, len(parts))):
            out.append(name)
    return out


def drop_orphans(since) -> None:
    """Remove from sys.modules the orphans among the modules registered after the snapshot ``since``
    (a set of module names)."""
    for name in _orphans([n for n in list(sys.modules) if n not in since]):
        sys.modules.pop(name, None)


def import_module(name: str):
    """``importlib.import_module(name)``; on any failure (an exception, KeyboardInterrupt) the half-imported
    modules it leaves are removed before the error propagates, so that a later call imports afresh."""
    mod = sys.modules.get(name)
    if mod is not None and not getattr(getattr(mod, "__spec__", None), "_initializing", False):
        return mod
    before = set(sys.modules)
    try:
        return importlib.import_module(name)
    except BaseException:
        drop_orphans(before)
        raise
