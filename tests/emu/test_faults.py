"""Faults inside kernels fail the launch with EmuError; the process and the module survive."""
import numpy as np
import pytest

from fastconv.emu import EmuError, EmuModule


@pytest.fixture(scope="module")
def flt(kernel_path):
    return EmuModule(path=kernel_path("faults.cu"))


def test_null_pointer_write(flt):
    with pytest.raises(EmuError, match=r"block \(0,0,0\) thread \(5,0,0\): invalid memory access \(SIGSEGV\) "
                                       r"at address (0x0|\(nil\))"):
        flt.get_function("null_write")(1, 32, (np.zeros(32, np.float32),))


def test_integer_division_by_zero(flt):
    out = np.zeros(32, np.int32)
    flt.get_function("int_div")(1, 32, (out, np.int32(3)))
    assert out[31] == 10
    with pytest.raises(EmuError, match="SIGFPE"):
        flt.get_function("int_div")(1, 32, (out, np.int32(0)))


def test_dynamic_shared_overflow(flt):
    # 64 threads write buf[64 + t]; with shared_mem for 64 floats the writes run into the guard page
    with pytest.raises(EmuError, match=r"past the end of dynamic shared memory: shared_mem=256"):
        flt.get_function("dyn_overflow")(1, 64, (np.zeros(64, np.float32),), shared_mem=256)
    out = np.zeros(64, np.float32)
    flt.get_function("dyn_overflow")(1, 64, (out,), shared_mem=512)
    assert np.isnan(out).all()  # read before written: poison


def test_stack_overflow_in_process(kernel_path):
    bar = EmuModule(path=kernel_path("barriers.cu"))
    with pytest.raises(EmuError, match=r"fiber stack overflow: raise stack_size"):
        bar.get_function("deep_stack")(1, 32, (np.zeros(32, np.float32), np.int32(100)), workers=2)


def test_module_works_after_faults(flt):
    out = np.zeros(64, np.float32)
    for _ in range(3):
        with pytest.raises(EmuError):
            flt.get_function("null_write")(2, 32, (out,), workers=2)
    flt.get_function("past_the_end")(2, 32, (out, np.int32(64), np.int32(0)), workers=2)
    assert (out == 1).all()


