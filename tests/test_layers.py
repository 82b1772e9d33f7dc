"""Tests of the Keras layers: identity at init, shapes, serialisation, export."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_tflite

from stn_tf import transforms
from stn_tf.layers import (
    ParallelSpatialTransformer,
    RecurrentSpatialTransformer,
    SpatialTransformer,
)

TRANSFORMS_2D = ["affine", "attention", "projective", "tps"]


def _loc(units=8):
    return keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(units, activation="tanh")]
    )


def _conv_loc():
    return keras.Sequential(
        [
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def _images(shape=(3, 12, 10, 2), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("f4")


def _perturb(layer, seed=1, scale=0.1):
    """Moves every weight off its initial value, so round trips are not trivial."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(w.numpy() + rng.normal(0, scale, w.shape).astype(w.dtype))


def _ramp(size):
    grid = transforms.regular_grid(size).numpy()
    return (0.3 + 0.5 * grid[..., 0] - 0.25 * grid[..., 1])[None, ..., None]


# --------------------------------------------------------------------------------------
# Identity at initialisation


@pytest.mark.parametrize("jit", [True, False], ids=["xla", "eager"])
@pytest.mark.parametrize("transform", TRANSFORMS_2D)
def test_fresh_transformer_is_identity(transform, jit):
    images = _images()
    layer = SpatialTransformer(_loc(), transform, return_theta=True, jit_compile=jit)
    out, theta = layer(images)
    np.testing.assert_array_equal(out.numpy(), images)
    np.testing.assert_array_equal(
        theta.numpy(), transforms.get_transform(transform).identity_params(3)
    )


def test_fresh_3d_transformer_is_identity():
    volumes = _images((2, 4, 5, 6, 3))
    layer = SpatialTransformer(keras.layers.Flatten(), "affine3d")
    np.testing.assert_array_equal(layer(volumes).numpy(), volumes)
    assert layer.compute_output_shape((2, 4, 5, 6, 3)) == (2, 4, 5, 6, 3)


def test_downsample_resamples_the_whole_image():
    """A fresh layer with d = 2 reads the input on a coarser corner-aligned grid:
    on a linear ramp that is the ramp itself at the coarse grid."""
    image = _ramp((30, 20))
    layer = SpatialTransformer(_loc(), "affine", downsample=2)
    out = layer(image)
    assert out.shape == (1, 15, 10, 1)
    np.testing.assert_allclose(out.numpy(), _ramp((15, 10)), atol=1e-6)
    assert SpatialTransformer(_loc(), downsample=3).compute_output_shape(
        (None, 100, 100, 1)
    ) == (None, 33, 33, 1)


def test_output_size_and_feature_maps():
    features = _images((2, 9, 9, 16))
    layer = SpatialTransformer(_conv_loc(), "attention", output_size=(4, 5))
    assert layer(features).shape == (2, 4, 5, 16)


# --------------------------------------------------------------------------------------
# Parallel and recurrent transformers


def test_parallel_transformers_concat_and_list():
    images = _images()
    layer = ParallelSpatialTransformer(_loc(), num_transformers=3, return_theta=True)
    out, theta = layer(images)
    assert out.shape == (3, 12, 10, 6) and theta.shape == (3, 3, 6)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([images] * 3, -1))
    listed = ParallelSpatialTransformer(_loc(), num_transformers=2, merge="list")(
        images
    )
    assert (
        isinstance(listed, list)
        and len(listed) == 2
        and listed[0].shape == images.shape
    )


