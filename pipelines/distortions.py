"""On-the-fly distortions of MNIST: every distorted dataset of both papers.

Specs: STN paper Appendix A.1-A.4, RNN-SPN paper §4 (``../shared/seeds/``).

Every function here works on a whole batch at once (after ``.batch()``), with the
project's own sampler and transforms, so the same code runs in ``tf.data`` on the
host and inside a training step on the accelerator. Randomness is stateless: each
example draws its numbers from its own key ``(seed, epoch, index)``
(:func:`example_keys`), so an example is the same whatever batch it lands in.

Geometry is written in pixel units (pixel centres at integers, ``(x, y[, z])`` =
``(column, row[, slice])``) and converted to the normalised θ of
``stn_tf.transforms`` at the end. A distortion maps a source digit to the canvas
by ``x_canvas = L (x_source - c) + t`` (``c`` the digit's centre); the sampler
reads the inverse. Digits that must stay "fully inside" are placed so that the
whole support of their ink (every source position bilinear sampling can read a
non-zero value from) lands inside the canvas: no ink is ever cut off.

Each function returns ``(images, labels, truth)``: float32 images in [0, 1],
channels-last; int32 labels; ``truth`` a dict of ground-truth tensors (parameters,
boxes, positions), documented per function. Boxes are ``(x0, y0, x1, y1)`` in pixel
edges: pixel ``(c, r)`` covers ``[c, c + 1) x [r, r + 1)``.
"""

from __future__ import annotations

import itertools
import math

import tensorflow as tf

from stn_tf import sampler, transforms

__all__ = [
    "Draws",
    "Pool",
    "addition",
    "colocalisation",
    "elastic",
    "example_keys",
    "extruded_3d",
    "paste",
    "plain",
    "projective",
    "projective_distance",
    "rotated",
    "rotated_translated_scaled",
    "sequence",
    "translated_cluttered",
]

# Uniform numbers drawn per example; the greediest dataset (co-localisation with
# 16 clutter patches) uses 82 of them.
NUM_DRAWS = 96
DIGIT = 28  # MNIST digits are 28x28
_UNIT = 2.0 / (DIGIT - 1)  # normalised units per pixel of the 28x28 digit image
EXTRUSION_DEPTH = 8  # voxels a 3D digit is extruded along z


class Pool:
    """The digits a split can draw from (for clutter and extra digits), as tensors."""

    def __init__(self, images, labels):
        self.images = tf.convert_to_tensor(images, tf.uint8)  # [N, 28, 28]
        self.labels = tf.cast(labels, tf.int32)  # [N]
        self.size = int(self.images.shape[0])

    def digits(self, indices):
        """Float digits ``[..., 28, 28]`` in [0, 1] and their labels."""
        images = tf.cast(tf.gather(self.images, indices), tf.float32) / 255.0
        return images, tf.gather(self.labels, indices)

    def others(self, indices, u):
        """For each uniform ``u``, a digit index other than ``indices`` (same shape as u)."""
        shift = 1 + tf.minimum(tf.cast(u * (self.size - 1), tf.int32), self.size - 2)
        while len(indices.shape) < len(u.shape):
            indices = tf.expand_dims(indices, -1)
        return (indices + shift) % self.size


TEST_SEED = 150602025  # the STN paper's arXiv number: fixes the test sets for good


def example_keys(seed, epochs, indices) -> tf.Tensor:
    """Per-example random keys ``[B, 3]`` int32: (run seed, epoch, index)."""
    epochs, indices = tf.cast(epochs, tf.int32), tf.cast(indices, tf.int32)
    seed = tf.broadcast_to(tf.cast(seed, tf.int32), tf.shape(indices))
    return tf.stack([seed, epochs, indices], axis=-1)


