"""Tests of stn_tf.transforms: identities, golden warps, inverses, gradients, errors."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import reference_sample

from stn_tf import sampler, transforms

NAMES = sorted(transforms.TRANSFORMS)
ARANGE = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)


def _size(name):
    return (3, 4, 5) if transforms.get_transform(name).ndim == 3 else (3, 4)


def _ramp(size, batch=1):
    """A linear ramp image: bilinear interpolation reproduces it exactly."""
    grid = transforms.regular_grid(size, tf.float64).numpy()
    ramp = 0.3 + 0.5 * grid[..., 0] - 0.25 * grid[..., 1]
    return np.broadcast_to(ramp[None, ..., None], (batch, *size, 1))


@pytest.mark.parametrize("name", NAMES)
def test_identity_params_give_the_regular_grid_exactly(name):
    spec = transforms.get_transform(name)
    for size in (
        [(3, 4), (28, 28), (1, 5), (30, 60)]
        if spec.ndim == 2
        else [(3, 4, 5), (1, 2, 3)]
    ):
        grid = spec.grid(spec.identity_params(2), size)
        expected = np.broadcast_to(
            transforms.regular_grid(size).numpy(), (2, *size, spec.ndim)
        )
        np.testing.assert_array_equal(grid.numpy(), expected)
        assert spec.num_params == len(spec.identity) == spec.identity_params().shape[1]


def test_regular_grid_is_corner_aligned():
    np.testing.assert_array_equal(
        transforms.regular_grid((2, 3)).numpy(),
        [[[-1, -1], [0, -1], [1, -1]], [[-1, 1], [0, 1], [1, 1]]],
    )
    np.testing.assert_array_equal(transforms.regular_grid((1, 1)).numpy(), [[[0, 0]]])


def test_affine_one_pixel_shift_golden():
    theta = np.array([[1, 0, 2 / 3, 0, 1, 0]], "f4")
    out = sampler.bilinear_sample(ARANGE, transforms.affine_grid(theta, (3, 4)))
    np.testing.assert_allclose(
        out[0, ..., 0].numpy(), [[1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]], atol=1e-6
    )
    # The [B, 2, 3] layout means the same.
    np.testing.assert_array_equal(
        transforms.affine_grid(theta.reshape(1, 2, 3), (3, 4)).numpy(),
        transforms.affine_grid(theta, (3, 4)).numpy(),
    )


def test_affine_180_rotation_reverses():
    theta = np.array([[-1, 0, 0, 0, -1, 0]], "f4")
    out = sampler.bilinear_sample(ARANGE, transforms.affine_grid(theta, (3, 4)))
    np.testing.assert_array_equal(out.numpy(), ARANGE[:, ::-1, ::-1])


def test_attention_crop_golden():
    """s = 0.5 centred on the top-left 2x2 block of a 5x5 image reads it at 3x3."""
    image = np.arange(25, dtype="f4").reshape(1, 5, 5, 1)
    params = np.array([[0.25, -0.75, -0.75]], "f4")  # window [-1, -0.5] in x and y
    out = sampler.bilinear_sample(image, transforms.attention_grid(params, (3, 3)))
    np.testing.assert_allclose(
        out[0, ..., 0].numpy(), [[0, 0.5, 1], [2.5, 3, 3.5], [5, 5.5, 6]], atol=1e-6
    )
    np.testing.assert_allclose(
        transforms.output_corners("attention", params).numpy(),
        [[[-1, -1], [-0.5, -1], [-0.5, -0.5], [-1, -0.5]]],
    )


def test_affine_from_pixels_rotates_non_square_images_without_shear():
    image = np.arange(15, dtype="f4").reshape(1, 3, 5, 1)
    # Output pixel (c, r) of the 5x3 output reads input pixel (W - 1 - r, c).
    rot90 = np.array([[[0, -1, 4], [1, 0, 0]]], "f4")
    theta = transforms.affine_from_pixels(rot90, (3, 5), (5, 3))
    out = sampler.bilinear_sample(image, transforms.affine_grid(theta, (5, 3)))
    np.testing.assert_array_equal(out[0, ..., 0].numpy(), np.rot90(image[0, ..., 0]))
    # A 30 degree rotation about the centre of a 30x60 image keeps pixel distances.
    a = np.deg2rad(30)
    c, s = np.cos(a), np.sin(a)
    centre = np.array([29.5, 14.5])
    m = np.array([[c, -s, 0], [s, c, 0]])
    m[:, 2] = centre - m[:, :2] @ centre
    theta = transforms.affine_from_pixels(m[None], (30, 60), (30, 60))
    grid = transforms.affine_grid(theta, (30, 60)).numpy()[0]
    pixels = (grid + 1) * np.array([59 / 2, 29 / 2])
    step_x = np.linalg.norm(pixels[:, 1:] - pixels[:, :-1], axis=-1)
    step_y = np.linalg.norm(pixels[1:] - pixels[:-1], axis=-1)
    np.testing.assert_allclose(step_x, 1.0, atol=1e-5)
    np.testing.assert_allclose(step_y, 1.0, atol=1e-5)


def test_affine_from_pixels_in_3d_matches_a_numpy_axis_swap_of_a_non_cubic_volume():
    volume = np.arange(2 * 3 * 4, dtype="f4").reshape(1, 2, 3, 4, 1)  # D=2, H=3, W=4
    # Output voxel (x, y, z) reads input voxel (x_in, y_in, z_in) = (y, z, x), so the
    # output is D'=3 (z runs over H), H'=4 (y over W), W'=2 (x over D).
    swap = np.array([[[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]], "f4")
    theta = transforms.affine_from_pixels(swap, (2, 3, 4), (3, 4, 2))
    assert theta.shape == (1, 12)
    out = sampler.trilinear_sample(volume, transforms.affine3d_grid(theta, (3, 4, 2)))
    expected = np.empty((3, 4, 2), "f4")
    for z in range(3):
        for y in range(4):
            for x in range(2):
                expected[z, y, x] = volume[0, x, z, y, 0]  # [z_in, y_in, x_in]
    np.testing.assert_array_equal(out[0, ..., 0].numpy(), expected)


def test_projective_from_points_maps_the_four_points_and_recovers_a_known_homography():
    rng = np.random.default_rng(3)
    h = np.array([[0.9, 0.1, 0.05], [-0.2, 1.1, -0.1], [0.15, -0.05, 1.0]])
    target = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], "f8") * 0.8 + rng.normal(
        0, 0.05, (4, 2)
    )
    w = target @ h[2, :2] + h[2, 2]
    source = (target @ h[:2, :2].T + h[:2, 2]) / w[:, None]
    params = transforms.projective_from_points(target[None], source[None]).numpy()
    np.testing.assert_allclose(params[0], h.reshape(-1)[:8], atol=1e-12)
    params32 = transforms.projective_from_points(
        target[None].astype("f4"), source[None].astype("f4")
    )
    assert params32.dtype == tf.float32
    np.testing.assert_allclose(
        transforms.projective_points(params32, target.astype("f4")).numpy()[0],
        source,
        atol=1e-5,
    )


def test_projective_matches_homography_formula():
    rng = np.random.default_rng(0)
    params = np.concatenate(
        [np.eye(3).ravel()[:8][None] + rng.normal(0, 0.1, (3, 8))], 0
    ).astype("f8")
    points = rng.uniform(-1, 1, (7, 2))
    got = transforms.projective_points(params, points).numpy()
    for b in range(3):
        h = np.append(params[b], 1).reshape(3, 3)
        hom = np.c_[points, np.ones(7)] @ h.T
        np.testing.assert_allclose(got[b], hom[:, :2] / hom[:, 2:], rtol=1e-12)
    # With no perspective row it is the affine transform.
    affine = params[:, :6]
    flat = np.c_[affine, np.zeros((3, 2))]
    np.testing.assert_allclose(
        transforms.projective_grid(flat, (4, 5)).numpy(),
        transforms.affine_grid(affine, (4, 5)).numpy(),
        rtol=1e-12,
    )


def test_projective_points_at_infinity_read_zero_with_finite_gradient():
    # w = 1 + g x vanishes at x = -1 for g = 1.
    params = tf.constant([[1, 0, 0, 0, 1, 0, 1, 0]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(params)
        out = sampler.bilinear_sample(
            ARANGE, transforms.projective_grid(params, (3, 4))
        )
        loss = tf.reduce_sum(out)
    grad = tape.gradient(loss, params)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(grad.numpy()))
    np.testing.assert_array_equal(out.numpy()[0, :, 0], 0)


def test_tps_interpolates_control_points_and_reproduces_affine():
    rng = np.random.default_rng(1)
    control = transforms.tps_control_points(4)
    delta = rng.normal(0, 0.1, (2, 16, 2))
    moved = transforms.tps_points(delta.reshape(2, 32), control).numpy()
    np.testing.assert_allclose(moved, control + delta, atol=1e-10)
    # Displacements of an affine map give exactly that affine map everywhere.
    theta = np.array([[0.9, 0.1, 0.05], [-0.2, 1.1, -0.1]])
    affine_delta = (control @ theta[:, :2].T + theta[:, 2]) - control
    grid = transforms.tps_grid(affine_delta[None].reshape(1, 32), (5, 7)).numpy()
    np.testing.assert_allclose(
        grid, transforms.affine_grid(theta.reshape(1, 6), (5, 7)).numpy(), atol=1e-10
    )


def test_tps_learnable_control_points_match_fixed_path_and_get_gradients():
    rng = np.random.default_rng(2)
    delta = tf.constant(rng.normal(0, 0.1, (2, 18)))
    control_np = transforms.tps_control_points(3) + rng.normal(0, 0.05, (9, 2))
    control = tf.Variable(control_np)
    fixed = transforms.tps_grid(delta, (6, 5), control_points=control_np)
    with tf.GradientTape() as tape:
        learned = transforms.tps_grid(delta, (6, 5), control_points=control)
        loss = tf.reduce_sum(learned**2)
    np.testing.assert_allclose(learned.numpy(), fixed.numpy(), atol=1e-10)
    grad = tape.gradient(loss, control).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_tps_control_points_may_be_a_list():
    control = transforms.tps_control_points(2).tolist()
    grid = transforms.tps_grid(np.zeros((1, 8)), (3, 3), control_points=control)
    np.testing.assert_array_equal(
        grid.numpy()[0], transforms.regular_grid((3, 3)).numpy()
    )


def test_affine3d_shift_golden():
    volume = np.arange(24, dtype="f4").reshape(1, 2, 3, 4, 1)
    theta = np.array([[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2]], "f4")  # z + 2: one slice
    out = sampler.trilinear_sample(volume, transforms.affine3d_grid(theta, (2, 3, 4)))
    np.testing.assert_array_equal(out.numpy()[0, 0], volume[0, 1])
    np.testing.assert_array_equal(out.numpy()[0, 1], 0)


@pytest.mark.parametrize("name", ["affine", "attention", "projective", "affine3d"])
def test_warp_then_inverse_recovers_the_interior(name):
    spec = transforms.get_transform(name)
    rng = np.random.default_rng(3)
    size = (9, 11) if spec.ndim == 2 else (10, 11, 12)
    params = spec.identity_params(2, np.float64) + rng.normal(
        0, 0.08, (2, spec.num_params)
    )
    if name == "attention":
        params[:, 0] = [0.8, 1.2]
    image = (
        _ramp(size, 2)
        if spec.ndim == 2
        else np.broadcast_to(
            transforms.regular_grid(size, tf.float64).numpy()[None, ..., :1] * 0.4
            + 0.1,
            (2, *size, 1),
        )
    )
    warped = sampler.sample(image, spec.grid(params, size))
    back = sampler.sample(warped, spec.grid(transforms.invert(name, params), size))
    # The ramp comes back exactly wherever the second warp reads inside the
    # first warp's output and every neighbour it blends read inside the image:
    # points two pixels clear of the border on both sides.
    margin = np.array([2 * 2 / (n - 1) for n in size[::-1]])
    target = transforms.regular_grid(size, tf.float64).numpy()
    inverse_points = spec.grid(transforms.invert(name, params), size).numpy()
    inside = np.all(np.abs(inverse_points) <= 1, -1) & np.all(
        np.abs(target) <= 1 - margin, -1
    )
    assert inside.sum() > 20  # enough points to mean something
    # A homography bends the ramp between pixels, so resampling it twice is only
    # close; the affine family keeps it linear and exact.
    atol = 2e-3 if name == "projective" else 1e-9
    np.testing.assert_allclose(
        back.numpy()[..., 0][inside], image[..., 0][inside], atol=atol
    )


def test_compose_equals_two_warps_and_inverse_composes_to_identity():
    rng = np.random.default_rng(4)
    a = np.array([[1, 0, 0, 0, 1, 0]]) + rng.normal(0, 0.1, (3, 6))
    b = np.array([[1, 0, 0, 0, 1, 0]]) + rng.normal(0, 0.1, (3, 6))
    pts = rng.uniform(-1, 1, (5, 2))
    two_steps = transforms.affine_points(a, transforms.affine_points(b, pts))
    np.testing.assert_allclose(
        transforms.affine_points(transforms.compose("affine", a, b), pts).numpy(),
        two_steps.numpy(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        transforms.compose("affine", a, transforms.invert("affine", a)).numpy(),
        np.tile([[1, 0, 0, 0, 1, 0]], (3, 1)),
        atol=1e-12,
    )


@pytest.mark.parametrize("name", NAMES)
def test_gradient_through_transform_to_parameters(name):
    """Finite differences of sample(image, grid(θ)) w.r.t. θ, in float64."""
    spec = transforms.get_transform(name)
    rng = np.random.default_rng(5)
    size = (4, 5) if spec.ndim == 2 else (3, 4, 4)
    image = tf.constant(rng.normal(size=(2, *size, 2)))
    out_size = (3, 3) if spec.ndim == 2 else (2, 3, 2)
    scale = 0.05 if name == "tps" else 0.1
    params = tf.constant(
        spec.identity_params(2, np.float64) + rng.normal(0, scale, (2, spec.num_params))
    )
    # Finite differences need every sampling point off the pixel knots (kinks).
    grid = spec.grid(params, out_size).numpy()
    pos = [(grid[..., a] + 1) * (n - 1) / 2 for a, n in enumerate(size[::-1])]
    assert min(np.abs(p - np.round(p)).min() for p in pos) > 1e-3
    fn = lambda p: sampler.sample(image, spec.grid(p, out_size))
    theoretical, numerical = tf.test.compute_gradient(fn, [params], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)
    assert np.abs(theoretical[0]).max() > 0


@pytest.mark.parametrize("name", NAMES)
def test_huge_and_nan_params_stay_finite(name):
    spec = transforms.get_transform(name)
    p = spec.num_params
    params = tf.constant(
        [
            [3e38] * p,  # every term overflows
            [1e30 * (-1) ** i for i in range(p)],
            [np.nan] * p,
            [np.inf] * p,
            list(spec.identity),  # a good row: its gradient must survive
        ],
        tf.float32,
    )
    size = (5, 5) if spec.ndim == 2 else (3, 4, 5)
    rng = np.random.default_rng(6)
    image = tf.constant(rng.normal(size=(5, *size, 1)).astype("f4"))
    with tf.GradientTape() as tape:
        tape.watch([params, image])
        coords = spec.grid(params, size)
        out = sampler.sample(image, coords, jit_compile=True)
        loss = tf.reduce_sum(out**2)
    g_params, g_image = tape.gradient(loss, [params, image])
    for t in (out, g_params, g_image):
        assert np.all(np.isfinite(t.numpy())), name
    np.testing.assert_allclose(out.numpy()[4], image.numpy()[4])
    assert np.abs(g_params.numpy()[4]).max() > 0


def test_grid_matches_oracle_sampling_of_a_known_affine():
    """affine_grid + sampler against the oracle evaluated at hand-built points."""
    rng = np.random.default_rng(7)
    image = rng.normal(size=(1, 5, 6, 2))
    theta = np.array([[0.8, -0.3, 0.1, 0.25, 0.9, -0.05]])
    xs, ys = np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 3))
    pts = np.stack([0.8 * xs - 0.3 * ys + 0.1, 0.25 * xs + 0.9 * ys - 0.05], -1)
    expected = reference_sample(image[0], pts.reshape(-1, 2)).reshape(3, 4, 2)
    got = sampler.bilinear_sample(image, transforms.affine_grid(theta, (3, 4)))
    np.testing.assert_allclose(got.numpy()[0], expected, atol=1e-12)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: transforms.affine_grid(np.zeros((2, 5)), (3, 3)),
            r"\[B, 6\] or \[B, 2, 3\].*\(2, 5\)",
        ),
        (
            lambda: transforms.attention_grid(np.zeros((3,)), (3, 3)),
            r"\[B, 3\].*\(3,\)",
        ),
        (
            lambda: transforms.projective_grid(np.zeros((1, 9)), (3, 3)),
            r"\[B, 8\].*\(1, 9\)",
        ),
        (
            lambda: transforms.affine3d_grid(np.zeros((1, 6)), (3, 3, 3)),
            r"\[B, 12\] or \[B, 3, 4\]",
        ),
        (lambda: transforms.tps_grid(np.zeros((1, 7)), (3, 3)), r"\[B, 2K\]"),
        (
            lambda: transforms.tps_grid(np.zeros((1, 10)), (3, 3)),
            r"5 control points needs control_points",
        ),
        (
            lambda: transforms.tps_grid(np.zeros((1, 8)), (3, 3), np.zeros((3, 2))),
            r"shape \[4, 2\]",
        ),
        (
            lambda: transforms.affine_grid(np.zeros((1, 6), "int32"), (3, 3)),
            r"floating point.*int32",
        ),
        (
            lambda: transforms.affine_grid(np.zeros((1, 6)), (3, 0)),
            r"positive integers.*\(3, 0\)",
        ),
        (
            lambda: transforms.affine_grid(np.zeros((1, 6)), (3, 3, 3)),
            r"2 positive integers",
        ),
        (
            lambda: transforms.affine3d_grid(np.zeros((1, 12)), (3, 3)),
            r"3 positive integers",
        ),
        (
            lambda: transforms.get_transform("shear"),
            r"Unknown transform 'shear'.*'affine'",
        ),
        (
            lambda: transforms.to_matrix("tps", np.zeros((1, 32))),
            r"to_matrix works for",
        ),
        (
            lambda: transforms.affine_points(np.zeros((2, 6)), np.zeros((3, 5, 2))),
            r"params.shape=\(2, 6\), points.shape=\(3, 5, 2\)",
        ),
        (
            lambda: transforms.compose("affine", np.zeros((2, 6)), np.zeros((3, 6))),
            r"batch sizes 2 and 3",
        ),
        (lambda: transforms.regular_grid(28), r"positive integers.*28"),
        (
            lambda: transforms.affine_from_pixels(
                np.array([[[1, 0, 0], [0, 1, 0], [0.01, 0, 1]]]), (3, 3), (3, 3)
            ),
            r"last row \[0, 0, 1\]",
        ),
    ],
    ids=[
        "affine",
        "attention",
        "projective",
        "affine3d",
        "tps-odd",
        "tps-nonsquare",
        "tps-control",
        "int",
        "size-zero",
        "size-rank",
        "size-3d",
        "unknown",
        "matrix",
        "points-batch",
        "compose-batch",
        "grid-int",
        "pixels-projective",
    ],
)
def test_bad_input_gives_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("name", transforms.AFFINE_TRANSFORMS)
def test_affine_matrix_is_to_matrix_without_the_last_row(name):
    spec = transforms.get_transform(name)
    rng = np.random.default_rng(20)
    params = rng.normal(size=(4, spec.num_params))
    n = spec.ndim
    want = transforms.to_matrix(name, params).numpy()[:, :n]
    got = transforms.affine_matrix(name, params)
    assert got.shape == (4, n, n + 1) and got.dtype == tf.float64
    np.testing.assert_array_equal(got.numpy(), want)
    # The grid of the matrix is the transform's grid.
    size = _size(name)
    target = transforms.regular_grid(size, tf.float64).numpy()
    coords = np.einsum("...j,bij->b...i", target, want[..., :n]) + want[
        :, None, None, :, n
    ].reshape(4, *[1] * n, n)
    np.testing.assert_allclose(spec.grid(params, size).numpy(), coords, atol=1e-12)
    if spec.matrix_shape is not None:  # θ also taken as a matrix
        np.testing.assert_array_equal(
            transforms.affine_matrix(name, params.reshape(4, *spec.matrix_shape)), want
        )
    half = transforms.affine_matrix(name, params.astype("f2"))
    assert half.dtype == tf.float32  # like every grid: float16 θ is lifted


def test_affine_matrix_rejects_other_transforms():
    with pytest.raises(ValueError, match=r"affine_matrix works for .*'attention'"):
        transforms.affine_matrix("projective", np.zeros((1, 8)))


@pytest.mark.parametrize("jit", [True, False], ids=["xla", "plain"])
@pytest.mark.parametrize(
    "name", ["affine", "attention", "projective", "tps", "affine3d"]
)
def test_warp_samples_the_input_at_the_transformed_points(name, jit):
    # The oracle: the paper's sampling sum at T(p) for each target point p of the
    # regular output grid (the transform's points in float64, the sum in NumPy).
    rng = np.random.default_rng(3)
    spec = transforms.get_transform(name)
    batch, out = 2, (4, 3) if spec.ndim == 2 else (3, 4, 2)
    images = rng.normal(size=(batch, *(5, 6, 4)[: spec.ndim], 2))
    params = spec.identity_params(batch, np.float64)
    params = params + rng.normal(0, 0.08, params.shape)
    got = transforms.warp(
        tf.constant(images, tf.float32),
        name,
        tf.constant(params, tf.float32),
        out,
        jit_compile=jit,
    ).numpy()
    target = transforms.regular_grid(out, tf.float64).numpy().reshape(-1, spec.ndim)
    points = spec.points(tf.constant(params), target).numpy()  # [B, N, ndim]
    for b in range(batch):
        want = reference_sample(images[b], points[b]).reshape(*out, 2)
        np.testing.assert_allclose(got[b], want, atol=2e-5)
