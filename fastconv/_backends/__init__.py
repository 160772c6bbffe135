"""Backend implementations, one module per backend, imported lazily by fastconv._dispatch."""
