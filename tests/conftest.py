"""Settings for the whole test suite."""
import os

# Kernels compile all through the suite: the one line a process's first compile says on stderr would only be
# noise here (tests/test_warmup.py unsets it where that line is what it checks)
os.environ.setdefault("FASTCONV_QUIET", "1")