def test_parallel_initial_params_tile_the_image():
    # Four attention windows of scale 0.5, one per quadrant (as for CUB).
    initial = [[0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [0.5, -0.5, 0.5], [0.5, 0.5, 0.5]]
    image = _ramp((9, 9))
    layer = ParallelSpatialTransformer(
        _loc(),
        4,
        "attention",
        output_size=(5, 5),
        merge="list",
        initial_params=initial,
        return_theta=True,
    )
    crops, theta = layer(image)
    np.testing.assert_allclose(theta.numpy()[0], initial)
    # The top-left crop is the top-left quadrant of the ramp, read at 5x5.
    np.testing.assert_allclose(crops[0].numpy(), image[:, :5, :5], atol=1e-6)
    np.testing.assert_allclose(crops[3].numpy(), image[:, 4:, 4:], atol=1e-6)


def test_fixed_scale_regresses_only_the_translation():
    # STN A.6: attention windows at scale 0.5, only (tx, ty) learned.
    initial = [[0.5, -0.5, 0.0], [0.5, 0.5, 0.0]]
    image = _ramp((9, 9))
    layer = ParallelSpatialTransformer(
        _loc(),
        2,
        "attention",
        output_size=(9, 5),
        merge="list",
        fixed_scale=0.5,
        initial_params=initial,
        return_theta=True,
    )
    crops, theta = layer(image)
    assert layer.head.kernel.shape[-1] == 4  # two (tx, ty), no scales
    np.testing.assert_allclose(theta.numpy()[0], initial)
    # Moving the head's translation moves the window; the scale stays 0.5.
    layer.head.bias.assign([0.25, 0.0, 0.5, -0.25])
    _, theta = layer(image)
    np.testing.assert_allclose(theta.numpy()[0], [[0.5, 0.25, 0.0], [0.5, 0.5, -0.25]])
    # The first window is the middle-left quarter: rows 2..6 and columns 0..4 of
    # 9, read at 9 rows (every other one lands on a pixel) x 5 columns.
    np.testing.assert_allclose(crops[0].numpy()[0, ::2], image[0, 2:7, :5], atol=1e-6)
    single = SpatialTransformer(_loc(), "attention", fixed_scale=0.5, return_theta=True)
    _, theta = single(image)
    np.testing.assert_array_equal(theta.numpy(), [[0.5, 0.0, 0.0]])
    grads = _gradients(single, image)
    assert single.head.kernel.shape[-1] == 2 and all(
        np.isfinite(g).all() for g in grads
    )


def _gradients(layer, images):
    with tf.GradientTape() as tape:
        out, _ = layer(images)
        loss = tf.reduce_sum(out * out)
    return [g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]


def test_recurrent_transformer_shapes_and_identity():
    images = _images((2, 30, 30, 1))
    layer = RecurrentSpatialTransformer(
        _conv_loc(), steps=3, units=16, downsample=3, return_theta=True
    )
    crops, theta = layer(images)
    assert crops.shape == (2, 3, 10, 10, 1) and theta.shape == (2, 3, 6)
    np.testing.assert_array_equal(theta.numpy(), np.tile([1, 0, 0, 0, 1, 0], (2, 3, 1)))
    full = RecurrentSpatialTransformer(_conv_loc(), steps=2, units=4)(images)
    np.testing.assert_array_equal(full.numpy(), np.stack([images] * 2, 1))


def test_recurrent_offsets_are_fixed_unless_learned_and_old_configs_learn_them():
    images = _images((2, 30, 30, 1))
    starts = [[0.5, 0, -0.5, 0, 0.5, 0], [0.5, 0, 0.5, 0, 0.5, 0]]
    fixed = RecurrentSpatialTransformer(
        _conv_loc(), steps=2, units=4, initial_params=starts, return_theta=True
    )
    _, theta = fixed(images)
    np.testing.assert_allclose(theta.numpy(), np.stack([starts] * 2), atol=1e-6)
    assert not [w for w in fixed.weights if "step_offsets" in w.path]
    learned = RecurrentSpatialTransformer(
        _conv_loc(), steps=2, units=4, initial_params=starts, learn_offsets=True
    )
    learned(images)
    offsets = [w for w in learned.trainable_weights if "step_offsets" in w.path]
    np.testing.assert_allclose(
        offsets[0].numpy(), np.array(starts) - [1, 0, 0, 0, 1, 0]
    )
    # A config saved before learn_offsets existed had the trained offsets.
    config = fixed.get_config()
    assert config["learn_offsets"] is False
    del config["learn_offsets"]
    assert RecurrentSpatialTransformer.from_config(config).learn_offsets is True


# --------------------------------------------------------------------------------------
# Serialisation and Keras contracts

LAYERS = {
    "single-affine": lambda: SpatialTransformer(_loc(), "affine", output_size=(6, 5)),
    "single-tps-learned": lambda: SpatialTransformer(
        _loc(), "tps", tps_grid_size=3, learn_control_points=True
    ),
    "parallel": lambda: ParallelSpatialTransformer(
        _conv_loc(), 2, "attention", downsample=2, return_theta=True
    ),
    "parallel-fixed-scale": lambda: ParallelSpatialTransformer(
        _conv_loc(),
        2,
        "attention",
        downsample=2,
        fixed_scale=0.5,
        initial_params=[[0.5, -0.5, 0.0], [0.5, 0.5, 0.0]],
    ),
    "recurrent": lambda: RecurrentSpatialTransformer(
        _conv_loc(), steps=2, units=8, downsample=2, interpolation="nearest"
    ),
}


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_config_round_trip(make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_keras_file_round_trip_gives_equal_outputs(make, tmp_path):
    images = _images()
    inputs = keras.Input(images.shape[1:])
    layer = make()
    model = keras.Model(inputs, layer(inputs))
    _perturb(layer)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(tf.nest.flatten(model(images)), tf.nest.flatten(loaded(images))):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(
        tf.nest.flatten(model(images))[0].numpy()[..., :2], images
    )


def test_jit_switch_gives_same_outputs():
    images = _images()
    a = SpatialTransformer(_loc(), "projective", jit_compile=True)
    b = SpatialTransformer(_loc(), "projective", jit_compile=False)
    a(images), b(images)
    _perturb(a)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(a(images).numpy(), b(images).numpy(), atol=1e-6)


def _fixed_scale_windows(**kwargs):
    """Two attention windows at a fixed scale, left and right."""
    return ParallelSpatialTransformer(
        _conv_loc(),
        2,
        "attention",
        output_size=(5, 5),
        fixed_scale=0.5,
        initial_params=[[0.5, -0.3, 0.0], [0.5, 0.3, 0.0]],
        **kwargs,
    )


XLA_SWITCH = {
    "affine": lambda jit: SpatialTransformer(
        _loc(), "affine", output_size=(5, 7), jit_compile=jit
    ),
    "attention": lambda jit: SpatialTransformer(_loc(), "attention", jit_compile=jit),
    "projective": lambda jit: SpatialTransformer(
        _loc(), "projective", downsample=2, jit_compile=jit
    ),
    "tps": lambda jit: SpatialTransformer(_loc(), "tps", jit_compile=jit),
    "affine3d": lambda jit: SpatialTransformer(
        keras.layers.Flatten(), "affine3d", output_size=(3, 4, 5), jit_compile=jit
    ),
    "parallel-fixed-scale": lambda jit: _fixed_scale_windows(jit_compile=jit),
    "recurrent-nearest": lambda jit: RecurrentSpatialTransformer(
        _conv_loc(),
        steps=2,
        units=8,
        downsample=2,
        interpolation="nearest",
        jit_compile=jit,
    ),
}


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("name", XLA_SWITCH)
def test_xla_switch_gives_same_outputs_and_gradients(name, policy):
    """jit_compile=True makes affine-family grids inside the XLA sampler
    (``sample_affine``); jit_compile=False makes them outside, in plain TF ops.
    Same outputs, dtypes and gradients w.r.t. inputs and every weight."""
    make = XLA_SWITCH[name]
    images = tf.constant(
        _images((3, 4, 6, 5, 2) if name == "affine3d" else (3, 12, 10, 2))
    )
    keras.mixed_precision.set_global_policy(policy)
    try:
        xla, plain = make(True), make(False)
        xla(images), plain(images)
        _perturb(xla, scale=0.2)
        plain.set_weights(xla.get_weights())

        def run(layer):
            with tf.GradientTape() as tape:
                tape.watch(images)
                out = layer(images)
                loss = tf.reduce_sum(tf.cast(out, tf.float32) ** 2)
            grads = tape.gradient(loss, [images, *layer.trainable_variables])
            return [out, *grads]

        got, want = run(xla), run(plain)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert [t.dtype for t in got] == [t.dtype for t in want]
    tol = 1e-4 if policy == "float32" else 2e-2
    for a, b in zip(got, want):
        a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1, np.abs(b).max()))


