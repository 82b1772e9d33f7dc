"""Tests of the distorted datasets against NumPy oracles and the papers' specs.

Oracles: images are rebuilt in NumPy from each example's ground truth (bilinear
sampling written as the separable sum of eq. 5, pasting by index), so a wrong
distortion, a wrong truth or a wrong spec (range, canvas, count) fails here.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from stn_tf.pipelines import datasets, mnist

DIGIT = 28


@pytest.fixture(scope="module")
def train_digits():
    return mnist.load_embedded("train")


@pytest.fixture(scope="module")
def test_digits():
    return mnist.load_embedded("test")


def _batch(name, digits, size, *, training=True, seed=0, step=0):
    pipeline = datasets.Pipeline(
        name, digits, batch_size=size, training=training, seed=seed
    )
    batch = next(iter(pipeline.dataset(start_step=step)))
    return tf.nest.map_structure(lambda t: t.numpy(), batch)


# --------------------------------------------------------------------------------------
# NumPy oracles


def _kernel(pos, n):
    """``[P, n]`` bilinear weights max(0, 1 - |pos - j|) of each pixel j (eq. 5)."""
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n)[None, :]))


def np_bilinear(image, x, y):
    """Samples ``[H, W]`` at pixel positions ``x``, ``y`` (any shape); zeros outside."""
    h, w = image.shape
    kx, ky = _kernel(x.ravel(), w), _kernel(y.ravel(), h)
    return np.einsum("pn,nm,pm->p", ky, image, kx).reshape(x.shape)


def np_affine_warp(digit, linear, centre, shift, canvas):
    """The canvas where source point p lands at ``linear (p - centre) + shift``."""
    rows, cols = np.mgrid[0:canvas, 0:canvas].astype(np.float64)
    inverse = np.linalg.inv(linear)
    rel = np.stack([cols - shift[0], rows - shift[1]], -1) @ inverse.T + centre
    return np_bilinear(digit, rel[..., 0], rel[..., 1])


def np_homography(src, dst):
    """3x3 H with H @ (src, 1) ~ (dst, 1) for four point pairs (direct linear transform)."""
    rows = []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.array(rows))
    return vt[-1].reshape(3, 3) / vt[-1, -1]


def _rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _digit(pool_digits, index):
    return pool_digits.images[index].astype(np.float64) / 255.0


def np_paste(canvas, patch, x, y):
    h, w = patch.shape
    canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], patch)


def np_clutter(canvas, digits, truth, i, size):
    for j, (cx, cy), (x0, y0, _, _) in zip(
        truth["clutter_index"][i], truth["clutter_crop"][i], truth["clutter_boxes"][i]
    ):
        patch = _digit(digits, j)[cy : cy + size, cx : cx + size]
        np_paste(canvas, patch, int(x0), int(y0))


def _support_inside(digit, linear, centre, shift, canvas):
    """Every source point bilinear sampling can read ink from lands inside the canvas."""
    ys, xs = np.nonzero(digit)
    offsets = np.array([[dx, dy] for dx in (-1, 1) for dy in (-1, 1)])
    points = (np.stack([xs, ys], -1)[:, None, :] + offsets).reshape(-1, 2)
    mapped = (points - centre) @ linear.T + shift
    return mapped.min() >= -0.5 - 1e-4 and mapped.max() <= canvas - 0.5 + 1e-4


def _assert_covers(values, low, high, margin):
    """All values in [low, high], and some within ``margin`` of each end."""
    assert values.min() >= low and values.max() <= high
    assert values.min() < low + margin and values.max() > high - margin


# --------------------------------------------------------------------------------------
# Every dataset


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_every_dataset_has_the_declared_shapes_labels_and_value_range(
    name, train_digits
):
    spec = datasets.get_dataset(name)
    size = 2 if name == "mnist_3d" else 8
    batch = _batch(name, train_digits, size)
    assert batch["image"].shape == (size, *spec.shape)
    assert batch["image"].dtype == np.float32
    assert np.isfinite(batch["image"]).all()
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0 + 1e-6
    assert batch["image"].max() > 0.5  # a digit is there
    assert batch["label"].shape == (size, *spec.label_shape)
    assert batch["label"].dtype == np.int32
    assert 0 <= batch["label"].min() and batch["label"].max() < spec.num_classes


def test_unknown_dataset_and_bad_arguments_are_refused(train_digits):
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist_x'.*mnist_rts"):
        datasets.get_dataset("mnist_x")
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer.*0"):
        datasets.Pipeline("mnist", train_digits, batch_size=0, training=True)
    with pytest.raises(ValueError, match=r"augment_on must be one of.*'gpu'"):
        datasets.Pipeline("mnist", train_digits, batch_size=4, training=True).dataset(
            augment_on="gpu"
        )
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*31\).*-1"):
        datasets.Pipeline("mnist", train_digits, batch_size=2, training=True, seed=-1)
    small = mnist.Digits(np.zeros((3, 32, 32), np.uint8), np.zeros(3, np.int32), "tiny")
    with pytest.raises(
        ValueError, match=r"tiny: the distortions expect 28x28.*\(32, 32\)"
    ):
        datasets.Pipeline("mnist", small, batch_size=2, training=True)


def test_plain_mnist_is_the_digits_scaled_to_unit_range(test_digits):
    batch = _batch("mnist", test_digits, 16, training=False)
    # (XLA turns / 255 into * (1 / 255): one rounding apart at most)
    np.testing.assert_allclose(
        batch["image"][..., 0], test_digits.images[:16] / 255.0, rtol=2e-7
    )
    np.testing.assert_array_equal(batch["label"], test_digits.labels[:16])


# --------------------------------------------------------------------------------------
# Streams: determinism, epochs, resuming, fixed test sets, host == device


def test_same_seed_same_bytes_other_seed_or_epoch_other_images(train_digits):
    a = _batch("mnist_rts", train_digits, 32, seed=5)
    b = _batch("mnist_rts", train_digits, 32, seed=5)
    c = _batch("mnist_rts", train_digits, 32, seed=6)
    assert a["image"].tobytes() == b["image"].tobytes()
    assert not np.array_equal(a["image"], c["image"])
    # The same digit in two epochs is distorted differently.
    pipeline = datasets.Pipeline(
        "mnist_rts", train_digits, batch_size=8, training=True, seed=5
    )
    index = tf.range(8)
    first = pipeline.distort({"index": index, "epoch": tf.zeros(8, tf.int32)})
    second = pipeline.distort({"index": index, "epoch": tf.ones(8, tf.int32)})
    np.testing.assert_array_equal(first["label"], second["label"])
    assert np.all(np.abs(first["truth"]["angle"] - second["truth"]["angle"]) > 0)


def test_training_stream_is_a_fresh_permutation_each_epoch_and_resumes_at_any_step(
    train_digits,
):
    n, b = len(train_digits), 500  # 10 steps per epoch
    pipeline = datasets.Pipeline(
        "mnist", train_digits, batch_size=b, training=True, seed=3
    )
    steps = list(pipeline.index_batches().take(21).as_numpy_iterator())
    epoch0 = np.concatenate([s["index"] for s in steps[:10]])
    epoch1 = np.concatenate([s["index"] for s in steps[10:20]])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(n))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(n))
    assert not np.array_equal(epoch0, epoch1)
    assert {int(e) for s in steps[:10] for e in s["epoch"]} == {0}
    assert {int(e) for s in steps[10:20] for e in s["epoch"]} == {1}
    # Resuming at step 13 gives what step 13 of the uninterrupted run gave.
    resumed = next(iter(pipeline.dataset(start_step=13)))
    whole = list(pipeline.dataset().take(14))[13]
    assert resumed["image"].numpy().tobytes() == whole["image"].numpy().tobytes()


def test_test_set_is_fixed_whatever_the_seed_and_batch_size(test_digits):
    a = datasets.Pipeline("mnist_tc", test_digits, batch_size=7, training=False, seed=1)
    b = datasets.Pipeline(
        "mnist_tc", test_digits, batch_size=16, training=False, seed=2
    )
    first = np.concatenate([x["image"].numpy() for x in a.dataset().take(3)])[:16]
    assert first.tobytes() == next(iter(b.dataset()))["image"].numpy().tobytes()
    batches = list(b.dataset())
    assert len(batches) == b.steps_per_epoch == math.ceil(len(test_digits) / 16)
    assert sum(len(x["label"]) for x in batches) == len(test_digits)  # every digit once
    with pytest.raises(ValueError, match=r"one fixed pass"):
        b.dataset(start_step=1)


@pytest.mark.parametrize(
    "name", ["mnist_rts", "mnist_sequence", "mnist_addition", "mnist_e"]
)
def test_host_and_device_paths_give_the_same_bytes(name, train_digits):
    pipeline = datasets.Pipeline(
        name, train_digits, batch_size=16, training=True, seed=11
    )
    host = next(iter(pipeline.dataset(start_step=4, augment_on="host")))
    raw = next(iter(pipeline.dataset(start_step=4, augment_on="device")))
    assert set(raw) == {"index", "epoch"}  # only indices cross to the device

    @tf.function
    def step(raw):  # as a training step would: distortion inside the compiled step
        return pipeline.distort(raw)

    device = step(raw)
    assert host["image"].numpy().tobytes() == device["image"].numpy().tobytes()
    np.testing.assert_array_equal(host["label"], device["label"])


# --------------------------------------------------------------------------------------
# Each distortion against its oracle and the spec


def _check_affine_examples(batch, digits, canvas, channel=None):
    truth = batch["truth"]
    for i in range(len(batch["image"])):
        pick = (
            (lambda k: truth[k][i])
            if channel is None
            else (lambda k: truth[k][i][channel])
        )
        digit = _digit(digits, pick("index"))
        linear = pick("scale") * _rotation(pick("angle"))
        centre = np.array([13.5, 13.5])
        expected = np_affine_warp(digit, linear, centre, pick("shift"), canvas)
        got = batch["image"][i, ..., 0 if channel is None else channel]
        np.testing.assert_allclose(got, expected, atol=2e-5)
        box = pick("boxes").reshape(-1)
        if canvas != DIGIT:  # placed with all its ink inside (R rotates in place)
            assert _support_inside(digit, linear, centre, pick("shift"), canvas)
            assert box[0] >= 0 and box[1] >= 0 and box[2] <= canvas and box[3] <= canvas
        # No ink outside the ink box (one pixel of bilinear spread, scaled, allowed).
        pad = 1.0 * pick("scale") + 1e-3
        rows, cols = np.mgrid[0:canvas, 0:canvas] + 0.5
        outside = (
            (cols < box[0] - pad)
            | (cols > box[2] + pad)
            | (rows < box[1] - pad)
            | (rows > box[3] + pad)
        )
        assert np.all(got[outside] == 0)


def test_rotated_matches_the_oracle_and_covers_plus_minus_90_degrees(train_digits):
    batch = _batch("mnist_r", train_digits, 256)
    _check_affine_examples({**batch, "image": batch["image"][:24]}, train_digits, DIGIT)
    angle = batch["truth"]["angle"]
    _assert_covers(angle, -90, 90, margin=10)
    np.testing.assert_array_equal(batch["truth"]["scale"], 1.0)


def test_rts_matches_the_oracle_stays_inside_and_covers_the_ranges(train_digits):
    batch = _batch("mnist_rts", train_digits, 256, seed=2)
    _check_affine_examples({**batch, "image": batch["image"][:24]}, train_digits, 42)
    angle, scale, shift = (batch["truth"][k] for k in ("angle", "scale", "shift"))
    _assert_covers(angle, -45, 45, margin=5)
    _assert_covers(scale, 0.7, 1.2, margin=0.05)
    # Placed anywhere: the digit centre moves over most of the canvas.
    assert shift.min() < 14 and shift.max() > 28
    for i in range(24, 256):  # every example keeps all its ink inside the canvas
        digit = _digit(train_digits, batch["truth"]["index"][i])
        linear = scale[i] * _rotation(angle[i])
        assert _support_inside(digit, linear, np.array([13.5, 13.5]), shift[i], 42)


def _projective_moves(name, train_digits):
    """The corner moves of 512 examples of a P reading, in pixels ``[2048, 2]``,
    after checking each of 16 images against a NumPy homography of its corners."""
    batch = _batch(name, train_digits, 512, seed=4)
    truth = batch["truth"]
    frame = np.array([[0, 0], [27, 0], [27, 27], [0, 27]], np.float64)
    for i in range(16):
        h = np_homography(truth["corners"][i], frame)  # canvas -> digit
        rows, cols = np.mgrid[0:DIGIT, 0:DIGIT].astype(np.float64)
        p = np.stack([cols, rows, np.ones_like(cols)], -1) @ h.T
        expected = np_bilinear(
            _digit(train_digits, truth["index"][i]),
            p[..., 0] / p[..., 2],
            p[..., 1] / p[..., 2],
        )
        np.testing.assert_allclose(batch["image"][i, ..., 0], expected, atol=2e-4)
    scale = truth["scale"]
    _assert_covers(scale, 0.75, 1.0, margin=0.02)
    scaled = 13.5 + (frame[None] - 13.5) * scale[:, None, None]
    return (truth["corners"] - scaled).reshape(-1, 2)


def test_p_moves_each_corner_5_pixels_along_each_axis(train_digits):
    # A.4's "stretching each corner ... by an amount sampled from a normal
    # distribution with zero mean and 5 pixel standard deviation", read as E's same
    # words are: one N(0, 5 px) draw per coordinate, x and y independent.
    moves = _projective_moves("mnist_p", train_digits)
    assert np.all(np.abs(moves.mean(0)) < 0.4)
    assert np.all((4.75 < moves.std(0)) & (moves.std(0) < 5.25))
    assert abs(np.corrcoef(moves.T)[0, 1]) < 0.1
    distance = np.linalg.norm(moves, axis=-1)  # RMS 5 * sqrt(2), not 5
    assert 6.8 < np.sqrt(np.mean(distance**2)) < 7.35


def test_p_read_as_a_distance_moves_each_corner_5_pixels_away(train_digits):
    moves = _projective_moves("mnist_p_distance", train_digits)
    # Each corner moves a distance |N(0, 5 px)| (RMS 5 px, mean 5 * sqrt(2 / pi)),
    # not 5 px along each axis (RMS 7.1 px, mnist_p).
    distance = np.linalg.norm(moves, axis=-1)
    assert 4.8 < np.sqrt(np.mean(distance**2)) < 5.2
    assert 3.8 < distance.mean() < 4.2
    # ... in a uniformly random direction: each axis's mean 0 and std 5 / sqrt(2),
    # and every quarter of the circle about as often.
    assert np.all(np.abs(moves.mean(0)) < 0.3)
    assert np.all((3.35 < moves.std(0)) & (moves.std(0) < 3.75))
    quarter = (np.arctan2(moves[:, 1], moves[:, 0]) // (np.pi / 2)).astype(int)
    assert np.all(np.abs(np.bincount(quarter + 2, minlength=4) - 512) < 80)


def test_elastic_moves_16_control_points_by_1_5_pixels_after_scaling(train_digits):
    from stn_tf import transforms

    batch = _batch("mnist_e", train_digits, 512, seed=7)
    truth = batch["truth"]
    assert truth["theta"].shape == (512, 32)  # 16 control points (x, y)
    pixels = truth["theta"] * 13.5  # normalised -> pixels
    assert abs(pixels.mean()) < 0.05 and 1.45 < pixels.std() < 1.55
    scale = truth["scale"]
    _assert_covers(scale, 0.75, 1.0, margin=0.02)
    coords = (
        transforms.tps_grid(truth["theta"][:8], (DIGIT, DIGIT)).numpy()
        / scale[:8, None, None, None]
    )
    for i in range(8):
        x, y = (coords[i, ..., 0] + 1) * 13.5, (coords[i, ..., 1] + 1) * 13.5
        expected = np_bilinear(_digit(train_digits, truth["index"][i]), x, y)
        np.testing.assert_allclose(batch["image"][i, ..., 0], expected, atol=2e-5)


@pytest.mark.parametrize(
    "name,canvas,clutter",
    [("mnist_tc", 60, 6), ("mnist_coloc_t", 84, 0), ("mnist_coloc_tc", 84, 16)],
)
def test_translated_and_cluttered_equal_a_numpy_composition(
    name, canvas, clutter, train_digits
):
    batch = _batch(name, train_digits, 128, seed=9)
    truth = batch["truth"]
    assert truth["clutter_boxes"].shape == (128, clutter, 4)
    for i in range(128):
        expected = np.zeros((canvas, canvas))
        x, y = truth["position"][i]
        np_paste(expected, _digit(train_digits, truth["index"][i]), x, y)
        np_clutter(expected, train_digits, truth, i, 6)
        np.testing.assert_allclose(batch["image"][i, ..., 0], expected, atol=1e-7)
        assert np.all(truth["clutter_index"][i] != truth["index"][i])  # other digits
    position = truth["position"]
    assert position.min() >= 0 and position.max() <= canvas - DIGIT  # fully inside
    assert position.min() <= 3 and position.max() >= canvas - DIGIT - 3  # anywhere
    np.testing.assert_array_equal(truth["frame"], np.c_[position, position + DIGIT])
    assert np.all(truth["boxes"][:, 0, :2] >= truth["frame"][:, :2])
    assert np.all(truth["boxes"][:, 0, 2:] <= truth["frame"][:, 2:])


def test_sequences_are_three_ordered_non_overlapping_digits_on_a_45_degree_slope(
    train_digits,
):
    batch = _batch("mnist_sequence", train_digits, 256, seed=1)
    truth = batch["truth"]
    positions = truth["positions"].astype(np.float64)  # [B, 3, 2]
    for i in range(256):
        np.testing.assert_array_equal(
            batch["label"][i], train_digits.labels[truth["index"][i]]
        )
        if i < 32:
            expected = np.zeros((100, 100))
            for k in range(3):
                np_paste(
                    expected,
                    _digit(train_digits, truth["index"][i][k]),
                    *truth["positions"][i][k],
                )
            np_clutter(expected, train_digits, truth, i, 9)
            np.testing.assert_allclose(batch["image"][i, ..., 0], expected, atol=1e-7)
    dx = np.diff(positions[..., 0], axis=1)
    assert dx.min() >= DIGIT  # left to right, frames never overlap
    assert positions.min() >= 0 and positions.max() <= 100 - DIGIT  # inside the canvas
    slope = np.degrees(
        np.arctan2(
            positions[:, 2, 1] - positions[:, 0, 1],
            positions[:, 2, 0] - positions[:, 0, 0],
        )
    )
    assert slope.min() >= -46 and slope.max() <= 46  # ±45° (plus rounding)
    assert slope.min() < -38 and slope.max() > 38
    assert truth["clutter_boxes"].shape == (256, 8, 4)
    assert np.all(
        truth["clutter_boxes"][..., 2:] - truth["clutter_boxes"][..., :2] == 9
    )


def test_addition_labels_are_the_sum_and_each_channel_is_an_rts_digit(train_digits):
    batch = _batch("mnist_addition", train_digits, 64, seed=8)
    truth = batch["truth"]
    digits = train_digits.labels[truth["index"]]  # [B, 2]
    np.testing.assert_array_equal(truth["digits"], digits)
    np.testing.assert_array_equal(batch["label"], digits.sum(axis=1))
    assert np.all(truth["index"][:, 0] != truth["index"][:, 1])
    small = {**batch, "image": batch["image"][:12]}
    for channel in (0, 1):
        _check_affine_examples(small, train_digits, 42, channel=channel)
    assert not np.allclose(truth["angle"][:, 0], truth["angle"][:, 1])  # independent


def test_3d_digits_are_rotated_extrusions_inside_the_volume(train_digits):
    from stn_tf.pipelines import distortions

    batch = _batch("mnist_3d", train_digits, 64, seed=2)
    truth = batch["truth"]
    angles = truth["angles"]
    _assert_covers(angles, -45, 45, margin=5)
    depth = distortions.EXTRUSION_DEPTH
    centre = np.array([13.5, 13.5, (depth - 1) / 2])
    for i in range(3):
        rotation = truth["rotation"][i]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        digit = _digit(train_digits, truth["index"][i])
        # The oracle at 4000 random voxels and at every voxel the digit covers.
        volume = batch["image"][i, ..., 0]  # [D, H, W]
        rng = np.random.default_rng(i)
        picks = np.concatenate(
            [
                rng.integers(0, 60, (4000, 3)),
                np.argwhere(volume > 0)[:, ::-1][:, [0, 1, 2]][:, ::-1],
            ]
        )
        z, y, x = picks.T  # voxel (slice, row, column)
        src = (np.stack([x, y, z], -1) - truth["shift"][i]) @ np.linalg.inv(
            rotation
        ).T + centre
        kx, ky, kz = (
            _kernel(src[:, 0], DIGIT),
            _kernel(src[:, 1], DIGIT),
            _kernel(src[:, 2], depth),
        )
        expected = np.einsum("pn,nm,pm->p", ky, digit, kx) * kz.sum(axis=1)
        np.testing.assert_allclose(volume[z, y, x], expected, atol=2e-5)
        # All of the extrusion's support lies inside the volume: no ink lost.
        ys, xs = np.nonzero(digit)
        support = np.array(
            [
                [x0 + dx, y0 + dy, z0]
                for x0, y0 in zip(xs, ys)
                for dx in (-1, 1)
                for dy in (-1, 1)
                for z0 in (-1, depth)
            ]
        )
        mapped = (support - centre) @ rotation.T + truth["shift"][i]
        assert mapped.min() >= -0.5 - 1e-4 and mapped.max() <= 59.5 + 1e-4
