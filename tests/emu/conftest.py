import os

import pytest

from fastconv.emu import available

KERNELS = os.path.join(os.path.dirname(__file__), "kernels")

ok, reason = available()
if not ok:
    pytest.skip(f"CUDA emulator unavailable: {reason}", allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def emu_cache(tmp_path_factory):
    """A fresh build cache for the session, so the tests see real builds and hits."""
    d = str(tmp_path_factory.mktemp("emu-cache"))
    old = os.environ.get("FASTCONV_EMU_CACHE")
    os.environ["FASTCONV_EMU_CACHE"] = d
    yield d
    if old is None:
        os.environ.pop("FASTCONV_EMU_CACHE", None)
    else:
        os.environ["FASTCONV_EMU_CACHE"] = old


@pytest.fixture(scope="session")
def kernel_path():
    """kernel_path("x.cu") -> absolute path of a test kernel file."""
    return lambda name: os.path.join(KERNELS, name)
