"""Differentiable sampling of images and volumes at given coordinates (STN eq. 3-7).

Convention:
    - Images are channels-last ``[B, H, W, C]``, volumes ``[B, D, H, W, C]``.
    - Coordinates are normalised to [-1, 1]; the last axis is ``(x, y)`` for images
      and ``(x, y, z)`` for volumes (x runs along W, y along H, z along D).
    - Corner-aligned (PyTorch's ``align_corners=True``): -1 is the centre of the
      first pixel and +1 the centre of the last, so pixel ``i`` of an axis of size
      ``n`` sits at ``-1 + 2 i / (n - 1)``. An axis of size 1 has its only pixel at 0
      and is constant along that axis: every coordinate reads it (as in PyTorch).
    - Outside the image the sampler reads zeros: a point between the last pixel
      centre and one pixel beyond blends with zero, farther out it returns 0.
    - Coordinates say where to read in the *source*; transforms (``transforms.py``)
      map output grid points to source points (inverse warping).

Both kernels are written once for any number of spatial axes: bilinear (eq. 5) and
trilinear (A.3, eq. 9) read ``2**ndim`` neighbours, nearest (eq. 4) reads one,
rounding half up (``floor(x + 0.5)``). Positions within a few ulps of a pixel
centre are snapped onto it, so an identity grid reproduces its input exactly.
Gradients w.r.t. the image (eq. 6) and the
coordinates (eq. 7) are written by hand with ``tf.custom_gradient``; the weights
are computed from the unclipped positions and only then masked, so values and
gradients are exact at the borders. At an integer position the coordinate
gradient is the one-sided (right) derivative. The nearest kernel passes a zero
gradient to the coordinates.

Robustness: any finite coordinate gives a finite output and gradient (positions
are clamped to just outside the image before any integer conversion); NaN and
+-inf coordinates read zeros and get zero gradient, so nothing non-finite spreads
into the batch.

Dtypes: float32 or float64 coordinates; images of any float dtype, including
float16/bfloat16 with float32 coordinates (mixed precision). Arithmetic runs in
float64 if images or coordinates are float64, else in float32; the output has the
image dtype, and each gradient the dtype of its input.

The forward pass uses only ops that TFLite has as builtins (gather, arithmetic,
comparisons, select), so a model containing it converts without Flex ops. (New
axes are made with ``tf.expand_dims``: ``x[..., None]`` lowers to a StridedSlice
with ``new_axis_mask``, which TFLite only runs through Flex.)
Pass ``jit_compile=True`` to run forward and backward through XLA (the layers do
by default; the functions here default to plain TF ops). ``sample_affine`` takes
affine matrices instead of coordinates: under XLA it computes the grid inside the
sampler's compiled functions, and the matrix gradient too. The image gradient is a
scatter-add: on a GPU it is only bitwise reproducible under
``tf.config.experimental.enable_op_determinism()``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import tensorflow as tf

from stn_tf.grids import check_output_size, regular_grid

__all__ = [
    "bilinear_sample",
    "nearest_sample",
    "trilinear_sample",
    "nearest_sample_3d",
    "sample",
    "sample_affine",
    "affine_coords",
    "INTERPOLATIONS",
]

INTERPOLATIONS = ("bilinear", "nearest")

_AXIS_NAMES = ("x", "y", "z")
_COORD_DTYPES = (tf.float32, tf.float64)
_EPS = {tf.float32: 2.0**-23, tf.float64: 2.0**-52}


def bilinear_sample(
    images: tf.Tensor, coords: tf.Tensor, *, jit_compile: bool = False
) -> tf.Tensor:
    """Samples images bilinearly at normalised coordinates (STN eq. 5).

    Convention: coordinates in [-1, 1], last axis ``(x, y)``, corner-aligned
    (``align_corners=True``), zeros outside the image, channels-last.

    Args:
        images: ``[B, H, W, C]`` floating-point images.
        coords: ``[B, H', W', 2]`` float32/float64 source coordinates.
        jit_compile: run forward and backward through XLA.

    Returns:
        ``[B, H', W', C]`` samples, in the dtype of ``images``.

    Raises:
        ValueError: on a wrong rank, last axis, batch size or dtype.
    """
    return _sample(images, coords, ndim=2, kernel="bilinear", jit_compile=jit_compile)


def nearest_sample(
    images: tf.Tensor, coords: tf.Tensor, *, jit_compile: bool = False
) -> tf.Tensor:
    """Samples images at the nearest pixel (STN eq. 4); no gradient to ``coords``.

    Convention: as ``bilinear_sample``; ties round up (``floor(x + 0.5)``).

    Args:
        images: ``[B, H, W, C]`` floating-point images.
        coords: ``[B, H', W', 2]`` float32/float64 source coordinates.
        jit_compile: run forward and backward through XLA.

    Returns:
        ``[B, H', W', C]`` samples, in the dtype of ``images``.
    """
    return _sample(images, coords, ndim=2, kernel="nearest", jit_compile=jit_compile)


def trilinear_sample(
    volumes: tf.Tensor, coords: tf.Tensor, *, jit_compile: bool = False
) -> tf.Tensor:
    """Samples volumes trilinearly at normalised coordinates (STN A.3, eq. 9).

    Convention: coordinates in [-1, 1], last axis ``(x, y, z)`` along
    ``(W, H, D)``, corner-aligned, zeros outside the volume, channels-last.

    Args:
        volumes: ``[B, D, H, W, C]`` floating-point volumes.
        coords: ``[B, D', H', W', 3]`` float32/float64 source coordinates.
        jit_compile: run forward and backward through XLA.

    Returns:
        ``[B, D', H', W', C]`` samples, in the dtype of ``volumes``.
    """
    return _sample(volumes, coords, ndim=3, kernel="bilinear", jit_compile=jit_compile)


def nearest_sample_3d(
    volumes: tf.Tensor, coords: tf.Tensor, *, jit_compile: bool = False
) -> tf.Tensor:
    """Samples volumes at the nearest voxel; no gradient to ``coords``.

    Args:
        volumes: ``[B, D, H, W, C]`` floating-point volumes.
        coords: ``[B, D', H', W', 3]`` float32/float64 coordinates ``(x, y, z)``.
        jit_compile: run forward and backward through XLA.

    Returns:
        ``[B, D', H', W', C]`` samples, in the dtype of ``volumes``.
    """
    return _sample(volumes, coords, ndim=3, kernel="nearest", jit_compile=jit_compile)


def sample(
    inputs: tf.Tensor,
    coords: tf.Tensor,
    *,
    interpolation: str = "bilinear",
    jit_compile: bool = False,
) -> tf.Tensor:
    """Samples images (rank 4) or volumes (rank 5), chosen by the coordinates.

    ``interpolation="bilinear"`` means trilinear for volumes, as in the paper.

    Args:
        inputs: ``[B, H, W, C]`` images or ``[B, D, H, W, C]`` volumes.
        coords: ``[B, ..., 2]`` or ``[B, ..., 3]`` normalised coordinates.
        interpolation: one of ``INTERPOLATIONS``.
        jit_compile: run forward and backward through XLA.

    Returns:
        The samples, ``[B, <coords spatial shape>, C]``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}. "
            f"Received: interpolation={interpolation!r}"
        )
    coords = tf.convert_to_tensor(coords)
    ndim = coords.shape[-1]
    if ndim not in (2, 3):
        raise ValueError(
            "coords must end in an axis of size 2 (x, y) or 3 (x, y, z). "
            f"Received: coords.shape={coords.shape}"
        )
    inputs = tf.convert_to_tensor(inputs)
    rank = inputs.shape.rank
    if rank is not None and rank != ndim + 2:
        kind = "images [B, H, W, C]" if ndim == 2 else "volumes [B, D, H, W, C]"
        raise ValueError(
            f"coords with {ndim} components sample {kind}, of rank {ndim + 2}. "
            f"Received: inputs.shape={inputs.shape}, "
            f"coords.shape={coords.shape}"
        )
    return _sample(
        inputs, coords, ndim=ndim, kernel=interpolation, jit_compile=jit_compile
    )


def sample_affine(
    inputs: tf.Tensor,
    matrix: tf.Tensor,
    output_size: Sequence[int],
    *,
    interpolation: str = "bilinear",
    jit_compile: bool = False,
) -> tf.Tensor:
    """Samples on the target grid mapped by affine matrices: grid and sampler in one.

    The same as ``sample(inputs, grid)`` with the grid of ``transforms.affine_grid``
    (``affine3d_grid`` for volumes): output point ``p`` of the regular target grid
    reads the input at ``matrix @ (p, 1)``. With ``jit_compile`` the grid is
    computed inside the sampler's XLA functions, and the gradient w.r.t. the
    matrix (the coordinate gradient contracted with the homogeneous target grid)
    inside the coordinate gradient's, so no TF op ever touches the
    ``[B, H', W', 2]`` coordinates.

    ``G`` matrices per input (``[B, G, n, n + 1]``, e.g. parallel or recurrent
    windows) are sampled in one call that reads each input once.

    Args:
        inputs: ``[B, H, W, C]`` images or ``[B, D, H, W, C]`` volumes.
        matrix: ``[B, n, n + 1]`` or ``[B, G, n, n + 1]`` float32/float64 affine
            maps from target to source points, ``n`` = 2 for images (θ of eq. 1
            as a matrix), 3 for volumes (eq. 10); see ``transforms.affine_matrix``.
        output_size: ``(H', W')`` or ``(D', H', W')``.
        interpolation: one of ``INTERPOLATIONS``.
        jit_compile: run grid, sampler and their gradients through XLA.

    Returns:
        ``[B, *output_size, C]`` samples (``[B, G, *output_size, C]`` for
        ``[B, G, n, n + 1]`` matrices), in the dtype of ``inputs``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}. "
            f"Received: interpolation={interpolation!r}"
        )
    inputs, matrix = tf.convert_to_tensor(inputs), tf.convert_to_tensor(matrix)
    ndim = inputs.shape.rank - 2 if inputs.shape.rank in (4, 5) else None
    if ndim is None:
        raise ValueError(
            "inputs must be images [B, H, W, C] or volumes [B, D, H, W, C]. "
            f"Received: inputs.shape={inputs.shape}"
        )
    if matrix.shape.rank not in (3, 4) or tuple(matrix.shape[-2:]) != (ndim, ndim + 1):
        raise ValueError(
            f"matrix must have shape [B, {ndim}, {ndim + 1}] or [B, G, {ndim}, "
            f"{ndim + 1}] for inputs of rank {ndim + 2}. "
            f"Received: matrix.shape={matrix.shape}, inputs.shape={inputs.shape}"
        )
    _check_points(inputs, matrix, "matrix", "inputs")
    size = check_output_size(output_size, ndim)
    grouped = matrix.shape.rank == 4
    if not grouped:
        matrix = tf.expand_dims(matrix, 1)  # [B, 1, n, n + 1]
    grids = matrix.shape[1]
    # The rest of the input checks, on the coordinates the grid will make.
    stacked = [None if grids is None else grids * size[0], *size[1:]]
    coords = tf.TensorSpec([matrix.shape[0], *stacked, ndim], matrix.dtype)
    _check_inputs(inputs, coords, ndim)
    matrix = _check_batch_at_run_time(inputs, matrix, "matrix")
    if jit_compile:
        out = _affine_sampler(ndim, interpolation, size)(inputs, matrix)
    else:
        out = sample(inputs, affine_coords(matrix, size), interpolation=interpolation)
    if not grouped:
        return out  # [B, *size, C]
    return tf.reshape(
        out, tf.concat([tf.shape(matrix)[:2], size, tf.shape(out)[-1:]], 0)
    )


# --------------------------------------------------------------------------------------
# Implementation


def _sample(images, coords, *, ndim, kernel, jit_compile):
    images = tf.convert_to_tensor(images)
    coords = tf.convert_to_tensor(coords)
    _check_inputs(images, coords, ndim)
    coords = _check_batch_at_run_time(images, coords, "coords")
    return _sampler(ndim, kernel, bool(jit_compile))(images, coords)


def _check_batch_at_run_time(images, points, name):
    """``points`` (coords or matrices), checked at run time to have the batch
    size of ``images`` when a graph knows either only then."""
    if images.shape[0] is not None and points.shape[0] is not None:
        return points  # checked (or run) with static shapes
    # XLA and the TFLite converter drop the Assert, so it runs outside them;
    # without it, points would be regrouped across images.
    check = tf.debugging.assert_equal(
        tf.shape(images)[0],
        tf.shape(points)[0],
        message=f"images and {name} must have the same batch size",
    )
    with tf.control_dependencies([check]):
        return tf.identity(points)


def _check_points(images, points, name, what):
    """``points`` (coords or matrices): a float32/float64 tensor with the batch size
    of ``images`` (where both are known before run time)."""
    if points.dtype not in _COORD_DTYPES:
        raise ValueError(
            f"{name} must be float32 or float64. "
            f"Received: {name}.dtype={points.dtype.name}"
        )
    b_img, b_points = images.shape[0], points.shape[0]
    if b_img is not None and b_points is not None and b_img != b_points:
        raise ValueError(
            f"{what} and {name} must have the same batch size. Received: "
            f"{what}.shape={images.shape}, {name}.shape={points.shape}"
        )


def _check_inputs(images, coords, ndim):
    what = "images" if ndim == 2 else "volumes"
    layout = "[B, H, W, C]" if ndim == 2 else "[B, D, H, W, C]"
    coord_layout = "[B, H', W', 2]" if ndim == 2 else "[B, D', H', W', 3]"
    if images.shape.rank != ndim + 2:
        raise ValueError(
            f"{what} must have rank {ndim + 2} ({layout}). "
            f"Received: {what}.shape={images.shape}"
        )
    if coords.shape.rank != ndim + 2 or coords.shape[-1] != ndim:
        raise ValueError(
            f"coords must have shape {coord_layout}. Received: coords.shape={coords.shape}"
        )
    if not images.dtype.is_floating:
        raise ValueError(
            f"{what} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64); cast integer images first. Received: {what}.dtype={images.dtype.name}"
        )
    _check_points(images, coords, "coords", what)
    if (
        images.shape[:-1].is_fully_defined()
        and images.shape[:-1].num_elements() >= 2**31
    ):
        raise ValueError(
            f"{what} hold {images.shape[:-1].num_elements()} pixels per channel, more "
            f"than int32 indexing reaches (2**31); split the batch. "
            f"Received: {what}.shape={images.shape}"
        )


@functools.cache
def _kernels(ndim, kernel, jit_compile):
    """Forward and the two gradients for ``ndim`` spatial axes, each a function of
    ``(images, coords[, upstream])``, XLA-compiled when asked.

    They are separate functions, so a graph that needs only the coordinate
    gradient (a frozen feature map, or an STN whose input is data) prunes the
    image gradient's scatter, whose cost grows with the input size. The
    backward recomputes the neighbours instead of keeping the forward's
    ``[B, N, K, C]`` intermediates alive.

    The XLA kernels work neighbour by neighbour on ``[B, N]`` arrays
    (``_Corners``): XLA:CPU evaluates a fused ``[B, N, K]`` expression per
    element, so the ``[B, N, K]`` form recomputes each axis' taps for every
    neighbour; the corner form computes them once per point, which made the
    training step of ``tools/bench_sampler.py`` with the XLA sampler up to 1.6x
    faster on CPU. Without ``jit_compile`` the ``[B, N, K]`` form stays: as plain
    TF ops it launches fewer kernels, and when an outer
    ``tf.function(jit_compile=True)`` compiles it, XLA shares its neighbours
    between forward and backward (the corner form measured up to 2.4x slower
    there). Handing the forward's neighbours to the backward, or computing them
    once for both gradients, was measured too and dropped: faster when both
    gradients are needed, but slower for the forward alone (up to 1.4x) or the
    coordinate gradient alone (up to 1.3x).
    """
    fns = (_forward, _grad_images, _grad_coords)
    if jit_compile:
        fns = (_forward_by_corner, _grad_images_by_corner, _grad_coords_by_corner)
    forward_fn, grad_images_fn, grad_coords_fn = fns

    def forward(images, coords):
        return forward_fn(ndim, kernel, images, coords)

    def grad_images(images, coords, upstream):
        return grad_images_fn(ndim, kernel, images, coords, upstream)

    def grad_coords(images, coords, upstream):
        return grad_coords_fn(ndim, kernel, images, coords, upstream)

    fns = (forward, grad_images, grad_coords)
    return tuple(_jit(fn) for fn in fns) if jit_compile else fns


def _jit(fn):
    return tf.function(fn, jit_compile=True, autograph=False, reduce_retracing=True)


@functools.cache
def _sampler(ndim, kernel, jit_compile):
    """The custom-gradient sampler of ``(images, coords)`` (see ``_kernels``)."""
    forward, grad_images, grad_coords = _kernels(ndim, kernel, jit_compile)
    return _with_gradient(
        kernel, forward, grad_images, grad_coords, lambda coords: coords
    )


def _with_gradient(kernel, forward, grad_images, grad_points, coords_of):
    """``forward(images, points)`` with the hand-written gradient: the image
    gradient and ``grad_points``, both on ``coords_of(points)`` (nearest sampling
    has no gradient w.r.t. the points)."""

    @tf.custom_gradient
    def sampler(images, points):
        def grad(upstream):
            coords = coords_of(points)
            images_grad = grad_images(images, coords, upstream)
            if kernel == "nearest":
                return images_grad, tf.zeros_like(points)
            return images_grad, grad_points(images, coords, upstream)

        return forward(images, points), grad

    return sampler


@functools.cache
def _affine_sampler(ndim, kernel, output_size):
    """The XLA sampler of ``(images, matrix [B, G, n, n + 1])`` on the grid of
    ``output_size`` (``sample_affine``).

    The forward computes the grid inside its XLA call. The backward makes the
    grid once, in an XLA call of its own, and hands it to the image gradient of
    ``_kernels`` and to the matrix gradient (the coordinate gradient contracted
    with the target grid, a dot, in the same XLA call). Measured on CPU with
    ``tools/bench_sampler.py`` and dropped:

    - the grid recomputed inside each gradient: as fast only while XLA happens to
      materialise it; where it fuses the grid into the image gradient's scatter
      operands (the ``[B, 6]`` θ layout of ``transforms.affine_grid``) that
      gradient ran 3.5x slower on W1 and W2;
    - the matrix gradient by autodiff of the grid: XLA fuses the coordinate
      gradient into each of the 6 reductions, 2x slower on W1 and W2;
    - the forward returning its grid for the backward: fwd+bwd the same, the
      forward alone up to 1.2x slower (it writes the grid);
    - grid and the plain-TF sampler as one ``tf.function(jit_compile=True)``
      differentiated by TF: forward 1.1-2.2x slower, fwd+bwd 1.3-1.5x slower on
      W1, W2 and W4, though 0.9x on the large W3.
    """
    forward, grad_images, grad_coords = _kernels(ndim, kernel, True)

    @_jit
    def forward_affine(images, matrix):
        return forward(images, affine_coords(matrix, output_size))

    @_jit
    def grid(matrix):
        return affine_coords(matrix, output_size)

    @_jit
    def grad_matrix(images, coords, upstream):
        return _affine_pullback(grad_coords(images, coords, upstream), output_size)

    return _with_gradient(kernel, forward_affine, grad_images, grad_matrix, grid)


def _target_points(output_size, dtype, homogeneous=False):
    """The regular target grid as ``[N, n]`` points (``[N, n + 1]`` with a 1)."""
    points = tf.reshape(regular_grid(output_size, dtype), [-1, len(output_size)])
    if homogeneous:
        points = tf.concat([points, tf.ones_like(points[:, :1])], axis=-1)
    return points


def affine_coords(matrix, output_size):
    """``[B, G, n, n + 1]`` -> ``[B, G * S0, S1, .., n]``: the G grids of each input,
    stacked along the first output axis (the grid ``sample_affine`` makes inside
    its XLA cluster).

    Each coordinate is summed in the order of ``transforms.affine_points``
    (``a x + b y + c``), so the grids match ``affine_grid``: exactly at the
    identity, elsewhere within an ulp (XLA fuses ``a x + b y`` into an FMA). At a
    point within that of the snapping window around a pixel centre the sampler
    may then take the other one-sided coordinate derivative.
    """
    ndim = len(output_size)
    target = tf.unstack(_target_points(output_size, matrix.dtype), axis=-1)  # n x [N]
    coords = []
    for row in tf.unstack(matrix, axis=2):  # [B, G, n + 1] per output axis
        entries = [tf.expand_dims(e, -1) for e in tf.unstack(row, axis=-1)]
        value = entries[0] * target[0]
        for entry, t in zip(entries[1:ndim], target[1:]):
            value = value + entry * t
        coords.append(value + entries[ndim])  # [B, G, N]
    coords = tf.stack(coords, axis=-1)  # [B, G, N, n]
    batch, grids = tf.unstack(tf.shape(matrix)[:2])
    return tf.reshape(coords, [batch, grids * output_size[0], *output_size[1:], ndim])


def _affine_pullback(grad_coords, output_size):
    """The coordinate gradient ``[B, G * S0, S1, .., n]`` -> the matrix gradient
    ``[B, G, n, n + 1]``: ``sum_p grad(p) (p, 1)^T`` over target points p."""
    ndim = len(output_size)
    target = _target_points(output_size, grad_coords.dtype, homogeneous=True)
    shape = tf.shape(grad_coords)
    grad = tf.reshape(
        grad_coords, [shape[0], shape[1] // output_size[0], target.shape[0], ndim]
    )  # [B, G, N, n]
    return tf.einsum("bgni,nj->bgij", grad, target)


class _Points:
    """What both neighbour layouts start from: dtypes, sizes and each axis' taps."""

    def __init__(self, images, coords, ndim, kernel):
        self.image_dtype, self.coord_dtype = images.dtype, coords.dtype
        float64 = tf.float64 in (images.dtype, coords.dtype)
        self.dtype = tf.float64 if float64 else tf.float32
        self.shape = tf.shape(images)
        self.batch, self.channels = self.shape[0], self.shape[-1]
        sizes = [self.shape[1 + a] for a in range(ndim)]  # (H, W) or (D, H, W)
        self.pixels = functools.reduce(tf.multiply, sizes)  # per image
        points = tf.reshape(tf.cast(coords, self.dtype), [self.batch, -1, ndim])
        self.taps = _taps(points, sizes, kernel, self.dtype, _EPS[coords.dtype])


class _Neighbours(_Points):
    """The neighbours every point reads: flat indices, weights and masks."""

    def __init__(self, images, coords, ndim, kernel):
        super().__init__(images, coords, ndim, kernel)
        offset = tf.reshape(tf.range(self.batch) * self.pixels, [-1, 1, 1])
        # [B, N, K]
        self.index = _combine([t.stacked("index") for t in self.taps], tf.add) + offset
        self.weight = _combine([t.stacked("weight") for t in self.taps], tf.multiply)

    def values(self, images, keep):
        """Gathers ``[B, N, K, C]`` neighbour values; zeros where ``keep`` is False.

        A select, not a multiplication by a zero weight: 0 * inf is NaN, and a
        non-finite pixel must not leak into points that give it no weight.
        """
        flat = tf.reshape(images, [-1, self.channels])  # [B*H*W, C]
        values = tf.gather(flat, self.index)
        if values.dtype != self.dtype:
            values = tf.cast(values, self.dtype)
        return tf.where(tf.expand_dims(keep, -1), values, tf.zeros_like(values))


def _forward(ndim, kernel, images, coords):
    nb = _Neighbours(images, coords, ndim, kernel)
    values = nb.values(images, nb.weight != 0)
    out = tf.reduce_sum(tf.expand_dims(nb.weight, -1) * values, axis=2)  # [B, N, C]
    out_shape = tf.concat([tf.shape(coords)[:-1], [nb.channels]], axis=0)
    return tf.reshape(tf.cast(out, nb.image_dtype), out_shape)


def _grad_images(ndim, kernel, images, coords, upstream):
    """eq. 6: every output spreads its gradient back over its neighbours."""
    nb = _Neighbours(images, coords, ndim, kernel)
    g = tf.reshape(tf.cast(upstream, nb.dtype), [nb.batch, -1, 1, nb.channels])
    contrib = tf.reshape(tf.expand_dims(nb.weight, -1) * g, [-1, nb.channels])
    grad = tf.math.unsorted_segment_sum(
        contrib, tf.reshape(nb.index, [-1]), num_segments=nb.batch * nb.pixels
    )
    return tf.cast(tf.reshape(grad, nb.shape), nb.image_dtype)


def _grad_coords(ndim, kernel, images, coords, upstream):
    """eq. 7: d out / d position along one axis swaps that axis' weights for their
    derivatives (-1, +1 per pixel, masked like the weights)."""
    nb = _Neighbours(images, coords, ndim, kernel)
    inside = _combine(
        [t.stacked("inside") for t in nb.taps], tf.logical_and
    )  # [B, N, K]
    g = tf.reshape(tf.cast(upstream, nb.dtype), [nb.batch, -1, 1, nb.channels])
    per_neighbour = tf.reduce_sum(nb.values(images, inside) * g, axis=-1)  # [B, N, K]
    grads = []
    for a in range(ndim):
        slot = _tap_slot(a, ndim)
        factors = [t.stacked("weight") for t in nb.taps]
        factors[slot] = nb.taps[slot].stacked("dweight")
        grads.append(tf.reduce_sum(per_neighbour * _combine(factors, tf.multiply), -1))
    grad = tf.reshape(tf.stack(grads, axis=-1), tf.shape(coords))
    return tf.cast(grad, nb.coord_dtype)


class _Corners(_Points):
    """The same neighbours as ``_Neighbours``, one ``[B, N]`` array per neighbour.

    Neighbour ``k`` is a tuple of tap numbers, one per axis (slowest first), in the
    (z, y, x) raster order of ``_Neighbours``.
    """

    def __init__(self, images, coords, ndim, kernel):
        super().__init__(images, coords, ndim, kernel)
        # Per axis and tap, [B, N] arrays. (Stacking them to [B, N, T] and
        # unstacking again costs as much as the [B, N, K] form: XLA does not fold it.)
        self.axes = self.taps
        self.offset = tf.expand_dims(tf.range(self.batch) * self.pixels, -1)  # [B, 1]
        self.neighbours = list(
            itertools.product(*(range(len(axis.index)) for axis in self.axes))
        )

    def index(self, k):
        """Flat ``[B, N]`` index of neighbour ``k`` into ``[B * pixels, C]``."""
        parts = [axis.index[t] for axis, t in zip(self.axes, k)]
        return functools.reduce(tf.add, parts) + self.offset

    def weight(self, k, derivative_slot=None):
        """``[B, N]`` weight of neighbour ``k``; with ``derivative_slot``, its
        derivative along that axis (the axis' weight swapped for its dweight)."""
        parts = [
            axis.dweight[t] if slot == derivative_slot else axis.weight[t]
            for slot, (axis, t) in enumerate(zip(self.axes, k))
        ]
        return functools.reduce(tf.multiply, parts)

    def inside(self, k):
        """``[B, N]`` bool: neighbour ``k`` exists."""
        return functools.reduce(
            tf.logical_and, [axis.inside[t] for axis, t in zip(self.axes, k)]
        )

    def values(self, images, k, keep):
        """``[B, N, C]`` values of neighbour ``k``; zeros where ``keep`` is False
        (a select, as in ``_Neighbours.values``)."""
        flat = tf.reshape(images, [-1, self.channels])  # [B*H*W, C]
        values = tf.gather(flat, self.index(k))
        if values.dtype != self.dtype:
            values = tf.cast(values, self.dtype)
        return tf.where(tf.expand_dims(keep, -1), values, tf.zeros_like(values))


def _forward_by_corner(ndim, kernel, images, coords):
    """``_forward`` as a sum over neighbours of ``[B, N, C]`` terms."""
    nb = _Corners(images, coords, ndim, kernel)
    out = None
    for k in nb.neighbours:
        weight = nb.weight(k)
        term = tf.expand_dims(weight, -1) * nb.values(images, k, weight != 0)
        out = term if out is None else out + term  # [B, N, C]
    out_shape = tf.concat([tf.shape(coords)[:-1], [nb.channels]], axis=0)
    return tf.reshape(tf.cast(out, nb.image_dtype), out_shape)


def _grad_images_by_corner(ndim, kernel, images, coords, upstream):
    """``_grad_images``: one scatter of all neighbours' contributions."""
    nb = _Corners(images, coords, ndim, kernel)
    g = tf.reshape(tf.cast(upstream, nb.dtype), [nb.batch, -1, nb.channels])
    index = tf.concat([tf.reshape(nb.index(k), [-1]) for k in nb.neighbours], 0)
    contrib = tf.concat(
        [
            tf.reshape(tf.expand_dims(nb.weight(k), -1) * g, [-1, nb.channels])
            for k in nb.neighbours
        ],
        axis=0,
    )  # [K*B*N, C]
    grad = tf.math.unsorted_segment_sum(
        contrib, index, num_segments=nb.batch * nb.pixels
    )
    return tf.cast(tf.reshape(grad, nb.shape), nb.image_dtype)


def _grad_coords_by_corner(ndim, kernel, images, coords, upstream):
    """``_grad_coords`` as a sum over neighbours of ``[B, N]`` terms."""
    nb = _Corners(images, coords, ndim, kernel)
    g = tf.reshape(tf.cast(upstream, nb.dtype), [nb.batch, -1, nb.channels])
    grads = [None] * ndim
    for k in nb.neighbours:
        per_neighbour = tf.reduce_sum(nb.values(images, k, nb.inside(k)) * g, -1)
        for a in range(ndim):
            term = per_neighbour * nb.weight(k, derivative_slot=_tap_slot(a, ndim))
            grads[a] = term if grads[a] is None else grads[a] + term  # [B, N]
    grad = tf.reshape(tf.stack(grads, axis=-1), tf.shape(coords))
    return tf.cast(grad, nb.coord_dtype)


class _Taps:
    """Per-axis neighbours of every point: one ``[B, N]`` array per tap (two for
    bilinear, one for nearest) of clipped flat-index parts, weights and masks."""

    def __init__(self, index, weight, dweight, inside):
        self.index = index  # int32, already multiplied by the axis stride
        self.weight = weight  # zero for neighbours outside the image
        self.dweight = dweight  # d weight / d normalised coordinate
        self.inside = inside  # bool: the neighbour exists

    def stacked(self, name):
        """The taps of field ``name`` stacked to ``[B, N, T]``."""
        return tf.stack(getattr(self, name), axis=-1)


def _tap_slot(coord_axis, ndim):
    """Taps are ordered slowest axis first (z, y, x); coordinates are (x, y, z)."""
    return ndim - 1 - coord_axis


def _taps(points, sizes, kernel, dtype, snap_eps):
    """Returns ``_Taps`` for each spatial axis, slowest first (D, H, W order)."""
    ndim = len(sizes)
    taps = []
    stride = 1
    for slot in reversed(range(ndim)):  # fastest axis (W, coordinate x) first
        size = sizes[slot]
        coord = points[..., _tap_slot(slot, ndim)]  # [B, N]
        size_f = tf.cast(size, dtype)
        scale = (size_f - 1.0) / 2.0
        pos = (coord + 1.0) * scale  # pixel units, 0 .. size - 1 inside
        # Clamp to just outside the image before any cast to int. The comparisons
        # are false for NaN, so NaN lands outside too; so do +-inf.
        pos = tf.where(pos > -2.0, pos, tf.constant(-2.0, dtype))
        pos = tf.where(pos < size_f + 1.0, pos, size_f + 1.0)
        # Rounding in (coord + 1) * scale puts exact pixel centres a few ulps off
        # (-1/3 on a 4-pixel axis lands at 0.99999994): snap those back so the
        # identity transform returns its input exactly.
        knot = tf.round(pos)
        # ulps of the coordinates' own dtype: float32 coords stay float32-accurate
        # even when float64 images lift the arithmetic to float64.
        tolerance = 2.0 * snap_eps * (size_f + 1.0)
        pos = tf.where(tf.abs(pos - knot) <= tolerance, knot, pos)
        if kernel == "nearest":
            i = tf.cast(tf.floor(pos + 0.5), tf.int32)
            inside = [(i >= 0) & (i < size)]
            index = [tf.clip_by_value(i, 0, size - 1) * stride]
            weight = [tf.cast(inside[0], dtype)]
            dweight = [tf.zeros_like(weight[0])]
        else:
            floor = tf.floor(pos)
            frac = pos - floor
            i0 = tf.cast(floor, tf.int32)
            i1 = i0 + 1
            inside = [(i0 >= 0) & (i0 < size), (i1 >= 0) & (i1 < size)]
            in0, in1 = (tf.cast(m, dtype) for m in inside)
            index = [
                tf.clip_by_value(i0, 0, size - 1) * stride,
                tf.clip_by_value(i1, 0, size - 1) * stride,
            ]
            weight = [(1.0 - frac) * in0, frac * in1]
            # Chain rule to normalised coordinates: d pos / d coord = scale.
            dweight = [-in0 * scale, in1 * scale]
        taps.append(_Taps(index, weight, dweight, inside))
        stride = stride * size
    return taps[::-1]


def _combine(parts, op):
    """Outer ``op`` of per-axis ``[B, N, T_a]`` parts into ``[B, N, prod T_a]``.

    The first part varies slowest, so neighbours come in (z, y, x) raster order.
    """
    out = parts[0]
    for part in parts[1:]:
        taps = out.shape[-1] * part.shape[-1]
        out = op(tf.expand_dims(out, -1), tf.expand_dims(part, -2))
        out = tf.reshape(out, tf.concat([tf.shape(out)[:-2], [taps]], axis=0))
    return out