GROUPED = {
    "parallel-affine": lambda: ParallelSpatialTransformer(
        _conv_loc(), 3, "affine", output_size=(9, 7), return_theta=True
    ),
    "parallel-attention-list": lambda: ParallelSpatialTransformer(
        _conv_loc(), 2, "attention", merge="list", return_theta=True
    ),
    "parallel-fixed-scale": lambda: _fixed_scale_windows(return_theta=True),
    "recurrent": lambda: RecurrentSpatialTransformer(
        _conv_loc(), steps=3, units=8, downsample=2, return_theta=True
    ),
    "recurrent-nearest": lambda: RecurrentSpatialTransformer(
        _conv_loc(), steps=2, units=8, interpolation="nearest", return_theta=True
    ),
}


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", GROUPED)
def test_heads_sampled_in_one_call_give_each_heads_own_warp(name, policy):
    """Under XLA the parallel and recurrent layers sample every head's window in
    one ``sample_affine`` call; each output is bit for bit the head's own warp
    (``transforms.warp`` of its θ), and the gradients are the same sums."""
    images = tf.constant(_images((4, 20, 18, 2)))
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = GROUPED[name]()
        layer(images)
        _perturb(layer, scale=0.2)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)
            out, theta = layer(images)
            heads = tf.unstack(out, axis=1) if name.startswith("recurrent") else out
            if not isinstance(heads, list):  # concat: C channels per head
                heads = tf.split(heads, theta.shape[1], axis=-1)
            size = heads[0].shape[1:3]
            warps = [
                transforms.warp(
                    tf.cast(images, layer.compute_dtype),
                    layer.transform,
                    theta[:, i],
                    size,
                    interpolation=layer.interpolation,
                )
                for i in range(theta.shape[1])
            ]
            loss_heads = tf.add_n(
                [tf.reduce_sum(tf.cast(h, tf.float32) ** 2) for h in heads]
            )
            loss_warps = tf.add_n(
                [tf.reduce_sum(tf.cast(w, tf.float32) ** 2) for w in warps]
            )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for head, warp in zip(heads, warps):
        assert head.dtype == warp.dtype
        np.testing.assert_array_equal(head.numpy(), warp.numpy())
    # Gradients w.r.t. the images and every weight: the same sums, in another
    # order (in bfloat16 the heads' image gradients are summed before rounding).
    sources = [images, *layer.trainable_variables]
    got = tape.gradient(loss_heads, sources)
    want = tape.gradient(loss_warps, sources)
    tol = 1e-5 if policy == "float32" else 2e-2
    for g, w in zip(got, want):
        g, w = tf.cast(g, tf.float32).numpy(), tf.cast(w, tf.float32).numpy()
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1, np.abs(w).max()))