class Draws:
    """Hands out each example's uniform numbers, ``NUM_DRAWS`` per key, in order.

    Each key's numbers come from the stateless seed ``fold_in((seed, epoch), index)``.
    Every word of a key stays below 2**31: under XLA, stateless seeds keep only the
    low 32 bits of each word.
    """

    def __init__(self, keys):
        def draw(key):
            seed = tf.random.experimental.stateless_fold_in(key[:2], key[2])
            return tf.random.stateless_uniform([NUM_DRAWS], seed=seed)

        self._u = tf.map_fn(
            draw, keys, fn_output_signature=tf.float32
        )  # [B, NUM_DRAWS]
        self._next = 0

    def uniform(self, low=0.0, high=1.0, n=None):
        """``[B]`` (or ``[B, n]``) uniform in ``[low, high)``."""
        count = 1 if n is None else n
        if self._next + count > NUM_DRAWS:
            raise ValueError(
                f"a distortion asked for more than NUM_DRAWS={NUM_DRAWS} numbers"
            )
        u = self._u[:, self._next : self._next + count]
        self._next += count
        u = u[:, 0] if n is None else u
        return low + (high - low) * u

    def normal(self, std, n):
        """``[B, n]`` normal with mean 0 (inverse CDF of the uniforms)."""
        u = tf.clip_by_value(self.uniform(n=n), 1e-7, 1.0 - 1e-7)
        return std * tf.math.ndtri(u)

    def integers(self, low, high, n=None):
        """``[B]`` (or ``[B, n]``) integers uniform in ``[low, high]`` (tensors allowed)."""
        u = self.uniform(n=n)
        low, high = tf.cast(low, tf.float32), tf.cast(high, tf.float32)
        if n is not None and len(low.shape) == 1:
            low, high = low[:, None], high[:, None]
        value = tf.floor(low + u * (high - low + 1.0))
        return tf.cast(tf.minimum(value, high), tf.int32)


# --------------------------------------------------------------------------------------
# Geometry


def _ink_span(mask):
    """First and last True along the last axis ``[B, n]`` (0, n - 1 when none)."""
    n = mask.shape[-1]
    ints = tf.cast(mask, tf.int32)
    first = tf.argmax(ints, axis=-1, output_type=tf.int32)
    last = n - 1 - tf.argmax(tf.reverse(ints, [-1]), axis=-1, output_type=tf.int32)
    found = tf.reduce_any(mask, axis=-1)
    return tf.where(found, first, 0), tf.where(found, last, n - 1)


def _ink_box(digits):
    """Pixel centres bounding the ink of ``[B, H, W]``: lo ``[B, 2]``, hi ``[B, 2]`` (x, y)."""
    ink = digits > 0
    x0, x1 = _ink_span(tf.reduce_any(ink, axis=1))
    y0, y1 = _ink_span(tf.reduce_any(ink, axis=2))
    lo = tf.cast(tf.stack([x0, y0], -1), tf.float32)
    hi = tf.cast(tf.stack([x1, y1], -1), tf.float32)
    return lo, hi


def _box_corners(lo, hi):
    """All ``2**n`` corners ``[B, 2**n, n]`` of boxes given by ``lo``, ``hi`` ``[B, n]``."""
    n = lo.shape[-1]
    corners = [
        tf.stack([hi[:, a] if bit else lo[:, a] for a, bit in enumerate(bits)], -1)
        for bits in itertools.product((0, 1), repeat=n)
    ]
    return tf.stack(corners, axis=1)


def _extent(linear, lo, hi):
    """Min and max ``[B, n]`` of ``linear @ p`` over the box ``[lo, hi]``."""
    mapped = tf.einsum("bij,bkj->bki", linear, _box_corners(lo, hi))
    return tf.reduce_min(mapped, axis=1), tf.reduce_max(mapped, axis=1)


def _fit_shift(linear, lo, hi, canvas, u):
    """A shift ``t`` putting ``linear @ [lo, hi] + t`` inside the canvas, uniformly.

    ``canvas`` is the size along (x, y[, z]); the region must land within the
    canvas's pixel edges ``[-0.5, size - 0.5]``. Too big a region is centred.
    """
    low, high = _extent(linear, lo, hi)
    size = tf.constant(canvas, tf.float32)
    t_min, t_max = -0.5 - low, size - 0.5 - high
    return tf.where(t_max >= t_min, t_min + u * (t_max - t_min), (t_min + t_max) / 2)


