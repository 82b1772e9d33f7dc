"""Benchmarks, reproductions and helpers, run as ``python -m tools.<name>``
from the repository root."""
