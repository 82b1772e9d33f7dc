"""Parameterised sampling grids (STN §3.2, A.3): params -> source coordinates.

Convention:
    - Coordinates are normalised to [-1, 1], the last axis is ``(x, y)`` (``(x, y, z)``
      in 3D), corner-aligned (``align_corners=True``: -1 and +1 are the centres of
      the first and last pixels), as in ``sampler.py``.
    - θ maps *output* (target) points to *source* points (inverse warping, eq. 1):
      the output pixel at target point ``p`` reads the input at ``T_θ(p)``.
    - Grids are channels-last: ``[B, H', W', 2]`` or ``[B, D', H', W', 3]``.

Transforms and their parameter vectors (``[B, P]``):

======== == ========================================================================
name      P  parameters
======== == ========================================================================
affine    6  rows of ``[[θ11 θ12 θ13], [θ21 θ22 θ23]]`` (eq. 1); ``[B, 2, 3]`` also taken
attention 3  ``(s, tx, ty)``: isotropic scale and translation (eq. 2)
projective 8 first 8 entries of the row-major 3x3 homography whose last entry is 1
tps      2K displacements ``(dx, dy)`` of K control points on a regular grid, raster
            order (y slow, x fast); the target control points themselves can be given
            (and learned), the paper's ``T = M_θ B`` with B learned
affine3d 12 rows of the 3x4 matrix of eq. 10; ``[B, 3, 4]`` also taken
======== == ========================================================================

Every grid is exact at the identity parameters: the identity grid equals the
regular target grid to the last bit. Only plain TF ops are used (no ``tf.linalg``
on the fixed-control-point path), so grids run in tf.data, XLA and TFLite.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from stn_tf import sampler
from stn_tf.grids import _regular_grid_np, check_output_size, regular_grid

__all__ = [
    "Transform",
    "TRANSFORMS",
    "get_transform",
    "regular_grid",
    "check_output_size",
    "affine_points",
    "attention_points",
    "projective_points",
    "tps_points",
    "affine3d_points",
    "affine_grid",
    "attention_grid",
    "projective_grid",
    "tps_grid",
    "affine3d_grid",
    "tps_control_points",
    "to_matrix",
    "from_matrix",
    "AFFINE_TRANSFORMS",
    "warp",
    "affine_matrix",
    "invert",
    "compose",
    "output_corners",
    "affine_from_pixels",
    "projective_from_points",
]

# Below this |w| a projective point is treated as lying at infinity (read as 0).
_PROJECTIVE_MIN_W = 1e-6
# Projective points farther out than this read zeros anyway; capping them keeps
# the gradient (num / w**2) finite.
_PROJECTIVE_MAX_COORD = 1e6
# Where a point at infinity is sent: far enough outside [-1, 1] to read zeros.
_OUTSIDE = -4.0


# --------------------------------------------------------------------------------------
# Parameter checks


def _as_params(params, num_params, name, matrix_shape=None):
    """Validates params; returns a float32/float64 ``[B, P]`` tensor."""
    params = tf.convert_to_tensor(params)
    if not params.dtype.is_floating:
        raise ValueError(
            f"{name} parameters must be floating point. "
            f"Received: params.dtype={params.dtype.name}"
        )
    if params.dtype not in (tf.float32, tf.float64):
        params = tf.cast(params, tf.float32)  # float16/bfloat16 heads
    shape = params.shape
    if (
        matrix_shape is not None
        and shape.rank == 3
        and tuple(shape[1:]) == matrix_shape
    ):
        return tf.reshape(params, [-1, num_params])
    if shape.rank != 2 or shape[-1] != num_params:
        expected = f"[B, {num_params}]"
        if matrix_shape is not None:
            expected += f" or [B, {matrix_shape[0]}, {matrix_shape[1]}]"
        raise ValueError(
            f"{name} parameters must have shape {expected}. Received: params.shape={shape}"
        )
    return params


def _as_points(points, ndim, params):
    """Target points as ``[1 or B, N, ndim]`` in the dtype of ``params`` ``[B, P]``."""
    points = tf.convert_to_tensor(points)
    if points.shape.rank == 2:
        points = tf.expand_dims(points, 0)
    if points.shape.rank != 3 or points.shape[-1] != ndim:
        raise ValueError(
            f"points must have shape [N, {ndim}] or [B, N, {ndim}]. "
            f"Received: points.shape={points.shape}"
        )
    batch, points_batch = params.shape[0], points.shape[0]
    if batch is not None and points_batch not in (None, 1, batch):
        raise ValueError(
            "points must be shared ([N, d]) or one set per parameter vector. Received: "
            f"params.shape={params.shape}, points.shape={points.shape}"
        )
    return tf.cast(points, params.dtype)


def _columns(params):
    """``[B, P]`` -> P tensors of shape ``[B, 1]`` (broadcast over points)."""
    return tf.unstack(tf.expand_dims(params, -1), axis=1)


# --------------------------------------------------------------------------------------
# Point maps


def affine_points(theta, points) -> tf.Tensor:
    """Maps target points through an affine θ (eq. 1).

    Args:
        theta: ``[B, 6]`` or ``[B, 2, 3]``.
        points: ``[N, 2]`` or ``[B, N, 2]`` target points ``(x, y)``.

    Returns:
        ``[B, N, 2]`` source points.
    """
    theta = _as_params(theta, 6, "affine", matrix_shape=(2, 3))
    p = _as_points(points, 2, theta)
    x, y = p[..., 0], p[..., 1]
    a, b, c, d, e, f = _columns(theta)
    return tf.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def attention_points(params, points) -> tf.Tensor:
    """Maps target points through the attention transform ``(s, tx, ty)`` (eq. 2).

    Args:
        params: ``[B, 3]``.
        points: ``[N, 2]`` or ``[B, N, 2]`` target points.

    Returns:
        ``[B, N, 2]`` source points.
    """
    params = _as_params(params, 3, "attention")
    p = _as_points(points, 2, params)
    s, tx, ty = _columns(params)
    return tf.stack([s * p[..., 0] + tx, s * p[..., 1] + ty], axis=-1)


def projective_points(params, points) -> tf.Tensor:
    """Maps target points through a plane projective transform (homography).

    Points whose homogeneous ``w`` is within 1e-6 of zero lie at infinity: they,
    and points mapped farther than 1e6 (or overflowing), are sent outside the
    image (read as zeros) with zero gradient. Points with ``w < 0`` (beyond the
    horizon of the plane) are divided through like any other.

    Args:
        params: ``[B, 8]``, the row-major homography with its last entry fixed to 1.
        points: ``[N, 2]`` or ``[B, N, 2]`` target points.

    Returns:
        ``[B, N, 2]`` source points.
    """
    params = _as_params(params, 8, "projective")
    p = _as_points(points, 2, params)
    x, y = p[..., 0], p[..., 1]
    a, b, c, d, e, f, g, h = _columns(params)
    nx, ny, w = a * x + b * y + c, d * x + e * y + f, g * x + h * y + 1.0  # [B, N]
    # Points at infinity (|w| ~ 0), with overflowed terms, or landing absurdly far
    # away are sent outside with zero gradient. Both branches of the select are
    # fed safe values, or the unused branch's gradient (num / w**2) is NaN.
    big = np.finfo(params.dtype.as_numpy_dtype).max
    ok = (tf.abs(w) > _PROJECTIVE_MIN_W) & (tf.abs(w) <= big)  # False for NaN
    ok &= (tf.abs(nx) <= big) & (tf.abs(ny) <= big)

    def divide(ok):
        safe_w = tf.where(ok, w, tf.ones_like(w))
        return tf.where(ok, nx, 0.0) / safe_w, tf.where(ok, ny, 0.0) / safe_w

    tx, ty = (tf.stop_gradient(t) for t in divide(ok))
    ok &= (tf.abs(tx) <= _PROJECTIVE_MAX_COORD) & (tf.abs(ty) <= _PROJECTIVE_MAX_COORD)
    safe = tf.stack(divide(ok), axis=-1)  # [B, N, 2]
    ok = tf.expand_dims(ok, -1)
    return tf.where(ok, safe, tf.constant(_OUTSIDE, safe.dtype))


def affine3d_points(theta, points) -> tf.Tensor:
    """Maps 3D target points through a 3D affine θ (eq. 10).

    Args:
        theta: ``[B, 12]`` or ``[B, 3, 4]``.
        points: ``[N, 3]`` or ``[B, N, 3]`` target points ``(x, y, z)``.

    Returns:
        ``[B, N, 3]`` source points.
    """
    theta = _as_params(theta, 12, "affine3d", matrix_shape=(3, 4))
    p = _as_points(points, 3, theta)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    t = _columns(theta)
    return tf.stack(
        [
            t[4 * r] * x + t[4 * r + 1] * y + t[4 * r + 2] * z + t[4 * r + 3]
            for r in range(3)
        ],
        axis=-1,
    )


def tps_control_points(grid_size: int = 4) -> np.ndarray:
    """The default TPS control points: a regular ``grid_size`` x ``grid_size`` grid.

    Returns:
        ``[grid_size**2, 2]`` float64 points ``(x, y)`` in raster order.
    """
    if int(grid_size) != grid_size or grid_size < 2:
        raise ValueError(
            f"grid_size must be an integer >= 2. Received: grid_size={grid_size!r}"
        )
    return _regular_grid_np((int(grid_size), int(grid_size))).reshape(-1, 2)


def tps_points(params, points, control_points=None) -> tf.Tensor:
    """Maps target points through a thin-plate spline.

    The spline sends each target control point ``c_k`` to ``c_k + δ_k`` and is the
    minimal-bending interpolant in between (Bookstein's TPS, ``U(r) = r² log r²``).
    It reproduces affine maps exactly, so every point moves by ``M δ`` with
    ``M = B(points) L⁻¹``, which depends only on the control points. Passing the
    control points as a tensor (e.g. a weight) makes them learnable: the paper's
    ``T = M_θ B`` with B learned.

    Args:
        params: ``[B, 2K]`` or ``[B, K, 2]`` displacements ``δ`` (zeros: identity).
        points: ``[N, 2]`` or ``[B, N, 2]`` target points.
        control_points: ``[K, 2]`` target control points (array or tensor).
            Defaults to the regular grid ``tps_control_points(sqrt(K))``.

    Returns:
        ``[B, N, 2]`` source points.
    """
    params, control = _tps_args(params, control_points)
    p = _as_points(points, 2, params)
    weights = _tps_weights(p, tf.cast(control, params.dtype))  # [1|B, N, K]
    return p + _tps_move(weights, params)


def _tps_args(params, control_points):
    params = tf.convert_to_tensor(params)
    if params.shape.rank == 3 and params.shape[-1] == 2:
        params = tf.reshape(params, [-1, 2 * params.shape[1]])
    if params.shape.rank != 2 or params.shape[-1] is None or params.shape[-1] % 2:
        raise ValueError(
            "tps parameters must have shape [B, 2K] or [B, K, 2]. "
            f"Received: params.shape={params.shape}"
        )
    k = params.shape[-1] // 2
    params = _as_params(params, 2 * k, "tps")
    if control_points is None:
        side = round(k**0.5)
        if side * side != k or side < 2:
            raise ValueError(
                f"tps with {k} control points needs control_points (the default "
                f"grid is square, at least 2x2). Received: params.shape={params.shape}"
            )
        control_points = tps_control_points(side)
    if not tf.is_tensor(control_points):
        control_points = np.asarray(control_points, np.float64)
    if tuple(control_points.shape) != (k, 2):
        raise ValueError(
            f"control_points must have shape [{k}, 2] for {2 * k} tps parameters. "
            f"Received: control_points.shape={tuple(control_points.shape)}"
        )
    return params, control_points


def _tps_move(weights, params):
    """``[1|B, N, K] @ [B, K, 2]`` -> ``[B, N, 2]`` displacement of every point."""
    delta = tf.reshape(params, [-1, params.shape[-1] // 2, 2])
    batch = tf.shape(delta)[0]
    weights = tf.broadcast_to(weights, tf.concat([[batch], tf.shape(weights)[1:]], 0))
    return tf.matmul(weights, delta)


def _tps_kernel(d2):
    """U(r) = r² log r², given r², with U(0) = 0 and a finite gradient there."""
    positive = d2 > 0
    return tf.where(
        positive, d2 * tf.math.log(tf.where(positive, d2, tf.ones_like(d2))), 0
    )


def _squared_distances(points, control):
    """``[..., N, 2]``, ``[K, 2]`` -> ``[..., N, K]``: squared distance of each pair.

    The sum names its axis as a positive number: the TFLite converter folds a
    ``Sum`` over ``axis=-1`` of a constant wrongly (values off by up to 8 for
    a 28x28 grid), and with learned control points this whole computation is
    constant in an exported model (measured on TF 2.21; see tests/test_export).
    """
    diff = points[..., :, None, :] - control  # [..., N, K, 2]
    return tf.reduce_sum(diff**2, axis=diff.shape.rank - 1)


def _tps_weights(points, control):
    """``M = B(points) L⁻¹[:, :K]``: ``[1|B, N, 2]``, ``[K, 2]`` -> ``[1|B, N, K]``."""
    k = control.shape[0]
    dtype = control.dtype
    system_k = _tps_kernel(_squared_distances(control, control))
    poly = tf.concat([tf.ones([k, 1], dtype), control], 1)  # [K, 3]
    system = tf.concat(
        [
            tf.concat([system_k, poly], 1),
            tf.concat([tf.transpose(poly), tf.zeros([3, 3], dtype)], 1),
        ],
        0,
    )  # [K+3, K+3]
    rhs = tf.concat([tf.eye(k, dtype=dtype), tf.zeros([3, k], dtype)], 0)
    inv_k = tf.linalg.solve(system, rhs)  # [K+3, K]
    d2 = _squared_distances(points, control)  # [1|B, N, K]
    basis = tf.concat([_tps_kernel(d2), tf.ones_like(points[..., :1]), points], -1)
    return tf.einsum("bnj,jk->bnk", basis, inv_k)


@functools.lru_cache(maxsize=64)
def _fixed_tps_weights(output_size, control_key):
    """M for a regular output grid and fixed control points, solved once in float64."""
    control = np.asarray(control_key, np.float64).reshape(-1, 2)
    grid = _regular_grid_np(output_size).reshape(1, -1, 2)
    with tf.init_scope():  # eager even while a tf.function is being traced
        return _tps_weights(tf.constant(grid), tf.constant(control)).numpy()


# --------------------------------------------------------------------------------------
# Grids


def _grid(points_fn, params, output_size, ndim):
    size = check_output_size(output_size, ndim)
    targets = _regular_grid_np(size).reshape(-1, ndim)  # [N, ndim]
    coords = points_fn(params, targets)  # [B, N, ndim]
    return tf.reshape(coords, [-1, *size, ndim])


def affine_grid(theta, output_size: Sequence[int]) -> tf.Tensor:
    """Sampling grid of an affine transform (eq. 1).

    Convention: normalised corner-aligned coordinates, last axis ``(x, y)``,
    θ maps output to source.

    Args:
        theta: ``[B, 6]`` or ``[B, 2, 3]``.
        output_size: ``(H', W')``.

    Returns:
        ``[B, H', W', 2]`` source coordinates.
    """
    return _grid(affine_points, theta, output_size, 2)


def attention_grid(params, output_size: Sequence[int]) -> tf.Tensor:
    """Sampling grid of the attention transform ``(s, tx, ty)`` (eq. 2).

    Args:
        params: ``[B, 3]``.
        output_size: ``(H', W')``.

    Returns:
        ``[B, H', W', 2]`` source coordinates.
    """
    return _grid(attention_points, params, output_size, 2)


def projective_grid(params, output_size: Sequence[int]) -> tf.Tensor:
    """Sampling grid of a plane projective transform (8 parameters).

    Args:
        params: ``[B, 8]``.
        output_size: ``(H', W')``.

    Returns:
        ``[B, H', W', 2]`` source coordinates.
    """
    return _grid(projective_points, params, output_size, 2)


def affine3d_grid(theta, output_size: Sequence[int]) -> tf.Tensor:
    """Sampling grid of a 3D affine transform (eq. 10).

    Args:
        theta: ``[B, 12]`` or ``[B, 3, 4]``.
        output_size: ``(D', H', W')``.

    Returns:
        ``[B, D', H', W', 3]`` source coordinates ``(x, y, z)``.
    """
    return _grid(affine3d_points, theta, output_size, 3)


def tps_grid(params, output_size: Sequence[int], control_points=None) -> tf.Tensor:
    """Sampling grid of a thin-plate spline (see ``tps_points``).

    With fixed control points (``None`` or a NumPy array) the spline system is
    solved once, in float64, and the grid is one matmul with a constant: no
    ``tf.linalg`` op reaches the graph, so the grid converts to TFLite builtins.
    A tensor of control points (learnable) is solved in the graph.

    Args:
        params: ``[B, 2K]`` or ``[B, K, 2]`` control-point displacements.
        output_size: ``(H', W')``.
        control_points: ``[K, 2]`` target control points, default a regular grid.

    Returns:
        ``[B, H', W', 2]`` source coordinates.
    """
    size = check_output_size(output_size, 2)
    if control_points is not None and tf.is_tensor(control_points):
        return _grid(
            functools.partial(tps_points, control_points=control_points),
            params,
            size,
            2,
        )
    params, control = _tps_args(params, control_points)
    key = tuple(np.asarray(control, np.float64).ravel().tolist())
    weights = tf.constant(_fixed_tps_weights(size, key), params.dtype)  # [1, N, K]
    targets = tf.constant(_regular_grid_np(size).reshape(1, -1, 2), params.dtype)
    return tf.reshape(targets + _tps_move(weights, params), [-1, *size, 2])


# --------------------------------------------------------------------------------------
# Matrices: drawing, undoing and chaining transforms

_MATRIX_TRANSFORMS = ("affine", "attention", "projective", "affine3d")


def to_matrix(name: str, params) -> tf.Tensor:
    """Homogeneous matrix of a linear transform: ``[B, 3, 3]`` (``[B, 4, 4]`` in 3D).

    Args:
        name: ``affine``, ``attention``, ``projective`` or ``affine3d``.
        params: ``[B, P]`` parameters of that transform.

    Returns:
        The matrix mapping homogeneous target points to source points.
    """
    spec = get_transform(name)
    if name not in _MATRIX_TRANSFORMS:
        raise ValueError(
            f"to_matrix works for {_MATRIX_TRANSFORMS}. Received: name={name!r}"
        )
    params = _as_params(params, spec.num_params, name, spec.matrix_shape)
    batch = tf.shape(params)[0]
    zero, one = tf.zeros([batch], params.dtype), tf.ones([batch], params.dtype)
    p = tf.unstack(params, axis=1)
    if name == "attention":
        s, tx, ty = p
        rows = [[s, zero, tx], [zero, s, ty], [zero, zero, one]]
    elif name == "affine":
        rows = [p[0:3], p[3:6], [zero, zero, one]]
    elif name == "projective":
        rows = [p[0:3], p[3:6], [p[6], p[7], one]]
    else:
        rows = [p[0:4], p[4:8], p[8:12], [zero, zero, zero, one]]
    return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=1)


AFFINE_TRANSFORMS = ("affine", "attention", "affine3d")


def affine_matrix(name: str, params) -> tf.Tensor:
    """The affine map of an affine-family transform, ``[B, n, n + 1]``.

    ``to_matrix`` without its homogeneous last row, in few ops (a reshape, or
    one stack for ``attention``): what ``sampler.sample_affine`` takes, so that
    the grid is made inside the sampler.

    Args:
        name: one of ``AFFINE_TRANSFORMS``.
        params: ``[B, P]`` parameters of that transform (affine θ may also come
            as ``[B, 2, 3]``, affine3d θ as ``[B, 3, 4]``).

    Returns:
        ``[B, 2, 3]`` (``[B, 3, 4]`` for ``affine3d``) float32/float64 matrices.
    """
    if name not in AFFINE_TRANSFORMS:
        raise ValueError(
            f"affine_matrix works for {AFFINE_TRANSFORMS}. Received: name={name!r}"
        )
    spec = get_transform(name)
    params = _as_params(params, spec.num_params, name, spec.matrix_shape)
    if name == "attention":
        s, tx, ty = tf.unstack(params, axis=-1)
        zero = tf.zeros_like(s)
        params = tf.stack([s, zero, tx, zero, s, ty], axis=-1)
    n = spec.ndim
    return tf.reshape(params, [-1, n, n + 1])


def from_matrix(name: str, matrix) -> tf.Tensor:
    """Parameters ``[B, P]`` of ``name`` from a homogeneous matrix (see ``to_matrix``).

    The matrix is normalised so its last entry is 1; for ``attention`` the scale
    is read from the first diagonal entry.
    """
    matrix = tf.convert_to_tensor(matrix)
    n = 4 if name == "affine3d" else 3
    if matrix.shape.rank != 3 or tuple(matrix.shape[1:]) != (n, n):
        raise ValueError(
            f"{name} matrices must have shape [B, {n}, {n}]. "
            f"Received: matrix.shape={matrix.shape}"
        )
    matrix = matrix / matrix[:, -1:, -1:]
    if name == "attention":
        return tf.stack([matrix[:, 0, 0], matrix[:, 0, 2], matrix[:, 1, 2]], axis=-1)
    if name == "projective":
        return tf.reshape(matrix, [-1, 9])[:, :8]
    if name in ("affine", "affine3d"):
        return tf.reshape(matrix[:, :-1, :], [-1, n * (n - 1)])
    raise ValueError(
        f"from_matrix works for {_MATRIX_TRANSFORMS}. Received: name={name!r}"
    )


def invert(name: str, params) -> tf.Tensor:
    """Parameters of the inverse transform: warping with ``invert(p)`` undoes ``p``.

    Args:
        name: ``affine``, ``attention``, ``projective`` or ``affine3d``.
        params: ``[B, P]``.

    Returns:
        ``[B, P]``.
    """
    return from_matrix(name, tf.linalg.inv(to_matrix(name, params)))


def compose(name: str, first, second) -> tf.Tensor:
    """One transform equal to warping with ``first`` and then with ``second``.

    ``warp(warp(U, first), second) == warp(U, compose(first, second))`` (up to
    resampling): the source point of target ``p`` is ``A_first A_second p``.

    Returns:
        ``[B, P]`` parameters of ``name``.
    """
    first, second = to_matrix(name, first), to_matrix(name, second)
    if (
        None not in (first.shape[0], second.shape[0])
        and first.shape[0] != second.shape[0]
    ):
        raise ValueError(
            "compose needs one `second` per `first`. Received batch sizes "
            f"{first.shape[0]} and {second.shape[0]}"
        )
    return from_matrix(name, tf.matmul(first, second))


def affine_from_pixels(matrix, input_size: Sequence[int], output_size: Sequence[int]):
    """Normalised affine θ from a matrix in pixel (voxel) units, 2D or 3D.

    θ acts on normalised coordinates, where one unit is half the image's width
    along x but half its height along y: on a non-square image a "rotation"
    written directly in θ shears and stretches. Write the geometry in pixels
    instead and convert it here.

    Args:
        matrix: ``[B, n, n + 1]`` or ``[B, n + 1, n + 1]`` (n = 2 or 3), mapping
            output pixel positions ``(column, row[, slice], 1)`` to input pixel
            positions ``(column, row[, slice])``; pixel centres are at integers.
        input_size: ``(H, W)`` (``(D, H, W)`` in 3D) of the sampled image.
        output_size: ``(H', W')`` (``(D', H', W')``) of the output.

    Returns:
        ``[B, 6]`` affine θ (``[B, 12]`` affine3d θ in 3D).
    """
    matrix = tf.convert_to_tensor(matrix)
    n = matrix.shape[1] if matrix.shape.rank == 3 else None
    if n is not None and matrix.shape[2] == n:  # homogeneous [n + 1, n + 1]
        n -= 1
    if n not in (2, 3) or tuple(matrix.shape[1:]) not in ((n, n + 1), (n + 1, n + 1)):
        raise ValueError(
            "matrix must have shape [B, 2, 3] or [B, 3, 3] (2D), [B, 3, 4] or "
            f"[B, 4, 4] (3D). Received: matrix.shape={matrix.shape}"
        )
    bottom = tf.get_static_value(matrix[:, n:, :]) if matrix.shape[1] > n else None
    expected_bottom = np.eye(n + 1)[n:]
    if bottom is not None and not np.allclose(bottom, expected_bottom):
        raise ValueError(
            f"matrix must be affine: its last row {expected_bottom[0].astype(int).tolist()} "
            "(use the projective transform for homographies). "
            f"Received last rows: {bottom.tolist()}"
        )
    # (x, y[, z]) runs along the size axes in reverse: W, H[, D].
    sizes_in = check_output_size(input_size, n)[::-1]
    sizes_out = check_output_size(output_size, n)[::-1]
    dtype = matrix.dtype if matrix.dtype in (tf.float32, tf.float64) else tf.float32
    matrix = tf.cast(matrix[:, :n, :], dtype)

    # normalised output -> output pixels -> input pixels -> normalised input
    half = np.array([(s - 1) / 2.0 for s in sizes_out])  # pixels per unit
    to_pixels = np.eye(n + 1)
    to_pixels[:n, :n] = np.diag(half)
    to_pixels[:n, n] = half
    inv_half = np.array([0.0 if s == 1 else 2.0 / (s - 1) for s in sizes_in])
    to_normal = np.zeros((n, n + 1))
    to_normal[:, :n] = np.diag(inv_half)
    to_normal[:, n] = -(np.array(sizes_in) > 1).astype(float)
    batch = tf.shape(matrix)[0]
    pixels = tf.matmul(
        matrix, tf.broadcast_to(tf.constant(to_pixels, dtype), [batch, n + 1, n + 1])
    )
    last_row = tf.broadcast_to(tf.constant(np.eye(n + 1)[n:], dtype), [batch, 1, n + 1])
    homogeneous = tf.concat([pixels, last_row], axis=1)  # [B, n + 1, n + 1]
    theta = tf.matmul(
        tf.broadcast_to(tf.constant(to_normal, dtype), [batch, n, n + 1]), homogeneous
    )
    return tf.reshape(theta, [-1, n * (n + 1)])


def projective_from_points(target, source) -> tf.Tensor:
    """The homography that maps four target points onto four source points.

    The projective counterpart of writing an affine θ by hand: give where four
    output points (e.g. the corners of the output) should read from in the input.
    Solves the 8x8 linear system of the direct linear transform in float64.

    Args:
        target: ``[B, 4, 2]`` output points ``(x, y)``, normalised; no three collinear.
        source: ``[B, 4, 2]`` the input points they map to.

    Returns:
        ``[B, 8]`` projective params with ``projective_points(params, target) == source``.
    """
    target, source = tf.convert_to_tensor(target), tf.convert_to_tensor(source)
    for name, t in (("target", target), ("source", source)):
        if t.shape.rank != 3 or tuple(t.shape[1:]) != (4, 2):
            raise ValueError(
                f"{name} must have shape [B, 4, 2]. Received: {name}.shape={t.shape}"
            )
    dtype = source.dtype if source.dtype in (tf.float32, tf.float64) else tf.float32
    x, y = tf.unstack(tf.cast(target, tf.float64), axis=-1)  # [B, 4]
    u, v = tf.unstack(tf.cast(source, tf.float64), axis=-1)
    one, zero = tf.ones_like(x), tf.zeros_like(x)
    # u (g x + h y + 1) = a x + b y + c;  v (g x + h y + 1) = d x + e y + f
    rows_u = tf.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=-1)
    rows_v = tf.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=-1)
    system = tf.concat([rows_u, rows_v], axis=1)  # [B, 8, 8]
    rhs = tf.expand_dims(tf.concat([u, v], axis=1), -1)  # [B, 8, 1]
    return tf.cast(tf.squeeze(tf.linalg.solve(system, rhs), -1), dtype)


def output_corners(name: str, params, **options) -> tf.Tensor:
    """Where the corners of the output frame read from in the input.

    Draw the returned polygon on the input to show what the transformer attends to.

    Args:
        name: a transform name.
        params: ``[B, P]``.
        **options: passed to the transform (e.g. ``control_points`` for tps).

    Returns:
        ``[B, 4, 2]`` source points of the corners top-left, top-right,
        bottom-right, bottom-left (``[B, 8, 3]`` in 3D, raster order).
    """
    spec = get_transform(name)
    if spec.ndim == 2:
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    else:
        corners = _regular_grid_np((2, 2, 2)).reshape(-1, 3)
    return spec.points(params, corners, **options)


# --------------------------------------------------------------------------------------
# Registry


@dataclasses.dataclass(frozen=True)
class Transform:
    """A transform family: its size, identity and point/grid maps.

    Attributes:
        name: registry name.
        ndim: 2 for images, 3 for volumes.
        num_params: length P of its parameter vector.
        identity: the identity parameters, length P.
        points: ``(params [B, P], points [N, ndim], **options) -> [B, N, ndim]``.
        grid: ``(params [B, P], output_size, **options) -> [B, *output_size, ndim]``.
        matrix_shape: the matrix layout its params may also come in, if any.
    """

    name: str
    ndim: int
    num_params: int
    identity: tuple[float, ...]
    points: Callable[..., tf.Tensor]
    grid: Callable[..., tf.Tensor]
    matrix_shape: tuple[int, int] | None = None

    def identity_params(self, batch_size: int = 1, dtype=np.float32) -> np.ndarray:
        """``[batch_size, P]`` copies of the identity parameters."""
        return np.tile(np.asarray(self.identity, dtype), (batch_size, 1))


def _tps_transform(grid_size):
    # tps_points / tps_grid default to the regular grid of sqrt(K) x sqrt(K)
    # control points, so only the parameter count depends on grid_size.
    k = len(tps_control_points(grid_size))
    return Transform("tps", 2, 2 * k, (0.0,) * (2 * k), tps_points, tps_grid)


TRANSFORMS: dict[str, Transform] = {
    "affine": Transform(
        "affine",
        2,
        6,
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        affine_points,
        affine_grid,
        (2, 3),
    ),
    "attention": Transform(
        "attention", 2, 3, (1.0, 0.0, 0.0), attention_points, attention_grid
    ),
    "projective": Transform(
        "projective",
        2,
        8,
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
        projective_points,
        projective_grid,
    ),
    "tps": _tps_transform(4),
    "affine3d": Transform(
        "affine3d",
        3,
        12,
        (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        affine3d_points,
        affine3d_grid,
        (3, 4),
    ),
}


def get_transform(name: str, *, tps_grid_size: int = 4) -> Transform:
    """Looks up a transform by name.

    Args:
        name: one of ``TRANSFORMS``.
        tps_grid_size: control points per side for ``tps`` (K = size²).

    Returns:
        The ``Transform``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in TRANSFORMS:
        raise ValueError(
            f"Unknown transform {name!r}. Known transforms: {sorted(TRANSFORMS)}"
        )
    if name == "tps" and tps_grid_size != 4:
        return _tps_transform(tps_grid_size)
    return TRANSFORMS[name]


# --------------------------------------------------------------------------------------
# Warping: a transform and the sampler in one call


def warp(
    images,
    name: str,
    params,
    output_size: Sequence[int],
    *,
    interpolation: str = "bilinear",
    control_points=None,
    jit_compile: bool = True,
) -> tf.Tensor:
    """Warps images (or volumes) with a transform: the output at target point
    ``p`` reads the input at ``T_params(p)`` (kornia's ``warp_affine`` pattern).

    Convention: normalised corner-aligned coordinates, last axis ``(x, y[, z])``,
    params map output to source points, channels-last.

    Under ``jit_compile`` an affine-family transform (``AFFINE_TRANSFORMS``) has
    its grid made inside the sampler's XLA functions (``sampler.sample_affine``:
    no ``[B, H', W', 2]`` coordinates in the TF graph); otherwise, and for the
    projective and TPS transforms, the grid comes first, then ``sampler.sample``.
    Both give the same outputs to float rounding (tests/test_layers.py).

    Args:
        images: ``[B, H, W, C]`` (``[B, D, H, W, C]`` for ``affine3d``).
        name: one of ``TRANSFORMS``.
        params: ``[B, P]`` parameters of ``name``, or ``[B, G, P]``: G windows
            per input (parallel heads, recurrent steps). Under XLA an
            affine-family transform samples all G in one ``sample_affine`` call,
            which reads each input once (0.76-1.06x the time of G calls in two
            A/Bs on W3, W4 and A3, docs/benchmarks.md) and gives each window's
            own values bit for bit.
        output_size: ``(H', W')`` (``(D', H', W')``).
        interpolation: one of ``sampler.INTERPOLATIONS``.
        control_points: ``[K, 2]`` TPS target control points (default: the
            regular grid).
        jit_compile: run the sampler (and the affine grid) through XLA.

    Returns:
        ``[B, H', W', C]`` (``[B, D', H', W', C]``); ``[B, G, ...]`` for G windows.
    """
    spec = get_transform(name)
    size = check_output_size(output_size, spec.ndim)
    params = tf.convert_to_tensor(params)
    grouped = params.shape.rank == 3 and params.shape[-1] == spec.num_params
    in_sampler = jit_compile and name in AFFINE_TRANSFORMS  # the grid made in XLA
    if grouped and not in_sampler:  # window by window
        return tf.stack(
            [
                warp(
                    images,
                    name,
                    params[:, g],
                    size,
                    interpolation=interpolation,
                    control_points=control_points,
                    jit_compile=jit_compile,
                )
                for g in range(params.shape[1])
            ],
            1,
        )
    if in_sampler:
        flat = tf.reshape(params, [-1, spec.num_params]) if grouped else params
        matrix = affine_matrix(name, flat)
        if grouped:  # [B, G, n, n + 1]: sample_affine's G windows per input
            matrix = tf.reshape(
                matrix, tf.concat([tf.shape(params)[:2], tf.shape(matrix)[1:]], 0)
            )
        return sampler.sample_affine(
            images, matrix, size, interpolation=interpolation, jit_compile=True
        )
    options = {} if control_points is None else {"control_points": control_points}
    coords = spec.grid(params, size, **options)
    return sampler.sample(
        images, coords, interpolation=interpolation, jit_compile=jit_compile
    )