def _box(linear, lo, hi, centre, shift):
    """Axis-aligned box in pixel edges ``[B, 2n]`` of the mapped source box."""
    low, high = _extent(linear, lo - centre, hi - centre)
    return tf.concat([low + shift + 0.5, high + shift + 0.5], axis=-1)


def _warp(images, linear, centre, shift, canvas):
    """Samples ``images`` (``[B, H, W]`` or ``[B, D, H, W]``) so that source point
    ``p`` lands at ``linear (p - centre) + shift``; returns the warp and its θ."""
    n = linear.shape[-1]
    inverse = tf.linalg.inv(linear)
    offset = centre - tf.einsum("bij,bj->bi", inverse, shift)
    matrix = tf.concat([inverse, offset[..., None]], axis=-1)  # canvas -> source pixels
    out_size = tuple(reversed(canvas))  # (H, W) or (D, H, W)
    theta = transforms.affine_from_pixels(matrix, images.shape[1:], out_size)
    name = "affine" if n == 2 else "affine3d"
    coords = transforms.get_transform(name).grid(theta, out_size)
    warped = sampler.sample(images[..., None], coords, jit_compile=False)
    return warped, theta


def _rotation(angle):
    """``[B, 2, 2]`` rotation by ``angle`` (radians; x right, y down: clockwise on screen)."""
    c, s = tf.cos(angle), tf.sin(angle)
    return tf.reshape(tf.stack([c, -s, s, c], -1), [-1, 2, 2])


def _scale(matrix, s):
    return matrix * s[:, None, None]


def paste(canvas, patches, top_left):
    """Pastes patches into canvases at integer positions, keeping the brighter pixel.

    Args:
        canvas: ``[B, H, W]``.
        patches: ``[B, K, h, w]``.
        top_left: ``[B, K, 2]`` int32 ``(x, y)`` of each patch's top-left pixel,
            with the patch inside the canvas.

    Returns:
        ``[B, H, W]``: ``max(canvas, patch)`` where a patch lies.
    """
    b, k, h, w = (tf.shape(patches)[i] for i in range(4))
    rows = top_left[..., 1, None, None] + tf.range(h)[:, None]  # [B, K, h, 1]
    cols = top_left[..., 0, None, None] + tf.range(w)[None, :]  # [B, K, 1, w]
    batch = tf.broadcast_to(tf.range(b)[:, None, None, None], [b, k, h, w])
    index = tf.stack(
        [
            batch,
            tf.broadcast_to(rows, [b, k, h, w]),
            tf.broadcast_to(cols, [b, k, h, w]),
        ],
        -1,
    )
    return tf.tensor_scatter_nd_max(
        canvas, tf.reshape(index, [-1, 3]), tf.reshape(patches, [-1])
    )


def _clutter(canvas, pool, indices, draws, count, size):
    """Adds ``count`` random ``size``x``size`` crops of other digits (STN A.4, RNN-SPN §4).

    Returns the canvas and the clutter's truth: ``clutter_boxes`` ``[B, count, 4]``,
    ``clutter_index`` (the digits cropped) and ``clutter_crop`` (each crop's
    top-left ``(x, y)`` in its digit) ``[B, count(, 2)]``.
    """
    n = canvas.shape[-1]
    others = pool.others(indices, draws.uniform(n=count))  # [B, count]
    crop = tf.stack([draws.integers(0, DIGIT - size, n=count) for _ in range(2)], -1)
    place = tf.stack([draws.integers(0, n - size, n=count) for _ in range(2)], -1)
    digits, _ = pool.digits(others)  # [B, count, 28, 28]
    rows = crop[..., 1, None] + tf.range(size)  # [B, count, size]
    cols = crop[..., 0, None] + tf.range(size)
    patches = tf.gather(digits, rows, axis=2, batch_dims=2)  # [B, count, size, 28]
    patches = tf.gather(patches, cols, axis=3, batch_dims=2)  # [B, count, size, size]
    canvas = paste(canvas, patches, place)
    xy = tf.cast(place, tf.float32)
    truth = {
        "clutter_boxes": tf.concat([xy, xy + size], axis=-1),
        "clutter_index": others,
        "clutter_crop": crop,
    }
    return canvas, truth


