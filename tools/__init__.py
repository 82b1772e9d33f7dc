"""Benchmarks, reproductions and helpers, run as ``python -m tools.<name>``
from the repository root."""

import os

# The tools train and time what users run: TensorFlow's oneDNN CPU kernels on, as
# ``import stn_tf`` asks for them (see stn_tf/__init__.py), even where a tool imports
# TensorFlow first. A user's own TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
