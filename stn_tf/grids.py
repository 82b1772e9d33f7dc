"""The regular target grid and output sizes: the coordinate convention's one
definition, below the sampler (``sampler.py``) and the transforms (``transforms.py``),
which both use it.

Convention: coordinates normalised to [-1, 1], corner-aligned (pixel ``i`` of ``n``
at ``-1 + 2 i / (n - 1)``, 0 when ``n == 1``), last axis ``(x, y[, z])``; sizes are
``(H, W)`` or ``(D, H, W)``. ``transforms.regular_grid`` and
``transforms.check_output_size`` are these functions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["check_output_size", "regular_grid"]


def regular_grid(output_size: Sequence[int], dtype=tf.float32) -> tf.Tensor:
    """The regular target grid G of an output, ``[*output_size, ndim]``.

    Convention: corner-aligned, pixel ``i`` of ``n`` at ``-1 + 2 i / (n - 1)``
    (0 when ``n == 1``); last axis ``(x, y[, z])``; ``output_size`` is ``(H, W)``
    or ``(D, H, W)``.

    Args:
        output_size: ``(H', W')`` or ``(D', H', W')``, positive integers.
        dtype: float dtype of the grid.

    Returns:
        ``[H', W', 2]`` or ``[D', H', W', 3]`` constant coordinates.
    """
    try:
        ndim = len(output_size)
    except TypeError:
        ndim = 2  # not a sequence: check_output_size says what it wants
    size = check_output_size(output_size, ndim=ndim)
    return tf.constant(_regular_grid_np(size), dtype=dtype)


@functools.cache
def _regular_grid_np(size):
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in size]
    mesh = np.meshgrid(*axes, indexing="ij")  # slowest axis first: (z,) y, x
    return np.stack(mesh[::-1], axis=-1)  # last axis (x, y[, z])


def check_output_size(output_size, ndim: int) -> tuple[int, ...]:
    """Validates an output size of ``ndim`` positive integers; returns it as a tuple."""
    try:
        size = tuple(int(s) for s in output_size)
        ok = len(size) == ndim and all(s == o for s, o in zip(size, output_size))
    except (TypeError, ValueError):
        ok = False
    if not ok or ndim not in (2, 3) or min(size) < 1:
        names = "(H, W)" if ndim == 2 else "(D, H, W)"
        raise ValueError(
            f"output_size must be {ndim} positive integers {names}. "
            f"Received: output_size={output_size!r}"
        )
    return size