def _place_digits(digits, canvas_size, top_left):
    """Digits ``[B, K, 28, 28]`` pasted at integer ``top_left`` ``[B, K, 2]`` on a blank canvas."""
    b = tf.shape(digits)[0]
    canvas = tf.zeros([b, canvas_size, canvas_size], tf.float32)
    return paste(canvas, digits, top_left)


def _ink_boxes_at(digits, top_left):
    """Boxes ``[B, K, 4]`` of the ink of digits ``[B, K, 28, 28]`` placed at ``top_left``."""
    shape = tf.shape(digits)
    lo, hi = _ink_box(tf.reshape(digits, [-1, DIGIT, DIGIT]))
    lo = tf.reshape(lo, [shape[0], shape[1], 2])
    hi = tf.reshape(hi, [shape[0], shape[1], 2])
    xy = tf.cast(top_left, tf.float32)
    return tf.concat([lo + xy, hi + xy + 1.0], axis=-1)


# --------------------------------------------------------------------------------------
# The datasets


def plain(pool, indices, draws):
    """MNIST as it is: ``[B, 28, 28, 1]``. Truth: ``index``."""
    del draws
    digits, labels = pool.digits(indices)
    return digits[..., None], labels, {"index": indices}


def _rotate_scale_place(digits, draws, *, angle, scale, canvas):
    """Rotates and scales about the digit's centre, then places it uniformly in a
    ``canvas`` x ``canvas`` image with all its ink inside (or, with ``canvas`` 28 and
    no scaling, keeps it centred)."""
    a = draws.uniform(-angle, angle) * (math.pi / 180)
    s = draws.uniform(*scale) if scale else tf.ones_like(a)
    linear = _scale(_rotation(a), s)
    centre = tf.constant([(DIGIT - 1) / 2] * 2)
    lo, hi = _ink_box(digits)
    u = draws.uniform(n=2)
    if canvas == DIGIT and not scale:
        shift = tf.broadcast_to(centre, tf.shape(u))  # R: rotate in place
    else:  # the bilinear support of the ink, one pixel past its extreme centres
        shift = _fit_shift(
            linear, lo - 1.0 - centre, hi + 1.0 - centre, (canvas, canvas), u
        )
    warped, theta = _warp(digits, linear, centre, shift, (canvas, canvas))
    truth = {
        "angle": a * (180 / math.pi),
        "scale": s,
        "shift": shift,
        "theta": theta,
        "boxes": _box(linear, lo - 0.5, hi + 0.5, centre, shift)[:, None, :],
    }
    return warped, truth


def rotated(pool, indices, draws):
    """R (STN A.4): rotation uniform in ±90°, 28x28.

    Truth: ``angle`` (degrees, clockwise on screen), ``scale`` (1), ``shift``
    (canvas centre of the digit), ``theta`` (affine, canvas -> digit), ``boxes``
    ``[B, 1, 4]`` (the rotated ink box's bounds), ``index``.
    """
    digits, labels = pool.digits(indices)
    images, truth = _rotate_scale_place(
        digits, draws, angle=90.0, scale=None, canvas=DIGIT
    )
    return images, labels, {**truth, "index": indices}


