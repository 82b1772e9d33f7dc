"""Tests of stn_tf.sampler against NumPy oracles, finite differences and golden arrays."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import off_knot_coords, reference_sample, run_tflite

from stn_tf import sampler, transforms
from stn_tf.sampler import INTERPOLATIONS

SAMPLERS = {
    (2, "bilinear"): sampler.bilinear_sample,
    (2, "nearest"): sampler.nearest_sample,
    (3, "bilinear"): sampler.trilinear_sample,
    (3, "nearest"): sampler.nearest_sample_3d,
}
# (ndim, kernel, input spatial (z,)y,x, output spatial)
CASES = [
    (2, "bilinear", (3, 4), (5, 6)),
    (2, "nearest", (3, 4), (5, 6)),
    (3, "bilinear", (3, 4, 5), (2, 3, 4)),
    (3, "nearest", (3, 4, 5), (2, 3, 4)),
]
CASE_IDS = [f"{n}d-{k}" for n, k, _, _ in CASES]


def _grid(spatial):
    """Identity coordinates ``[*spatial, ndim]``, last axis (x, y[, z])."""
    axes = [np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in spatial]
    return np.stack(np.meshgrid(*axes, indexing="ij")[::-1], axis=-1)


def _batch_reference(images, coords, kernel):
    ndim = coords.shape[-1]
    out = [
        reference_sample(img, c.reshape(-1, ndim), kernel).reshape(*c.shape[:-1], -1)
        for img, c in zip(images, coords)
    ]
    return np.stack(out)


# --------------------------------------------------------------------------------------
# Forward against the oracle


@pytest.mark.parametrize("ndim,kernel,in_size,out_size", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_forward_matches_numpy_oracle(ndim, kernel, in_size, out_size, jit):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, *in_size, 2))
    coords = off_knot_coords(rng, (2, *out_size, ndim), in_size[::-1])
    expected = _batch_reference(images, coords, kernel)
    got = SAMPLERS[ndim, kernel](images, coords, jit_compile=jit)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    # Off-knot coordinates partly outside the image: the border blends with zeros.
    assert np.any(np.abs(coords) > 1.0)
    got32 = SAMPLERS[ndim, kernel](
        images.astype("f4"), coords.astype("f4"), jit_compile=jit
    )
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["bilinear", "nearest"])
def test_sample_dispatches_on_coordinate_size(kernel):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(1, 3, 4, 5, 1))
    coords = rng.uniform(-1, 1, (1, 2, 2, 2, 3))
    np.testing.assert_allclose(
        sampler.sample(images, coords, interpolation=kernel).numpy(),
        _batch_reference(images, coords, kernel),
        atol=1e-12,
    )


# --------------------------------------------------------------------------------------
# Golden arrays (hand-checked)

ARANGE = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)


def test_identity_grid_returns_input_exactly():
    rng = np.random.default_rng(2)
    for size in [(3, 4), (7, 13), (28, 28), (60, 60), (5, 1), (1, 6), (448, 448)]:
        images = rng.normal(size=(2, *size, 3)).astype("f4")
        coords = np.broadcast_to(_grid(size), (2, *size, 2)).astype("f4")
        for fn in (sampler.bilinear_sample, sampler.nearest_sample):
            np.testing.assert_array_equal(fn(images, coords).numpy(), images)


def test_one_pixel_shift_of_arange():
    """x + 2/(W-1) is one pixel right: every row moves left, a zero enters."""
    coords = _grid((3, 4))[None].astype("f4")
    right = sampler.bilinear_sample(ARANGE, coords + [2 / 3, 0])[0, ..., 0].numpy()
    np.testing.assert_allclose(
        right, [[1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]], atol=1e-6
    )
    down = sampler.bilinear_sample(ARANGE, coords + [0, 1])[0, ..., 0].numpy()
    np.testing.assert_allclose(
        down, [[4, 5, 6, 7], [8, 9, 10, 11], [0, 0, 0, 0]], atol=1e-6
    )
    # Half a pixel: the last column blends the last pixel with the zero outside.
    half = sampler.bilinear_sample(ARANGE, coords + [1 / 3, 0])[0, ..., 0].numpy()
    np.testing.assert_allclose(
        half,
        [[0.5, 1.5, 2.5, 1.5], [4.5, 5.5, 6.5, 3.5], [8.5, 9.5, 10.5, 5.5]],
        atol=1e-6,
    )


def test_corner_aligned_convention_reads_pixel_centres():
    """-1 and +1 are the first and last pixel centres; beyond one pixel, zeros."""
    at = lambda x, y: (
        sampler.bilinear_sample(ARANGE, np.array([[[[x, y]]]], "f4")).numpy().item()
    )
    assert at(-1, -1) == 0 and at(1, -1) == 3 and at(-1, 1) == 8 and at(1, 1) == 11
    assert at(-1 / 3, -1) == 1 and at(1 / 3, 0) == 6
    assert at(1 + 2 / 3, 1) == 0 and at(-1, -1 - 1.01) == 0  # one pixel out
    assert at(1 + 1 / 3, 1) == pytest.approx(5.5)  # half a pixel out: 11 / 2


def test_180_degree_rotation_reverses():
    coords = -_grid((3, 4))[None].astype("f4")
    out = sampler.bilinear_sample(ARANGE, coords)
    np.testing.assert_array_equal(out.numpy(), ARANGE[:, ::-1, ::-1])


def test_nearest_kernel_golden():
    coords = _grid((3, 4))[None].astype("f4")
    # 0.4 px right rounds back, 0.6 px right rounds to the next pixel.
    np.testing.assert_array_equal(
        sampler.nearest_sample(ARANGE, coords + [0.4 * 2 / 3, 0]).numpy(), ARANGE
    )
    np.testing.assert_array_equal(
        sampler.nearest_sample(ARANGE, coords + [0.6 * 2 / 3, 0])[0, ..., 0].numpy(),
        [[1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]],
    )
    # Exactly half a pixel rounds up (eq. 4: floor(x + 0.5)).
    row = np.array([0.0, 1.0, 2.0], "f4").reshape(1, 1, 3, 1)  # x = -0.5 is 0.5 px
    half = sampler.nearest_sample(row, np.array([[[[-0.5, 0.0]]]], "f4"))
    assert half.numpy().item() == 1.0


def test_3d_identity_and_shift():
    volume = np.arange(2 * 3 * 4, dtype="f4").reshape(1, 2, 3, 4, 1)
    coords = _grid((2, 3, 4))[None].astype("f4")
    np.testing.assert_array_equal(
        sampler.trilinear_sample(volume, coords).numpy(), volume
    )
    np.testing.assert_array_equal(
        sampler.nearest_sample_3d(volume, coords).numpy(), volume
    )
    # z + 2/(D-1) = +2 is one slice deeper: slice 1 moves to 0, zeros enter.
    shifted = sampler.trilinear_sample(volume, coords + [0, 0, 2]).numpy()
    np.testing.assert_array_equal(shifted[0, 0], volume[0, 1])
    np.testing.assert_array_equal(shifted[0, 1], np.zeros_like(volume[0, 1]))
    # x + 2/3 is one voxel right.
    right = sampler.trilinear_sample(volume, coords + [2 / 3, 0, 0]).numpy()
    np.testing.assert_allclose(right[0, :, :, :3], volume[0, :, :, 1:], atol=1e-5)
    np.testing.assert_array_equal(right[0, :, :, 3], 0)


# --------------------------------------------------------------------------------------
# Gradients: hand-written vs finite differences (float64)


@pytest.mark.parametrize(
    "ndim,in_size,out_size", [(2, (3, 4), (4, 3)), (3, (3, 3, 4), (2, 2, 3))]
)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_gradients_match_finite_differences(ndim, in_size, out_size, jit):
    rng = np.random.default_rng(3)
    images = tf.constant(rng.normal(size=(2, *in_size, 2)))
    coords = tf.constant(off_knot_coords(rng, (2, *out_size, ndim), in_size[::-1]))
    fn = SAMPLERS[ndim, "bilinear"]
    theoretical, numerical = tf.test.compute_gradient(
        lambda u, c: fn(u, c, jit_compile=jit), [images, coords], delta=1e-4
    )
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6)
        assert np.abs(t).max() > 0


def test_nearest_gradients():
    rng = np.random.default_rng(4)
    images = tf.constant(rng.normal(size=(1, 3, 4, 1)))
    coords = tf.constant(rng.uniform(-1.2, 1.2, (1, 5, 5, 2)))
    upstream = rng.normal(size=(1, 5, 5, 1))
    with tf.GradientTape() as tape:
        tape.watch([images, coords])
        loss = tf.reduce_sum(sampler.nearest_sample(images, coords) * upstream)
    g_img, g_coords = tape.gradient(loss, [images, coords])
    np.testing.assert_array_equal(g_coords.numpy(), 0)
    # Each input pixel collects the upstream gradient of every point that read it.
    expected = np.zeros((3, 4))
    for (y, x), g in zip(coords.numpy()[0].reshape(-1, 2)[:, ::-1], upstream.ravel()):
        j, i = np.floor((x + 1) * 1.5 + 0.5), np.floor((y + 1) * 1.0 + 0.5)
        if 0 <= i < 3 and 0 <= j < 4:
            expected[int(i), int(j)] += g
    np.testing.assert_allclose(g_img.numpy()[0, ..., 0], expected, atol=1e-12)


def test_coordinate_gradient_is_exact_at_the_border():
    """Weights come from unclipped positions: at x just inside the last pixel the
    slope is (0 - U_last) per pixel, not 0 (the clipped-index bug)."""
    coords = tf.constant([[[[1.0 + 0.25 * 2 / 3, -1.0]]]], tf.float64)  # 1/4 px out
    images = tf.constant(ARANGE, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(coords)
        out = sampler.bilinear_sample(images, coords)
    assert out.numpy().item() == pytest.approx(3 * 0.75)
    dx = tape.gradient(out, coords).numpy()[0, 0, 0, 0]
    assert dx == pytest.approx(-3 * 1.5)  # (0 - 3) per pixel * 1.5 pixels per unit


# --------------------------------------------------------------------------------------
# XLA vs no XLA, tf.function, tf.data


@pytest.mark.parametrize("ndim", [2, 3])
def test_xla_and_eager_agree_forward_and_backward(ndim):
    rng = np.random.default_rng(5)
    size = (13, 17) if ndim == 2 else (5, 6, 7)
    images = tf.constant(rng.normal(size=(3, *size, 4)).astype("f4"))
    coords = tf.constant(rng.uniform(-1.3, 1.3, (3, *size[:-1], 9, ndim)).astype("f4"))
    upstream = tf.constant(rng.normal(size=(3, *size[:-1], 9, 4)).astype("f4"))
    fn = SAMPLERS[ndim, "bilinear"]

    def step(u, c):
        with tf.GradientTape() as tape:
            tape.watch([u, c])
            out = fn(u, c)
            loss = tf.reduce_sum(out * upstream)
        return [out, *tape.gradient(loss, [u, c])]

    eager = step(images, coords)
    xla = tf.function(step, jit_compile=True)(images, coords)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_inside_dataset_map(jit):
    rng = np.random.default_rng(6)
    images = rng.normal(size=(6, 8, 8, 1)).astype("f4")
    coords = rng.uniform(-1, 1, (6, 4, 4, 2)).astype("f4")
    ds = tf.data.Dataset.from_tensor_slices((images, coords)).batch(3)
    ds = ds.map(lambda u, c: sampler.bilinear_sample(u, c, jit_compile=jit))
    got = np.concatenate(list(ds.as_numpy_iterator()))
    np.testing.assert_allclose(got, sampler.bilinear_sample(images, coords), atol=1e-6)


def test_empty_batch():
    out = sampler.bilinear_sample(
        np.zeros((0, 4, 4, 2), "f4"), np.zeros((0, 3, 3, 2), "f4")
    )
    assert out.shape == (0, 3, 3, 2)


# --------------------------------------------------------------------------------------
# Robustness: huge, NaN and infinite coordinates


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("kernel", ["bilinear", "nearest"])
def test_non_finite_and_huge_coordinates(jit, kernel):
    rng = np.random.default_rng(7)
    images = tf.constant(rng.normal(size=(2, 5, 6, 3)).astype("f4"))
    good = rng.uniform(-1, 1, (2, 4, 4, 2)).astype("f4")
    bad = good.copy()
    bad[0, 0, 0] = [np.nan, 0.0]
    bad[0, 0, 1] = [np.inf, 0.0]
    bad[0, 0, 2] = [0.0, -np.inf]
    bad[0, 1, 0] = [3e38, -3e38]
    bad[0, 1, 1] = [1e30, 0.0]
    bad[0, 1, 2] = [-1e9, 1e9]
    broken = np.zeros((4, 4), bool)
    broken[0, :3] = broken[1, :3] = True
    fn = SAMPLERS[2, kernel]

    def run(c):
        c = tf.constant(c)
        with tf.GradientTape() as tape:
            tape.watch([images, c])
            out = fn(images, c, jit_compile=jit)
            loss = tf.reduce_sum(out**2)
        g_img, g_c = tape.gradient(loss, [images, c])
        return out.numpy(), g_img.numpy(), g_c.numpy()

    out, g_img, g_c = run(bad)
    ref_out, _, ref_gc = run(good)
    for t in (out, g_img, g_c):
        assert np.all(np.isfinite(t))
    np.testing.assert_array_equal(out[0][broken], 0)
    np.testing.assert_array_equal(g_c[0][broken], 0)
    # The rest of the batch is untouched.
    np.testing.assert_allclose(out[0][~broken], ref_out[0][~broken], atol=1e-6)
    np.testing.assert_allclose(out[1], ref_out[1], atol=1e-6)
    np.testing.assert_allclose(g_c[1], ref_gc[1], atol=1e-5)


# --------------------------------------------------------------------------------------
# Dtypes and bad input


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_images_with_float32_coordinates(dtype):
    rng = np.random.default_rng(8)
    images32 = rng.uniform(size=(2, 6, 7, 3)).astype("f4")
    coords = tf.constant(rng.uniform(-1.1, 1.1, (2, 4, 5, 2)).astype("f4"))
    images = tf.cast(images32, dtype)
    with tf.GradientTape() as tape:
        tape.watch([images, coords])
        out = sampler.bilinear_sample(images, coords, jit_compile=True)
        loss = tf.reduce_sum(tf.cast(out, tf.float32))
    g_img, g_c = tape.gradient(loss, [images, coords])
    assert out.dtype == dtype and g_img.dtype == dtype and g_c.dtype == tf.float32
    ref = sampler.bilinear_sample(tf.cast(images, tf.float32), coords)
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), ref.numpy(), atol=2e-2)


def test_float64_throughout():
    images = tf.constant(ARANGE, tf.float64)
    out = sampler.bilinear_sample(images, tf.constant(_grid((3, 4))[None]))
    assert out.dtype == tf.float64


@pytest.mark.parametrize(
    "images,coords,message",
    [
        (
            np.zeros((3, 4, 1), "f4"),
            np.zeros((1, 2, 2, 2), "f4"),
            r"rank 4 .*images.shape=\(3, 4, 1\)",
        ),
        (
            np.zeros((1, 3, 4, 1), "f4"),
            np.zeros((1, 2, 2, 3), "f4"),
            r"coords must have shape \[B, H', W', 2\]",
        ),
        (
            np.zeros((1, 3, 4, 1), "uint8"),
            np.zeros((1, 2, 2, 2), "f4"),
            r"floating-point .*uint8",
        ),
        (
            np.zeros((1, 3, 4, 1), "f4"),
            np.zeros((1, 2, 2, 2), "int32"),
            r"float32 or float64.*int32",
        ),
        (
            np.zeros((1, 3, 4, 1), "f4"),
            np.zeros((1, 2, 2, 2), "f2"),
            r"float32 or float64.*float16",
        ),
        (
            np.zeros((2, 3, 4, 1), "f4"),
            np.zeros((3, 2, 2, 2), "f4"),
            r"same batch size",
        ),
    ],
    ids=["rank", "last-axis", "int-images", "int-coords", "half-coords", "batch"],
)
def test_bad_input_gives_clear_errors(images, coords, message):
    with pytest.raises(ValueError, match=message):
        sampler.bilinear_sample(images, coords)


def test_bad_volume_and_interpolation_errors():
    with pytest.raises(ValueError, match=r"volumes must have rank 5"):
        sampler.trilinear_sample(
            np.zeros((1, 3, 4, 1), "f4"), np.zeros((1, 2, 2, 2, 3), "f4")
        )
    with pytest.raises(ValueError, match=r"interpolation must be one of .*'bicubic'"):
        sampler.sample(
            np.zeros((1, 3, 4, 1), "f4"),
            np.zeros((1, 2, 2, 2), "f4"),
            interpolation="bicubic",
        )


# --------------------------------------------------------------------------------------
# TFLite: builtins only, same numbers


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["bilinear", "nearest"])
def test_converts_to_tflite_builtins_and_matches(kernel):
    fn = tf.function(
        lambda u, c: sampler.sample(u, c, interpolation=kernel, jit_compile=True),
        input_signature=[
            tf.TensorSpec([None, 12, 10, 3]),
            tf.TensorSpec([None, 6, 7, 2]),
        ],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    rng = np.random.default_rng(9)
    images = rng.normal(size=(3, 12, 10, 3)).astype("f4")
    coords = rng.uniform(-1.2, 1.2, (3, 6, 7, 2)).astype("f4")
    (out,), ops = run_tflite(converter.convert(), images, coords)
    assert "GATHER" in ops and not [op for op in ops if "FLEX" in op.upper()]
    np.testing.assert_allclose(out, fn(images, coords).numpy(), atol=1e-6)


# --------------------------------------------------------------------------------------
# Review findings: pruned image gradient, non-finite pixels, run-time batch check


def _called_functions(graph_def, output):
    """Names of the functions a graph still calls once pruned to ``output``."""
    sub = tf.compat.v1.graph_util.extract_sub_graph(graph_def, [output])
    return [n.attr["f"].func.name for n in sub.node if "f" in n.attr]


def test_coordinate_only_backward_does_not_scatter_into_the_image():
    """Frozen features: only d out / d coords is needed, and the graph must not
    keep the image gradient (a scatter as large as the input) alive."""
    images = tf.constant(np.zeros((2, 64, 64, 3), "f4"))
    coords = tf.constant(np.zeros((2, 4, 4, 2), "f4"))

    def calls(wrt_images):
        @tf.function
        def step(u, c):
            with tf.GradientTape() as tape:
                tape.watch([u, c])
                out = sampler.bilinear_sample(u, c, jit_compile=True)
            grads = tape.gradient(out, [u, c] if wrt_images else [c])
            return tf.identity(
                tf.add_n([tf.reduce_sum(g) for g in grads]), name="wanted"
            )

        graph = step.get_concrete_function(images, coords).graph.as_graph_def()
        return _called_functions(graph, "wanted")

    assert any("grad_coords" in f for f in calls(False))
    assert not any("grad_images" in f for f in calls(False))
    assert any(
        "grad_images" in f for f in calls(True)
    )  # control: it is there when needed


def test_non_finite_pixels_do_not_leak_into_neighbours():
    image = np.zeros((1, 3, 4, 1), "f4")
    image[0, 0, 1, 0] = np.nan
    image[0, 2, 3, 0] = np.inf
    coords = tf.constant(_grid((3, 4))[None].astype("f4"))
    out = sampler.bilinear_sample(image, coords).numpy()
    np.testing.assert_array_equal(out, image)  # identity, NaN and inf stay put
    far = sampler.bilinear_sample(image, np.array([[[[5.0, -1.0], [1.0, 3.0]]]], "f4"))
    np.testing.assert_array_equal(far.numpy(), 0)  # outside reads zeros, not 0 * inf


def test_float64_images_with_float32_coordinates_identity_is_exact():
    for width in range(2, 60):
        image = np.arange(3.0 * width).reshape(1, 3, width, 1)
        coords = _grid((3, width))[None].astype("f4")
        np.testing.assert_array_equal(
            sampler.bilinear_sample(image, coords).numpy(), image
        )


def test_batch_mismatch_known_only_at_run_time_is_an_error():
    fn = tf.function(
        lambda u, c: sampler.bilinear_sample(u, c),
        input_signature=[
            tf.TensorSpec([None, 4, 4, 1]),
            tf.TensorSpec([None, 4, 4, 2]),
        ],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        fn(np.zeros((2, 4, 4, 1), "f4"), np.zeros((4, 4, 4, 2), "f4"))


def test_too_many_pixels_for_int32_indexing():
    huge = tf.TensorSpec([4096, 1024, 1024, 1])  # 2**32 pixels, never allocated
    with pytest.raises(ValueError, match=r"more than int32 indexing reaches"):
        tf.function(
            lambda u: sampler.bilinear_sample(u, tf.zeros([4096, 1, 1, 2]))
        ).get_concrete_function(huge)


def test_coords_of_the_other_dimensionality_are_named():
    with pytest.raises(ValueError, match=r"coords with 3 components sample volumes"):
        sampler.sample(tf.zeros([2, 8, 8, 1]), tf.zeros([2, 4, 4, 3]))
    with pytest.raises(ValueError, match=r"coords with 2 components sample images"):
        sampler.sample(tf.zeros([2, 4, 8, 8, 1]), tf.zeros([2, 4, 4, 2]))


# --------------------------------------------------------------------------------------
# sample_affine: the affine grid made inside the sampler


def _affine_oracle_coords(matrix, out_size):
    """NumPy coordinates of ``[B, n, n + 1]`` matrices on the target grid."""
    target = _grid(out_size)  # [*out_size, n], (x, y[, z])
    n = target.shape[-1]
    return np.einsum("...j,bij->b...i", target, matrix[:, :, :n]) + matrix[
        :, None, None, :, n
    ].reshape(len(matrix), *[1] * n, n)


def _off_knot_matrix(rng, batch, in_size, out_size, margin=0.02):
    """A random affine ``[B, n, n + 1]`` near the identity, scaled up and shifted so
    that part of the grid falls outside the input, whose grid points all lie at
    least ``margin`` pixels away from any pixel centre (finite differences of the
    bilinear kernel are meaningless across a knot)."""
    n = len(in_size)
    sizes = np.array(in_size[::-1], np.float64)  # along x, y(, z)
    for _ in range(1000):
        matrix = np.concatenate(
            [
                1.3 * np.eye(n) + rng.normal(0, 0.3, (batch, n, n)),
                rng.uniform(-0.4, 0.4, (batch, n, 1)),
            ],
            axis=-1,
        )
        pos = (_affine_oracle_coords(matrix, out_size) + 1.0) * (sizes - 1) / 2.0
        if np.abs(pos - np.round(pos)).min() > margin:
            return matrix
    raise AssertionError("no off-knot matrix found")


AFFINE_CASES = [
    (2, "bilinear", (5, 7), (3, 5)),
    (2, "nearest", (5, 7), (3, 5)),
    (3, "bilinear", (3, 4, 5), (2, 3, 3)),
    (3, "nearest", (3, 4, 5), (2, 3, 3)),
]
AFFINE_IDS = [f"{n}d-{k}" for n, k, _, _ in AFFINE_CASES]


@pytest.mark.parametrize("ndim,kernel,in_size,out_size", AFFINE_CASES, ids=AFFINE_IDS)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_sample_affine_matches_numpy_oracle(ndim, kernel, in_size, out_size, jit):
    rng = np.random.default_rng(10)
    images = rng.normal(size=(2, *in_size, 3))
    matrix = _off_knot_matrix(rng, 2, in_size, out_size)
    coords = _affine_oracle_coords(matrix, out_size)
    assert np.any(np.abs(coords) > 1.0) and np.any(np.abs(coords) < 1.0)
    expected = _batch_reference(images, coords, kernel)
    got = sampler.sample_affine(
        images, matrix, out_size, interpolation=kernel, jit_compile=jit
    )
    assert got.shape == (2, *out_size, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    got32 = sampler.sample_affine(
        images.astype("f4"),
        matrix.astype("f4"),
        out_size,
        interpolation=kernel,
        jit_compile=jit,
    )
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,in_size,out_size",
    [
        ("affine", (5, 7), (3, 5)),
        ("attention", (5, 7), (4, 3)),
        ("affine3d", (3, 4, 5), (2, 3, 3)),
    ],
)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_sample_affine_gradients_match_finite_differences(name, in_size, out_size, jit):
    """Image and θ gradients, through ``transforms.affine_matrix``, in float64."""
    rng = np.random.default_rng(11)
    images = tf.constant(rng.normal(size=(2, *in_size, 2)))
    matrix = _off_knot_matrix(rng, 2, in_size, out_size)
    if name == "attention":  # (s, tx, ty): an isotropic scale, off the knots
        for _ in range(1000):
            params = np.stack(
                [rng.uniform(0.6, 1.4, 2), *rng.uniform(-0.5, 0.5, (2, 2))], -1
            )
            m = transforms.affine_matrix("attention", params).numpy()
            pos = (
                (_affine_oracle_coords(m, out_size) + 1.0)
                * (np.array(in_size[::-1]) - 1)
                / 2.0
            )
            if np.abs(pos - np.round(pos)).min() > 0.02:
                break
    else:
        params = matrix.reshape(2, -1)
    params = tf.constant(params)

    def fn(u, p):
        m = transforms.affine_matrix(name, p)
        return sampler.sample_affine(u, m, out_size, jit_compile=jit)

    theoretical, numerical = tf.test.compute_gradient(fn, [images, params], delta=1e-4)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6)
        assert np.abs(t).max() > 0


@pytest.mark.parametrize("name", ["affine", "attention", "affine3d"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sample_affine_equals_sample_of_the_transform_grid(name, dtype):
    """The XLA path against the grid made outside (``transforms.<name>_grid`` and
    ``sample``): outputs, image and θ gradients, dtypes (mixed precision)."""
    rng = np.random.default_rng(12)
    spec = transforms.get_transform(name)
    in_size, out_size = ((7, 9), (5, 6)) if spec.ndim == 2 else ((4, 5, 6), (3, 4, 5))
    images = tf.cast(rng.uniform(size=(3, *in_size, 2)), dtype)
    theta = spec.identity_params(3) + rng.normal(0, 0.3, (3, spec.num_params))
    theta = tf.constant(theta.astype("f4"))
    upstream = tf.constant(rng.normal(size=(3, *out_size, 2)).astype("f4"))

    def step(fused):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            if fused:
                matrix = transforms.affine_matrix(name, theta)
                out = sampler.sample_affine(images, matrix, out_size, jit_compile=True)
            else:
                coords = spec.grid(theta, out_size)
                out = sampler.sample(images, coords, jit_compile=True)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * upstream)
        return [out, *tape.gradient(loss, [images, theta])]

    got, want = step(True), step(False)
    assert [t.dtype for t in got] == [t.dtype for t in want]
    assert got[0].dtype == dtype and got[2].dtype == tf.float32
    tol = 1e-5 if dtype == "float32" else 1e-2
    for a, b in zip(got, want):
        a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1, np.abs(b).max()))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_sample_affine_several_grids_per_input(jit):
    """``[B, G, 2, 3]`` matrices: each grid as if sampled alone, and the image
    gradient the sum over the grids."""
    rng = np.random.default_rng(13)
    images = tf.constant(rng.normal(size=(2, 6, 7, 3)))
    matrix = _off_knot_matrix(rng, 6, (6, 7), (4, 5), margin=0.0)
    matrix = tf.constant(matrix.reshape(2, 3, 2, 3))
    upstream = rng.normal(size=(2, 3, 4, 5, 3))

    def grads(m, up):
        with tf.GradientTape() as tape:
            tape.watch([images, m])
            out = sampler.sample_affine(images, m, (4, 5), jit_compile=jit)
            loss = tf.reduce_sum(out * up)
        return out, tape.gradient(loss, [images, m])

    out, (g_img, g_m) = grads(matrix, upstream)
    assert out.shape == (2, 3, 4, 5, 3) and g_m.shape == (2, 3, 2, 3)
    g_img_sum = 0
    for g in range(3):
        out_g, (g_img_g, g_m_g) = grads(matrix[:, g], upstream[:, g])
        np.testing.assert_allclose(out[:, g], out_g, atol=1e-12)
        np.testing.assert_allclose(g_m[:, g], g_m_g, atol=1e-12)
        g_img_sum += g_img_g
    np.testing.assert_allclose(g_img, g_img_sum, atol=1e-12)


def test_sample_affine_identity_returns_input_exactly():
    rng = np.random.default_rng(14)
    for size in [(3, 4), (7, 13), (5, 1), (1, 6), (28, 28)]:
        images = rng.normal(size=(2, *size, 3)).astype("f4")
        identity = np.tile(np.eye(2, 3, dtype="f4"), (2, 1, 1))
        for kernel in INTERPOLATIONS:
            out = sampler.sample_affine(
                images, identity, size, interpolation=kernel, jit_compile=True
            )
            np.testing.assert_array_equal(out.numpy(), images)


def test_sample_affine_non_finite_matrices_read_zeros_with_zero_gradient():
    rng = np.random.default_rng(15)
    images = tf.constant(rng.normal(size=(3, 5, 6, 2)).astype("f4"))
    good = np.tile(np.eye(2, 3, dtype="f4"), (3, 1, 1))
    matrix = good.copy()
    matrix[0, 0, 0] = np.nan
    matrix[1, 1, 2] = np.inf
    matrix = tf.constant(matrix)
    with tf.GradientTape() as tape:
        tape.watch([images, matrix])
        out = sampler.sample_affine(images, matrix, (4, 4), jit_compile=True)
        loss = tf.reduce_sum(out**2)
    g_img, g_m = tape.gradient(loss, [images, matrix])
    for t in (out, g_img, g_m):
        assert np.all(np.isfinite(t.numpy()))
    np.testing.assert_array_equal(out[1], 0)  # every y is +inf: all outside
    np.testing.assert_array_equal(g_m[1], 0)
    ref = sampler.sample_affine(images[2:], good[2:], (4, 4), jit_compile=True)
    np.testing.assert_array_equal(out[2:], ref)  # the rest of the batch untouched


def test_matrix_only_backward_does_not_scatter_into_the_image():
    """As for coordinates: a graph that needs only the θ gradient prunes the image
    gradient's scatter."""
    images = tf.constant(np.zeros((2, 64, 64, 3), "f4"))
    matrix = tf.constant(np.tile(np.eye(2, 3, dtype="f4"), (2, 1, 1)))

    def calls(wrt_images):
        @tf.function
        def step(u, m):
            with tf.GradientTape() as tape:
                tape.watch([u, m])
                out = sampler.sample_affine(u, m, (4, 4), jit_compile=True)
            grads = tape.gradient(out, [u, m] if wrt_images else [m])
            return tf.identity(
                tf.add_n([tf.reduce_sum(g) for g in grads]), name="wanted"
            )

        graph = step.get_concrete_function(images, matrix).graph.as_graph_def()
        return _called_functions(graph, "wanted")

    assert any("grad_matrix" in f for f in calls(False))
    assert not any("grad_images" in f for f in calls(False))
    assert any("grad_images" in f for f in calls(True))


@pytest.mark.parametrize(
    "inputs,matrix,size,message",
    [
        ((2, 5, 6, 1), (2, 3, 4), (3, 3), r"matrix must have shape \[B, 2, 3\]"),
        ((2, 3, 5, 6, 1), (2, 2, 3), (3, 3, 3), r"\[B, 3, 4\] or \[B, G, 3, 4\]"),
        ((2, 5, 6, 1), (3, 2, 3), (3, 3), r"same batch size"),
        ((2, 5, 6, 1), (2, 2, 3), (3, 3, 3), r"output_size must be 2 positive"),
        ((5, 6, 1), (2, 2, 3), (3, 3), r"inputs must be images"),
    ],
    ids=["matrix-shape", "3d-matrix", "batch", "output-size", "rank"],
)
def test_sample_affine_bad_input_gives_clear_errors(inputs, matrix, size, message):
    with pytest.raises(ValueError, match=message):
        sampler.sample_affine(np.zeros(inputs, "f4"), np.zeros(matrix, "f4"), size)
    with pytest.raises(ValueError, match=r"float32 or float64.*float16"):
        sampler.sample_affine(
            np.zeros((1, 3, 3, 1), "f4"), np.zeros((1, 2, 3), "f2"), (2, 2)
        )
