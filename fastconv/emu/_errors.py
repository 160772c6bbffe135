class EmuError(RuntimeError):
    """A kernel could not be built, or a launch failed (deadlock, divergent barrier, bad mask...)."""