def rotated_translated_scaled(pool, indices, draws):
    """RTS (STN A.4): rotation ±45°, scale 0.7-1.2, random place in 42x42.

    Truth: as :func:`rotated`.
    """
    digits, labels = pool.digits(indices)
    images, truth = _rotate_scale_place(
        digits, draws, angle=45.0, scale=(0.7, 1.2), canvas=42
    )
    return images, labels, {**truth, "index": indices}


def projective(pool, indices, draws):
    """P (STN A.4): scale 0.75-1.0, then each corner of the 28x28 digit image
    stretched by N(0, 5 px) along each axis; 28x28.

    A.4: "stretching each corner of an MNIST digit by an amount sampled from a
    normal distribution with zero mean and 5 pixel standard deviation". The same
    words for E ("by an amount sampled from a normal distribution with zero mean
    and 1.5 pixel standard deviation") are read per coordinate, and so is this
    one: a corner's x and y offsets are each drawn from N(0, 5 px) (its distance
    moved is then 6.3 px on average). :func:`projective_distance` is the other
    reading, one distance per corner in a random direction.

    Truth: ``scale``, ``corners`` ``[B, 4, 2]`` (where the digit's corners land,
    in pixel centres; top-left, top-right, bottom-right, bottom-left), ``theta``
    (projective, canvas -> digit), ``index``.
    """
    digits, labels = pool.digits(indices)
    s = draws.uniform(0.75, 1.0)
    offsets = tf.reshape(draws.normal(5.0 * _UNIT, 8), [-1, 4, 2])  # x, y per corner
    return _stretch_corners(digits, labels, indices, s, offsets)


def projective_distance(pool, indices, draws):
    """P read as a distance (``mnist_p_distance``): scale 0.75-1.0, then each
    corner of the 28x28 digit image moved a distance drawn from N(0, 5 px) in a
    uniformly random direction; 28x28.

    The other reading of A.4's "stretching each corner ... by an amount sampled
    from a normal distribution with zero mean and 5 pixel standard deviation":
    "an amount" as one number per corner (its distance moved is then 4.0 px on
    average). Truth: as :func:`projective`.
    """
    digits, labels = pool.digits(indices)
    s = draws.uniform(0.75, 1.0)
    amount = draws.normal(5.0 * _UNIT, 4)  # [B, 4]: how far each corner moves
    direction = draws.uniform(0.0, 2 * math.pi, 4)  # [B, 4]: which way
    offsets = amount[..., None] * tf.stack([tf.cos(direction), tf.sin(direction)], -1)
    return _stretch_corners(digits, labels, indices, s, offsets)


def _stretch_corners(digits, labels, indices, s, offsets):
    """The digits scaled by ``s`` about their centre, their corners then moved by
    ``offsets`` ``[B, 4, 2]`` (normalised units): the projective map that does it."""
    frame = tf.constant([[-1, -1], [1, -1], [1, 1], [-1, 1]], tf.float32)
    moved = s[:, None, None] * frame + offsets
    theta = transforms.projective_from_points(
        moved, tf.broadcast_to(frame, tf.shape(moved))
    )
    coords = transforms.projective_grid(theta, (DIGIT, DIGIT))
    images = sampler.bilinear_sample(digits[..., None], coords, jit_compile=False)
    corners = (moved + 1.0) / _UNIT
    return (
        images,
        labels,
        {"scale": s, "corners": corners, "theta": theta, "index": indices},
    )


def elastic(pool, indices, draws):
    """E (STN A.4): scale 0.75-1.0, then the 16 control points of a 4x4 thin-plate
    spline moved by N(0, 1.5 px); 28x28.

    Truth: ``scale``, ``theta`` (``[B, 32]`` tps displacements of the canvas's control
    points, normalised, before the scaling), ``index``.
    """
    digits, labels = pool.digits(indices)
    s = draws.uniform(0.75, 1.0)
    theta = draws.normal(1.5 * _UNIT, 32)
    coords = transforms.tps_grid(theta, (DIGIT, DIGIT)) / s[:, None, None, None]
    images = sampler.bilinear_sample(digits[..., None], coords, jit_compile=False)
    return images, labels, {"scale": s, "theta": theta, "index": indices}