@pytest.mark.parametrize("faulthandler", [False, True])
def test_faults_outside_kernels_still_crash(kernel_path, faulthandler):
    # the runtime's signal handler only recovers faults raised by fibers; any other fault goes to
    # the previous handler (Python's faulthandler, or the default action) as if it were not there
    import os
    import subprocess
    import sys
    code = ("import ctypes, numpy as np; from fastconv.emu import EmuModule;"
            f"m = EmuModule(path={kernel_path('faults.cu')!r});"
            "o = np.zeros(32, np.float32); m.get_function('past_the_end')(1, 32, (o, np.int32(32), np.int32(0)));"
            "ctypes.string_at(0)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    args = [sys.executable] + (["-X", "faulthandler"] if faulthandler else []) + ["-c", code]
    proc = subprocess.run(args, env=env, capture_output=True, timeout=60)
    assert proc.returncode == -11
    assert (b"Segmentation fault" in proc.stderr) == faulthandler


def test_fault_recovery_with_ucontext_fibers(kernel_path):
    mod = EmuModule(path=kernel_path("faults.cu"), fibers="ucontext")
    with pytest.raises(EmuError, match=r"thread \(5,0,0\): invalid memory access"):
        mod.get_function("null_write")(1, 32, (np.zeros(32, np.float32),))
    out = np.zeros(32, np.float32)
    mod.get_function("past_the_end")(1, 32, (out, np.int32(32), np.int32(0)))
    assert (out == 1).all()


@pytest.mark.parametrize("offset,mode,match", [
    (1, True, r"argument 0 \(`float\*`, float32 array of 100 elements\): access 0 bytes past its end \(element 100\)"),
    (7, "end", r"access 8 bytes past its end \(element 102\)"),  # reverse order: thread 95 of block 2 is first out
    (-1, "start", r"access 4 bytes before its start \(element -1\)"),
])
def test_guarded_out_of_bounds(flt, offset, mode, match):
    out = np.zeros(100, np.float32)
    with pytest.raises(EmuError, match=match):
        flt.get_function("past_the_end")(4, 32, (out, np.int32(100), np.int32(offset)), guard=mode,
                                         order="reverse", workers=1)


def test_guarded_in_bounds_copies_back(flt, kernel_path):
    out = np.zeros(100, np.float32)
    flt.get_function("past_the_end")(4, 32, (out, np.int32(99), np.int32(1)), guard=True)
    assert out[0] == 0 and (out[1:] == 1).all()
    # the same array passed three times shares one guarded copy: in-place a = a + a
    vadd = EmuModule(path=kernel_path("vector_add.cu")).get_function("vadd_plain")
    a = np.arange(10, dtype=np.float32)
    vadd(1, 32, (a, a, a, np.int32(10)), guard="start")
    np.testing.assert_array_equal(a, 2 * np.arange(10))
    with pytest.raises(ValueError, match="overlap partially"):
        vadd(1, 32, (a[:8], a[2:], np.zeros(8, np.float32), np.int32(8)), guard=True)


def test_guard_from_environment(flt, monkeypatch):
    monkeypatch.setenv("FASTCONV_EMU_GUARD", "1")
    out = np.zeros(100, np.float32)
    with pytest.raises(EmuError, match="past its end"):
        flt.get_function("past_the_end")(4, 32, (out, np.int32(100), np.int32(1)))


def test_the_test_suite_launches_every_kernel_guarded(flt):
    """tests/conftest.py makes the guard the suite's default, so an out-of-bounds access in any kernel test
    (every tests/cuda file, the backend tests on cuda-emu) fails that test by name: a launch with no guard=
    argument, in the suite's own environment, names the write one past the end."""
    import os
    g = os.environ.get("FASTCONV_EMU_GUARD")
    assert g is not None, "tests/conftest.py no longer makes FASTCONV_EMU_GUARD=1 the suite's default"
    if g not in ("1", "end"):
        pytest.skip(f"this run asked for FASTCONV_EMU_GUARD={g} instead of the suite's default guard")
    out = np.zeros(100, np.float32)
    with pytest.raises(EmuError, match="past its end"):
        flt.get_function("past_the_end")(4, 32, (out, np.int32(100), np.int32(1)))


@pytest.mark.parametrize("kernel,args", [
    ("spin_on_neighbour", (np.zeros(32, np.int32),)),
    ("endless_math", (np.zeros(32, np.float32), np.int32(-1))),
])
def test_timeout_turns_a_hang_into_an_error(flt, kernel, args):
    import time
    t = time.perf_counter()
    with pytest.raises(EmuError, match=r"timeout after 0.3\d* s: block \(\d,0,0\) thread \(\d+,0,0\) "
                                       r"was still running"):
        flt.get_function(kernel)(2, 32, args, timeout=0.3, workers=2)
    assert time.perf_counter() - t < 5
    ok = np.full(32, 0.5, np.float32)
    flt.get_function("endless_math")(1, 32, (ok, np.int32(3)), timeout=5)  # finishes in time: no error
    assert np.isfinite(ok).all()


def test_timeout_from_environment(flt, monkeypatch):
    monkeypatch.setenv("FASTCONV_EMU_TIMEOUT", "0.2")
    with pytest.raises(EmuError, match="timeout after 0.2"):
        flt.get_function("spin_on_neighbour")(1, 32, (np.zeros(32, np.int32),))


@pytest.mark.parametrize("value", ["inf", "1e12"])
def test_timeout_of_inf_or_beyond_the_watchdog_clock_means_none(flt, monkeypatch, value):
    """inf, or more seconds than the watchdog's nanosecond clock holds, mean no timeout (they timed every
    launch out at once); the timeout= argument follows the same rule."""
    monkeypatch.setenv("FASTCONV_EMU_TIMEOUT", value)
    ok = np.full(32, 0.5, np.float32)     # 20000 steps: long enough for the watchdog to fire first
    flt.get_function("endless_math")(1, 32, (ok, np.int32(20000)))
    assert np.isfinite(ok).all()
    monkeypatch.delenv("FASTCONV_EMU_TIMEOUT")
    flt.get_function("endless_math")(1, 32, (ok, np.int32(20000)), timeout=float(value))