@pytest.mark.parametrize("name", ["parallel-affine", "recurrent"])
def test_heads_are_sampled_in_one_xla_call(name):
    images = tf.constant(_images((4, 20, 18, 2)))
    layer = GROUPED[name]()
    layer(images)
    graph = tf.function(layer).get_concrete_function(images).graph
    calls = [
        op
        for op in graph.get_operations()
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
        and "forward_affine" in op.get_attr("f").name
    ]
    assert len(calls) == 1


@pytest.mark.parametrize(
    "transform,inside",
    [("affine", True), ("attention", True), ("projective", False), ("tps", False)],
)
@pytest.mark.parametrize("jit", [True, False], ids=["xla", "eager"])
def test_xla_layers_make_affine_grids_inside_the_sampler(transform, inside, jit):
    images = tf.constant(_images())
    layer = SpatialTransformer(_loc(), transform, jit_compile=jit)
    layer(images)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.trainable_variables)

    graph = step.get_concrete_function(images).graph.as_graph_def()
    names = [f.signature.name for f in graph.library.function]
    assert any("forward_affine" in n for n in names) == (inside and jit)
    assert any("grad_matrix" in n for n in names) == (inside and jit)
    assert any("_XlaMustCompile" in str(f.attr) for f in graph.library.function) == jit


def test_layer_inside_dataset_map():
    images = _images((4, 12, 10, 2))
    layer = SpatialTransformer(_loc(), "affine", output_size=(6, 6))
    layer(images)
    _perturb(layer)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2).map(layer)
    np.testing.assert_allclose(
        np.concatenate(list(ds.as_numpy_iterator())), layer(images).numpy(), atol=1e-5
    )


def test_mixed_precision_keeps_theta_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = SpatialTransformer(_loc(), "affine", return_theta=True)
        out, theta = layer(_images())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == tf.float16 and theta.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), _images().astype("f2"), atol=1e-3)


