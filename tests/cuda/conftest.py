"""Fixtures of the CUDA family tests: ``target`` (every kernel runs on the emulator in three thread orders
and, when there is one, on the GPU) and ``backend`` (the public API on "cuda-emu" and "cuda")."""
from __future__ import annotations

import pytest

from fastconv import _dispatch

from .common import TARGETS, gpu_setup_or_skip, target_id


@pytest.fixture(scope="module", params=TARGETS, ids=target_id)
def target(request):
    backend, order = request.param
    why = _dispatch.availability(backend)
    gpu_setup_or_skip(backend, why)
    if why is not None:
        if backend == "cuda":
            pytest.skip(f"no GPU here, so backend 'cuda' is not tested on this machine ({why}); "
                        f"the same kernels ran through 'cuda-emu'")
        pytest.skip(f"backend {backend!r} unavailable: {why}")
    return request.param


@pytest.fixture(scope="module", params=["cuda-emu", "cuda"])
def backend(request):
    """A backend name, for the public-API tests (thread orders are covered by the kernel tests)."""
    why = _dispatch.availability(request.param)
    gpu_setup_or_skip(request.param, why)
    if why is not None:
        pytest.skip(f"backend {request.param!r} unavailable here ({why})")
    return request.param


@pytest.fixture
def index64(monkeypatch):
    """Launch the int64-index instantiations even for small problems."""
    from fastconv._cuda import plan
    monkeypatch.setattr(plan, "_force_index64", True)