def _translated(pool, indices, draws, *, canvas, clutter, clutter_size):
    digits, labels = pool.digits(indices)
    top_left = tf.stack([draws.integers(0, canvas - DIGIT) for _ in range(2)], -1)[
        :, None
    ]
    images = _place_digits(digits[:, None], canvas, top_left)
    images, clutter_truth = _clutter(
        images, pool, indices, draws, clutter, clutter_size
    )
    xy = tf.cast(top_left[:, 0], tf.float32)
    truth = {
        "position": top_left[:, 0],
        "frame": tf.concat([xy, xy + DIGIT], axis=-1),
        "boxes": _ink_boxes_at(digits[:, None], top_left),
        **clutter_truth,
        "index": indices,
    }
    return images[..., None], labels, truth


def translated_cluttered(pool, indices, draws):
    """TC (STN A.4): the digit at a random place in 60x60, six 6x6 crops of other digits.

    Truth: ``position`` (top-left ``(x, y)``), ``frame`` (the 28x28 box), ``boxes``
    ``[B, 1, 4]`` (ink), ``clutter_boxes`` ``[B, 6, 4]``, ``clutter_index`` and
    ``clutter_crop`` (which digit each crop came from, and where), ``index``.
    """
    return _translated(pool, indices, draws, canvas=60, clutter=6, clutter_size=6)


def colocalisation(pool, indices, draws, *, clutter):
    """T / TC co-localisation (STN A.2): the digit placed uniformly in 84x84, plus
    sixteen 6x6 clutter crops for TC. Truth: as :func:`translated_cluttered`; the
    ground-truth box of the paper is ``frame``."""
    return _translated(
        pool, indices, draws, canvas=84, clutter=16 if clutter else 0, clutter_size=6
    )


def sequence(pool, indices, draws):
    """Cluttered MNIST sequences (RNN-SPN §4): three digits on 100x100.

    The digits sit along a line of slope uniform in ±45°, ``dx`` in [28, 36] pixels
    apart horizontally (so their 28x28 frames never overlap and the whole sequence
    fits), the first at a random place; then eight 9x9 crops of other digits. The
    example's own digit comes first (left), two random others follow.

    Labels: ``[B, 3]``, the digits left to right. Truth: ``positions`` ``[B, 3, 2]``,
    ``boxes`` ``[B, 3, 4]`` (ink), ``frames`` ``[B, 3, 4]``, ``slope`` (degrees),
    ``clutter_boxes`` ``[B, 8, 4]``, ``clutter_index``, ``clutter_crop``,
    ``index`` ``[B, 3]``.
    """
    canvas = 100
    slope = draws.uniform(-45.0, 45.0)
    dx = draws.uniform(DIGIT, (canvas - DIGIT) / 2)  # 2 dx + 28 <= 100
    dy = dx * tf.tan(slope * (math.pi / 180))
    x0 = draws.uniform(0.0, 1.0) * (canvas - DIGIT - 2 * dx)
    rise = tf.maximum(-2 * dy, 0.0)
    fall = tf.maximum(2 * dy, 0.0)
    y0 = rise + draws.uniform(0.0, 1.0) * (canvas - DIGIT - rise - fall)
    steps = tf.range(3, dtype=tf.float32)
    xs = x0[:, None] + dx[:, None] * steps
    ys = y0[:, None] + dy[:, None] * steps
    top_left = tf.clip_by_value(
        tf.cast(tf.round(tf.stack([xs, ys], -1)), tf.int32), 0, canvas - DIGIT
    )  # [B, 3, 2]
    all_indices = tf.concat(
        [indices[:, None], pool.others(indices, draws.uniform(n=2))], axis=1
    )
    digits, labels = pool.digits(all_indices)  # [B, 3, 28, 28], [B, 3]
    images = _place_digits(digits, canvas, top_left)
    images, clutter_truth = _clutter(images, pool, indices, draws, 8, 9)
    xy = tf.cast(top_left, tf.float32)
    truth = {
        "positions": top_left,
        "boxes": _ink_boxes_at(digits, top_left),
        "frames": tf.concat([xy, xy + DIGIT], axis=-1),
        "slope": slope,
        **clutter_truth,
        "index": all_indices,
    }
    return images[..., None], labels, truth


