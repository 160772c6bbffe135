"""CUDA C sources of fastconv's kernels, installed as the package data of ``fastconv.kernels``.

The sources live at the repository's top level (``kernels/*.cu``) and are mapped into the installed
package by setup.py, so ``pip install .`` and ``pip install -e .`` both find them through
``importlib.resources.files("fastconv.kernels")``.
"""
