"""Tests of stn_tf.models: shapes, parameter budgets, gradients, the registry."""

import numpy as np
import pytest
import tensorflow as tf

from stn_tf import models

EXPERIMENTS = {
    "mnist_r": ((28, 28, 1), 1),
    "mnist_rts": ((42, 42, 1), 2),
    "mnist_tc": ((60, 60, 1), 2),
}
GRID = [
    (dataset, name, transform)
    for dataset in EXPERIMENTS
    for name, spec in models.MODELS.items()
    if spec.ndim == 2
    and not spec.sequence
    and spec.family == "mnist"
    and name != "st_fcn_2x"  # test_recurrent; cub and svhn: test_realdata
    for transform in (
        ("affine", "projective", "tps") if spec.uses_transform else ("affine",)
    )
]


@pytest.mark.parametrize(
    "dataset,name,transform", GRID, ids=["-".join(g) for g in GRID]
)
def test_every_model_has_about_400k_parameters_and_the_declared_outputs(
    dataset, name, transform
):
    shape, pool = EXPERIMENTS[dataset]
    model = models.build_model(name, shape, 10, transform=transform, pool=pool)
    assert abs(model.count_params() - 400_000) <= 40_000, model.count_params()
    out = model(np.zeros((2, *shape), np.float32))
    assert out["logits"].shape == (2, 10)
    if models.MODELS[name].uses_transform:
        num_params = {"affine": 6, "projective": 8, "tps": 32}[transform]
        assert out["theta"].shape == (2, num_params)
        assert out["transformed"].shape == (2, *shape)  # before the pooling
    else:
        assert set(out) == {"logits"}


def test_a_fresh_st_model_is_the_identity_and_starts_at_the_identity_theta():
    model = models.build_model("st_cnn", (42, 42, 1), 10, transform="affine", pool=2)
    images = np.random.default_rng(0).uniform(size=(3, 42, 42, 1)).astype("f4")
    out = model(images)
    np.testing.assert_allclose(out["theta"], np.tile([1, 0, 0, 0, 1, 0], (3, 1)))
    np.testing.assert_allclose(out["transformed"], images, atol=1e-6)


@pytest.mark.parametrize("name", ["fcn", "cnn", "st_fcn", "st_cnn"])
def test_every_trainable_variable_gets_a_finite_gradient(name):
    model = models.build_model(name, (42, 42, 1), 10, transform="tps", pool=2, width=16)
    images = np.random.default_rng(1).uniform(size=(4, 42, 42, 1)).astype("f4")
    labels = np.array([1, 2, 3, 4])
    with tf.GradientTape() as tape:
        logits = model(images, training=True)["logits"]
        loss = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        )
    grads = tape.gradient(loss, model.trainable_variables)
    assert grads and all(g is not None for g in grads)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    if name.startswith("st"):  # the localisation net learns too
        st = {id(v) for v in model.get_layer("st").trainable_variables}
        st_grads = [g for g, v in zip(grads, model.trainable_variables) if id(v) in st]
        assert any(np.abs(g.numpy()).sum() > 0 for g in st_grads)


def test_registry_errors_list_the_known_names():
    with pytest.raises(
        ValueError, match=r"Unknown model 'resnet'.*fcn, cnn, st_fcn, st_cnn"
    ):
        models.build_model("resnet", (28, 28, 1), 10)
    with pytest.raises(
        ValueError, match=r"takes transform one of \('affine', .*transform='spline'"
    ):
        models.build_model("st_cnn", (28, 28, 1), 10, transform="spline")
    with pytest.raises(ValueError, match=r"takes transform one of .*'affine3d'"):
        models.build_model("st_cnn", (28, 28, 1), 10, transform="affine3d")
    with pytest.raises(ValueError, match=r"takes examples \(H, W, C\).*\(28, 28\)"):
        models.build_model("cnn", (28, 28), 10)
    with pytest.raises(KeyError, match=r"registered twice"):
        models.register("cnn", description="again")(lambda *a: None)


def test_3d_max_pooling_equals_keras_and_is_builtin_in_tflite(tmp_path):
    # Odd sizes: the last slice, row and column are dropped, as "valid" pooling.
    volumes = np.random.default_rng(0).normal(size=(2, 7, 6, 9, 3)).astype("f4")
    want = tf.keras.layers.MaxPooling3D(2)(volumes)
    got = models.MaxPooling3D(2)(volumes)
    np.testing.assert_array_equal(got, want)
    assert models.MaxPooling3D().compute_output_shape((None, 7, 6, 9, 3)) == (
        None,
        3,
        3,
        4,
        3,
    )
    with pytest.raises(ValueError, match="pool_size must be 2"):
        models.MaxPooling3D(3)
    module = tf.Module()
    module.f = tf.function(
        lambda x: models.MaxPooling3D()(x),
        input_signature=[tf.TensorSpec([None, 7, 6, 9, 3], tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.f.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    from conftest import run_tflite

    (out,), ops = run_tflite(converter.convert(), volumes)
    assert not [op for op in ops if "FLEX" in op.upper()], ops
    np.testing.assert_array_equal(out, want)