def addition(pool, indices, draws):
    """MNIST addition (STN A.1): two 42x42 channels, each an independent RTS digit.

    Labels: the sum, 0-18. Truth: per channel (leading axis 2 after the batch):
    ``angle``, ``scale``, ``shift``, ``theta``, ``boxes`` ``[B, 2, 4]``; ``digits``
    ``[B, 2]`` (the two labels); ``index`` ``[B, 2]``.
    """
    both = tf.concat(
        [indices[:, None], pool.others(indices, draws.uniform(n=1))], axis=1
    )
    channels, truths, labels = [], [], []
    for k in range(2):
        digits, label = pool.digits(both[:, k])
        image, truth = _rotate_scale_place(
            digits, draws, angle=45.0, scale=(0.7, 1.2), canvas=42
        )
        channels.append(image)
        truths.append(truth)
        labels.append(label)
    truth = {key: tf.stack([t[key] for t in truths], axis=1) for key in truths[0]}
    truth["boxes"] = truth["boxes"][:, :, 0]
    truth.update(digits=tf.stack(labels, axis=1), index=both)
    return tf.concat(channels, axis=-1), labels[0] + labels[1], truth


def _rotation_3d(angles):
    """``[B, 3, 3]`` = Rz Ry Rx for angles ``[B, 3]`` (about x, y, z; radians)."""
    c, s = tf.cos(angles), tf.sin(angles)
    one, zero = tf.ones_like(c[:, 0]), tf.zeros_like(c[:, 0])

    def mat(*rows):
        return tf.reshape(tf.stack(rows, -1), [-1, 3, 3])

    rx = mat(one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0])
    ry = mat(c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1])
    rz = mat(c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one)
    return rz @ ry @ rx


def extruded_3d(pool, indices, draws):
    """3D MNIST (STN A.3): the digit extruded ``EXTRUSION_DEPTH`` voxels along z,
    rotated about x, y and z by angles uniform in ±45° each, then placed uniformly
    in a 60x60x60 volume with all of it inside. ``[B, 60, 60, 60, 1]`` (D, H, W).

    Truth: ``angles`` ``[B, 3]`` (degrees about x, y, z), ``rotation`` ``[B, 3, 3]``,
    ``shift``, ``theta`` (affine3d, volume -> extruded digit), ``index``.
    """
    canvas = 60
    digits, labels = pool.digits(indices)
    volume = tf.tile(digits[:, None], [1, EXTRUSION_DEPTH, 1, 1])  # [B, D, 28, 28]
    angles = draws.uniform(-45.0, 45.0, n=3) * (math.pi / 180)
    rotation = _rotation_3d(angles)
    lo, hi = _ink_box(digits)
    depth = tf.broadcast_to(
        tf.constant([[0.0, EXTRUSION_DEPTH - 1.0]]), [tf.shape(lo)[0], 2]
    )
    lo = tf.concat([lo, depth[:, :1]], -1)
    hi = tf.concat([hi, depth[:, 1:]], -1)
    centre = tf.constant([(DIGIT - 1) / 2, (DIGIT - 1) / 2, (EXTRUSION_DEPTH - 1) / 2])
    u = draws.uniform(n=3)
    shift = _fit_shift(rotation, lo - 1.0 - centre, hi + 1.0 - centre, (canvas,) * 3, u)
    images, theta = _warp(volume, rotation, centre, shift, (canvas,) * 3)
    truth = {
        "angles": angles * (180 / math.pi),
        "rotation": rotation,
        "shift": shift,
        "theta": theta,
        "index": indices,
    }
    return images, labels, truth
