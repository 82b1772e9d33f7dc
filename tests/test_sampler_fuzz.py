"""Property-based fuzzing of the transforms and the sampler (hypothesis).

Whatever θ holds (huge, tiny, subnormal, NaN, ±inf, mixed in one row) and whatever the
sizes (1 pixel, 1 row, non-square), a transform's grid fed to the sampler gives finite
outputs and finite gradients for finite images, and rows of the batch do not leak
into each other: a good row next to bad ones is sampled as if alone.
"""

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stn_tf import sampler, transforms

EXTREMES = [0.0, -0.0, 1e-45, -1e-38, 1e-7, 1.0, -1.0, 3.0, 1e7, -1e19, 3e38, -3.4e38]
value = st.one_of(
    st.sampled_from(EXTREMES + [np.nan, np.inf, -np.inf]),
    st.floats(-1e6, 1e6, width=32),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)
size = st.integers(1, 7)
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same cases on every run and machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# A case compiles the XLA sampler for its sizes (seconds each): each case samples
# several θ rows at once, so a few cases try many values.
FUZZ_COMPILED = settings(FUZZ, max_examples=12)
ROWS = 4


def _run(name, theta, image, out_size, jit):
    spec = transforms.get_transform(name)
    params = tf.constant(theta, tf.float32)
    image = tf.constant(image)
    with tf.GradientTape() as tape:
        tape.watch([params, image])
        coords = spec.grid(params, out_size)
        out = sampler.sample(image, coords, jit_compile=jit)
        weights = tf.sin(tf.range(tf.size(out), dtype=tf.float32))
        loss = tf.reduce_sum(out * tf.reshape(weights, tf.shape(out)))
    grads = tape.gradient(loss, [params, image])
    return out.numpy(), [g.numpy() for g in grads]


@FUZZ_COMPILED
@given(
    name=st.sampled_from(["affine", "attention", "projective", "tps"]),
    data=st.data(),
    in_size=st.tuples(size, size),
    out_size=st.tuples(size, size),
    jit=st.booleans(),
)
def test_any_theta_any_size_2d(name, data, in_size, out_size, jit):
    p = transforms.get_transform(name).num_params
    row = lambda values: st.lists(values, min_size=p, max_size=p)  # noqa: E731
    bad = data.draw(
        st.lists(row(value), min_size=ROWS - 1, max_size=ROWS - 1), label="thetas"
    )
    good = data.draw(row(st.floats(-2, 2, width=32)), label="good")
    rng = np.random.default_rng(0)
    image = rng.normal(size=(ROWS, *in_size, 2)).astype(np.float32)
    out, (g_theta, g_image) = _run(name, [*bad, good], image, out_size, jit)
    assert out.shape == (ROWS, *out_size, 2)
    for t in (out, g_theta, g_image):
        assert np.all(np.isfinite(t))
    alone, _ = _run(name, [good], image[-1:], out_size, jit)
    np.testing.assert_allclose(out[-1], alone[0], rtol=1e-6, atol=1e-6)


@FUZZ_COMPILED
@given(
    data=st.data(),
    in_size=st.tuples(size, size, size),
    out_size=st.tuples(size, size, size),
)
def test_any_theta_any_size_3d(data, in_size, out_size):
    row = st.lists(value, min_size=12, max_size=12)
    thetas = data.draw(st.lists(row, min_size=ROWS, max_size=ROWS), label="thetas")
    rng = np.random.default_rng(1)
    image = rng.normal(size=(ROWS, *in_size, 1)).astype(np.float32)
    out, (g_theta, g_image) = _run("affine3d", thetas, image, out_size, True)
    assert out.shape == (ROWS, *out_size, 1)
    for t in (out, g_theta, g_image):
        assert np.all(np.isfinite(t))


@FUZZ
@given(coords=st.lists(value, min_size=2, max_size=2), h=size, w=size)
def test_any_coordinate_reads_finite_values(coords, h, w):
    image = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1)
    points = tf.constant(np.array(coords, np.float32).reshape(1, 1, 1, 2))
    for kernel in ("bilinear", "nearest"):
        out = sampler.sample(tf.constant(image), points, interpolation=kernel).numpy()
        assert np.isfinite(out).all()
        assert image.min() <= out.min() and out.max() <= image.max()
