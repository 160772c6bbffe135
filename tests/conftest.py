"""Settings for the whole test suite."""
import os

# Kernels compile all through the suite: the one line a process's first compile says on stderr would only be
# noise here (tests/test_warmup.py unsets it where that line is what it checks)
os.environ.setdefault("FASTCONV_QUIET", "1")

# Every emulated kernel launch in the suite runs on guarded copies of its buffers (each ends at a page that
# faults), so a write or read past the end of a buffer fails the launch, and the test that made it, by name,
# instead of corrupting the heap and crashing the interpreter at exit. The guard costs about 8% of the
# emulator tests' time. FASTCONV_EMU_GUARD=0 turns it off; =start guards the other end.
os.environ.setdefault("FASTCONV_EMU_GUARD", "1")


def pytest_collection_modifyitems(session, config, items):
    """Run tests/cuda/test_compile.py's tests last. Their NVRTC and ptxas jobs start when the run is collected
    (below) and take minutes of CPU; reached in file order, early in the run, its tests waited about 75 s for
    jobs still running, while the second core later sat idle once the background Numba warmup (.ci/run)
    ended. Last, the jobs have the whole run to finish on that core. Order only: every test still runs."""
    last = [i for i in items if _is_compile_test(i)]
    if last:
        items[:] = [i for i in items if not _is_compile_test(i)] + last


def _is_compile_test(item) -> bool:
    module = getattr(item, "module", None)
    return module is not None and module.__name__.endswith("cuda.test_compile")


def pytest_collection_finish(session):
    """Start tests/cuda/test_compile.py's NVRTC and ptxas jobs as soon as the run is collected, not when its
    first test is reached: they run on background threads (NVRTC through ctypes and ptxas in a subprocess
    release the GIL), so on a 2-core machine they use the core the mostly single-threaded tests before them
    leave idle. The tests still wait for, and judge, each job's own result."""
    for module in {item.module for item in session.items if _is_compile_test(item)}:
        module.start_compiles_early(session.items)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_memo():
    """Each test starts with fastconv's per-call memo empty: a test that changes a module constant a plan
    depends on (a tile size, a workspace cap, a flop threshold) must not be answered by a plan an earlier
    test remembered for the same signature."""
    from fastconv import _memo
    _memo.clear()
    yield