class _SubclassedLocalization(keras.Model):
    """A user's own localisation model: no compute_output_shape, weights in call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(5, activation="tanh")

    def call(self, x):
        return self.dense(self.flatten(x))


def test_subclassed_localization_model():
    images = _images()
    layer = SpatialTransformer(_SubclassedLocalization(), "affine", return_theta=True)
    out, theta = layer(images)
    np.testing.assert_array_equal(out.numpy(), images)
    assert len(layer.trainable_weights) == 4  # the model's Dense and the θ head


def test_mixed_precision_learned_control_points_and_symbolic_theta_dtype():
    images = _images((2, 24, 20, 1))
    reference = SpatialTransformer(_loc(), "tps", learn_control_points=True)
    reference(images)
    _perturb(reference, scale=0.02)
    # θ = bias: the float16 localisation net cannot move it, only the control
    # points and the sampler's precision matter.
    reference.head.kernel.assign(np.zeros(reference.head.kernel.shape, "f4"))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = SpatialTransformer(
            _loc(), "tps", learn_control_points=True, return_theta=True
        )
        _, symbolic_theta = layer(keras.Input((24, 20, 1)))
        layer.set_weights(reference.get_weights())
        out, theta = layer(images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert symbolic_theta.dtype == "float32" and theta.dtype == tf.float32
    # The grid is built from float32 control points and θ: it matches the
    # float32 layer's sampling up to the float16 rounding of the pixels.
    np.testing.assert_allclose(
        tf.cast(out, tf.float32).numpy(), reference(images).numpy(), atol=2e-3
    )


def test_every_trainable_variable_gets_a_finite_gradient():
    images = _images((4, 12, 10, 1))
    model = keras.Sequential(
        [
            keras.Input((12, 10, 1)),
            SpatialTransformer(
                _conv_loc(), "tps", learn_control_points=True, downsample=2
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    _perturb(model.layers[0], scale=0.05)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(images) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == len(model.trainable_variables) > 0
    for v, g in zip(model.trainable_variables, grads):
        assert g is not None, v.path
        assert np.all(np.isfinite(g.numpy())), v.path


def test_transformer_learns_to_undo_a_translation():
    """End to end: the localisation net learns θ that re-centres a shifted blob."""
    yy, xx = np.mgrid[0:16, 0:16]
    blob = lambda cx, cy: np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
    target = blob(7.5, 7.5)[None, ..., None].astype("f4")
    shifted = np.stack([blob(7.5 + dx, 7.5 + dy) for dx, dy in [(3, -2), (-3, 2)]])
    inputs = shifted[..., None].astype("f4")
    keras.utils.set_random_seed(0)
    layer = SpatialTransformer(_loc(16), "attention")
    optimizer = keras.optimizers.Adam(0.01)
    losses = []
    for _ in range(150):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((layer(inputs) - target) ** 2)
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply(grads, layer.trainable_variables)
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


# --------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: SpatialTransformer(_loc(), "shear"), r"Unknown transform 'shear'"),
        (
            lambda: SpatialTransformer("dense", "affine"),
            r"Keras layer or model.*'dense'",
        ),
        (
            lambda: SpatialTransformer(_loc(), output_size=(4, 4), downsample=2),
            r"not both",
        ),
        (lambda: SpatialTransformer(_loc(), downsample=0), r"downsample must be > 0"),
        (lambda: SpatialTransformer(_loc(), output_size=(4,)), r"2 positive integers"),
        (
            lambda: SpatialTransformer(_loc(), interpolation="cubic"),
            r"interpolation must be",
        ),
        (
            lambda: SpatialTransformer(_loc(), learn_control_points=True),
            r"needs transform='tps'",
        ),
        (lambda: ParallelSpatialTransformer(_loc(), 0), r"positive integer.*0"),
        (lambda: ParallelSpatialTransformer(_loc(), 2, merge="sum"), r"merge must be"),
        (
            lambda: ParallelSpatialTransformer(_loc(), 2, initial_params=[[1, 0, 0]]),
            r"\[2, 6\]",
        ),
        (
            lambda: RecurrentSpatialTransformer(_loc(), steps=0),
            r"steps must be a positive",
        ),
        (
            lambda: SpatialTransformer(_loc(), downsample="2"),
            r"downsample must be > 0.*'2'",
        ),
        (
            lambda: RecurrentSpatialTransformer(_loc(), units=None),
            r"units must be a positive.*None",
        ),
        (
            lambda: SpatialTransformer(_loc(), "affine", fixed_scale=0.5),
            r"needs transform='attention'",
        ),
        (
            lambda: SpatialTransformer(_loc(), "attention", fixed_scale=0),
            r"fixed_scale must be > 0",
        ),
        (
            lambda: ParallelSpatialTransformer(
                _loc(), 1, "attention", fixed_scale=0.5, initial_params=[[1, 0, 0]]
            ),
            r"fixed scale 0.5.*\[1.0\]",
        ),
        (
            lambda: RecurrentSpatialTransformer(
                _loc(), transform="attention", fixed_scale=0.5
            ),
            r"learns every parameter",
        ),
    ],
    ids=[
        "transform",
        "localization",
        "both-sizes",
        "downsample",
        "size",
        "interp",
        "control-points",
        "num",
        "merge",
        "initial",
        "steps",
        "downsample-str",
        "units-none",
        "fixed-scale-affine",
        "fixed-scale-zero",
        "fixed-scale-initial",
        "fixed-scale-rnn",
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"takes inputs \[B, H, W, C\].*\(2, 5, 5\)"):
        SpatialTransformer(_loc())(np.zeros((2, 5, 5), "f4"))
    with pytest.raises(ValueError, match=r"\[B, D, H, W, C\].*\(2, 5, 5, 1\)"):
        SpatialTransformer(keras.layers.Flatten(), "affine3d")(
            np.zeros((2, 5, 5, 1), "f4")
        )
    with pytest.raises(ValueError, match=r"known spatial size.*None"):
        SpatialTransformer(keras.layers.GlobalAveragePooling2D())(
            keras.Input((None, None, 1))
        )


def test_the_transformer_names_a_wrong_input_not_its_localisation_net():
    # Built for 28x28x1, then given 3 channels: Keras's input check names the
    # transformer (it used to fail inside Dense: "expected axis -1 ... 784").
    st = SpatialTransformer(_loc(), name="st")
    st(np.zeros((2, 28, 28, 1), "f4"))
    with pytest.raises(
        ValueError, match=r"layer 'st'.*axis -1.*value 1.*\(2, 28, 28, 3\)"
    ):
        st(np.zeros((2, 28, 28, 3), "f4"))
    with pytest.raises(ValueError, match=r"layer 'st'.*ndim=4.*ndim=5"):
        st(np.zeros((2, 1, 28, 28, 1), "f4"))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: SpatialTransformer(_loc()), (2, 1, 28, 28)),
        (lambda: ParallelSpatialTransformer(_loc(), 2), (2, 3, 32, 32)),
        (lambda: RecurrentSpatialTransformer(_loc(), units=4), (2, 3, 64, 64)),
        (lambda: SpatialTransformer(_loc(), "affine3d"), (2, 1, 16, 16, 16)),
    ],
    ids=["single", "parallel", "recurrent", "3d"],
)
def test_channels_first_inputs_are_refused_with_the_fix(make, shape):
    fixed = (shape[0], *shape[2:], shape[1])
    with pytest.raises(
        ValueError, match=rf"looks channels-first.*{re.escape(str(fixed))}"
    ):
        make()(np.zeros(shape, "f4"))
    make()(np.zeros(fixed, "f4"))  # the transposed batch is taken


def test_outputs_smaller_than_two_pixels_are_refused():
    with pytest.raises(
        ValueError, match=r"downsample=100.*\(28, 28\).*\(0, 0\).*at least 2"
    ):
        SpatialTransformer(_loc(), downsample=100)(np.zeros((2, 28, 28, 1), "f4"))
    with pytest.raises(ValueError, match=r"output_size=\(1, 5\).*at least 2"):
        SpatialTransformer(_loc(), output_size=(1, 5))(np.zeros((2, 8, 8, 1), "f4"))
    layer = SpatialTransformer(_loc(), downsample=14)  # 28 / 14: 2x2, the smallest
    assert layer(np.zeros((2, 28, 28, 1), "f4")).shape == (2, 2, 2, 1)


# --------------------------------------------------------------------------------------
# Export: SavedModel -> TFLite with builtin ops only


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda: SpatialTransformer(_loc(), "affine", output_size=(6, 7)),
        lambda: SpatialTransformer(_conv_loc(), "projective", downsample=2),
        lambda: SpatialTransformer(_loc(), "tps", output_size=(6, 7)),
        lambda: ParallelSpatialTransformer(_loc(), 2, "attention", downsample=2),
        lambda: RecurrentSpatialTransformer(
            _conv_loc(), steps=3, units=8, downsample=2
        ),
    ],
    ids=["affine", "projective", "tps", "parallel-attention", "recurrent"],
)
def test_model_converts_to_tflite_builtins_and_matches(make, tmp_path):
    images = _images((3, 12, 10, 2))
    inputs = keras.Input(images.shape[1:])
    layer = make()
    model = keras.Model(inputs, layer(inputs))
    _perturb(layer)
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    (out,), ops = run_tflite(converter.convert(), images)
    assert "GATHER" in ops and not [op for op in ops if "FLEX" in op.upper()], ops
    np.testing.assert_allclose(out, model(images).numpy(), atol=1e-5)
