"""Every lazy import of fastconv goes through :func:`import_module`: a failed or interrupted import is
retried cleanly on the next call.

Python removes a module whose own code fails (or is interrupted: Ctrl-C) from ``sys.modules``, but keeps
the submodules it had finished importing. The next import then builds a fresh parent package while its
children stay registered, and the fresh parent never gets them as attributes: Numba's ``import numba``
then fails for good with ``module 'numba' has no attribute 'core'``. :func:`import_module` removes those
orphans -- modules whose parent package is no longer in ``sys.modules`` -- when an import fails, so the
next attempt starts from where the first one did. Complete packages imported along the way (NumPy's C
extensions, which cannot be loaded twice, among them) are kept: only orphans are removed, and an orphan
is broken anyway. No snapshot is taken and no lock: a failure that registered modules scans sys.modules
once; the import system's own per-module locks order concurrent imports (a package is registered before its children, so a concurrent import never looks like an orphan).
"""
from __future__ import annotations

import importlib
import sys


def orphans():
    """The modules in sys.modules whose parent package is not (directly, or through a parent that is itself
    an orphan): what a failed import leaves behind."""
    names = set(sys.modules)
    out = set()
    for name in sorted(names, key=len):        # parents before children, so orphans cascade in one pass
        parent = name.rpartition(".")[0]
        if parent and (parent not in names or parent in out):
            out.add(name)
    return out


def drop_orphans() -> None:
    """Remove every orphan from sys.modules (each is broken: its parent, imported again, never gets it)."""
    for name in orphans():
        sys.modules.pop(name, None)


def guard_failure(before: int) -> None:
    """After a failed import or probe that began with ``len(sys.modules) == before``: drop the orphans if
    it registered any module (an orphan is a module registered during the attempt whose parent's own
    import failed, so none can exist when the count did not grow; this keeps the common failure -- a
    package that is not installed -- free of a scan)."""
    if len(sys.modules) > before:
        drop_orphans()


def import_module(name: str):
    """``importlib.import_module(name)``; on any failure (an exception, KeyboardInterrupt) the half-imported
    modules it leaves are removed before the error propagates, so that a later call imports afresh."""
    mod = sys.modules.get(name)
    if mod is not None and not getattr(getattr(mod, "__spec__", None), "_initializing", False):
        return mod
    before = len(sys.modules)
    try:
        return importlib.import_module(name)
    except BaseException:
        guard_failure(before)
        raise
