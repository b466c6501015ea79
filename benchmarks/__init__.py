"""Benchmarks of pybind_serve beside its anchors: ``python benchmarks/suite.py`` (see benchmarks/README.md)."""
