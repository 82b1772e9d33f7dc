"""Tests of stn_tf.models: shapes, parameter budgets, gradients, the registry."""

import numpy as np
import pytest
import tensorflow as tf

from stn_tf import models, transforms

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
    and name != "st_fcn_2x"  # test_models_sequences; cub: test_cub, svhn: test_svhn
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


# === The model classes' contract (keras-hub's run_model_saving_test, timm's
# test_model_backward), one tiny instance per registered name ===


def _dense(i, o):
    return i * o + o


def _conv(k, i, o, ndim=2):
    return k**ndim * i * o + o


_SEQ_LOC = _conv(3, 1, 20) + 2 * _conv(3, 20, 20)  # 48 px -> 2x2x20 features
_SEQ_CLS = _conv(3, 1, 4) + 2 * _conv(3, 4, 4)  # width 4
_SVHN_CONVS = sum(
    _conv(5, i, o)
    for i, o in [(3, 48), (48, 64), (64, 128), (128, 160)]
    + [(160, 192), (192, 192), (192, 192), (192, 192)]
)
_SVHN_HEAD = _dense(2 * 2 * 192, 16) + 2 * _dense(16, 16) + _dense(16, 2 * 11)
_FC32 = lambda features: _dense(features, 32) + _dense(32, 32) + _dense(32, 6)

# name: (class, args, kwargs, parameters counted by hand from A.1-A.5 and the
# RNN-SPN appendix at these tiny sizes)
CONTRACT = {
    "fcn": (
        models.FCN,
        ((28, 28, 1), 10),
        dict(width=8),
        _dense(784, 8) + _dense(8, 8) + _dense(8, 10),
    ),
    "cnn": (  # 28 -> conv9 20 -> pool 10 -> conv7 4 -> pool 2
        models.CNN,
        ((28, 28, 1), 10),
        dict(width=4),
        _conv(9, 1, 4) + _conv(7, 4, 4) + _dense(2 * 2 * 4, 10),
    ),
    "st_fcn": (  # TPS on a 4x4 grid: 32 parameters
        models.STFCN,
        ((28, 28, 1), 10),
        dict(transform="tps", width=8),
        _dense(784, 32)
        + 2 * _dense(32, 32)
        + _dense(32, 32)
        + _dense(784, 8)
        + _dense(8, 8)
        + _dense(8, 10),
    ),
    "st_cnn": (  # loc: 42 -> 21 -> 17 -> 8 -> 4; classifier on 21 px, "same"
        models.STCNN,
        ((42, 42, 1), 10),
        dict(pool=2, width=4),
        _conv(5, 1, 20)
        + _conv(5, 20, 20)
        + _dense(4 * 4 * 20, 20)
        + _dense(20, 6)
        + _conv(9, 1, 4)
        + _conv(7, 4, 4)
        + _dense(5 * 5 * 4, 10),
    ),
    "st_fcn_2x": (  # two independent transformers (A.1); 4 channels into the FCN
        models.STFCN2x,
        ((42, 42, 2), 19),
        dict(width=8),
        2 * (_dense(42 * 42 * 2, 32) + 2 * _dense(32, 32) + _dense(32, 6))
        + _dense(42 * 42 * 4, 8)
        + _dense(8, 8)
        + _dense(8, 19),
    ),
    "rnn_spn": (  # GRU(8) on 80 features: 3 gates x (in + units + 2 biases) x units
        models.RNNSPN,
        ((48, 48, 1), 10),
        dict(num_outputs=2, width=4, units=8),
        _SEQ_LOC
        + 3 * (80 + 8 + 2) * 8
        + _dense(8, 6)  # θ_t = linear(h_t): no per-step offsets (the paper)
        + _SEQ_CLS
        + _dense(2 * 2 * 4, 256)
        + _dense(256, 10),
    ),
    "ffn_spn": (  # crops 24 px -> 22 -> 11 -> 9 -> 4 -> 2
        models.FFNSPN,
        ((48, 48, 1), 10),
        dict(num_outputs=2, width=4, units=8),
        _SEQ_LOC
        + _dense(80, 200)
        + _dense(200, 6)
        + _SEQ_CLS
        + _dense(16, 8)
        + _dense(8, 20),
    ),
    "conv_net": (  # 48 -> 46 -> 23 -> 21 -> 10 -> 8
        models.ConvNet,
        ((48, 48, 1), 10),
        dict(num_outputs=2, width=4, units=8),
        _SEQ_CLS + _dense(8 * 8 * 4, 8) + _dense(8, 20),
    ),
    "st_cnn_3d": (  # loc: 36 -> 18 -> 14 -> 7 -> 3 -> pooled 1; output 18^3, summed
        models.STCNN3D,
        ((36, 36, 36, 1), 10),
        dict(width=4),
        _conv(5, 1, 20, 3)
        + _conv(5, 20, 20, 3)
        + _dense(1 * 20, 20)
        + _dense(20, 12)
        + _conv(9, 1, 4)
        + _conv(7, 4, 4)
        + _dense(4 * 4 * 4, 10),
    ),
    "cnn_3d": (  # summed 28x28, pooled 14 -> 7 -> 3 ("same")
        models.CNN3D,
        ((28, 28, 28, 1), 10),
        dict(width=4),
        _conv(9, 1, 4) + _conv(7, 4, 4) + _dense(3 * 3 * 4, 10),
    ),
    "svhn_cnn": (
        models.SVHNCNN,
        ((32, 32, 3), 11),
        dict(num_outputs=2, units=16),
        _SVHN_CONVS + _SVHN_HEAD,
    ),
    "st_cnn_single": (  # loc: conv 32, pool, conv 32 on 16 px, fc 32, fc 32
        models.STCNNSingle,
        ((32, 32, 3), 11),
        dict(num_outputs=2, units=16),
        _conv(5, 3, 32)
        + _conv(5, 32, 32)
        + _FC32(16 * 16 * 32)
        + _SVHN_CONVS
        + _SVHN_HEAD,
    ),
    "st_cnn_multi": (  # before conv 0, 1, 2, 3: 32x32x3, 16x16x48, 16x16x64, 8x8x128
        models.STCNNMulti,
        ((32, 32, 3), 11),
        dict(num_outputs=2, units=16),
        _FC32(32 * 32 * 3)
        + _FC32(16 * 16 * 48)
        + _FC32(16 * 16 * 64)
        + _FC32(8 * 8 * 128)
        + _SVHN_CONVS
        + _SVHN_HEAD,
    ),
}
CONTRACT_NAMES = sorted(CONTRACT)


def test_every_registered_model_has_a_contract():
    # st_inception's (InceptionV3 streams) is test_cub's, with the heavy runs.
    assert set(CONTRACT) | {"st_inception"} == set(models.MODELS)
    for name, (cls, *_) in CONTRACT.items():
        assert models.get_model(name).cls is cls


def _inputs(args, seed=0):
    return np.random.default_rng(seed).uniform(size=(2, *args[0])).astype("f4")


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract_parameter_count_and_outputs(name):
    cls, args, kwargs, expected = CONTRACT[name]
    model = cls(*args, **kwargs)
    assert isinstance(model, models.PaperModel) and model.name == name
    assert model.count_params() == expected
    scores = model(_inputs(args))  # the default: class probabilities
    labels = models.get_model(name).sequence
    assert scores.shape == (2, *((kwargs["num_outputs"],) if labels else ()), args[1])
    np.testing.assert_allclose(np.sum(scores, -1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract_starts_at_its_initial_transform_whatever_the_input(name):
    cls, args, kwargs, _ = CONTRACT[name]
    model = cls(*args, **kwargs, outputs="all")
    if not model.transformers:
        assert set(model(_inputs(args))) == {"logits"}
        return
    a, b = model(_inputs(args, 0)), model(_inputs(args, 1))
    np.testing.assert_allclose(a["theta"], b["theta"], atol=1e-6)  # zero kernels
    sts, theta = model.transformers, np.asarray(a["theta"])[0]
    if name == "st_cnn_multi":  # the chained θ: entry 0 is the first transformer's
        sts, theta = sts[:1], theta[:1]
    pieces = list(theta) if len(sts) > 1 or name == "st_cnn_multi" else [theta]
    for st, piece in zip(sts, pieces, strict=True):
        identity = np.asarray(transforms.get_transform(st.transform).identity, "f4")
        starts = getattr(st, "initial_params", None)
        want = np.asarray(starts, "f4") if starts is not None else identity
        np.testing.assert_allclose(piece.reshape(want.shape), want, atol=1e-6)
    if name in ("st_fcn", "st_cnn", "st_cnn_single"):
        # a fresh transformer at the identity passes its input through
        np.testing.assert_allclose(a["transformed"], _inputs(args, 0), atol=1e-5)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract_every_weight_gets_a_finite_gradient(name):
    cls, args, kwargs, _ = CONTRACT[name]
    model = cls(*args, **kwargs, outputs="logits")
    sequence = models.get_model(name).sequence
    labels = np.zeros((2, kwargs["num_outputs"]) if sequence else (2,), "i4") + 1
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(
                labels, model(_inputs(args), training=True), from_logits=True
            )
        )
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == len(model.trainable_variables) > 0
    for g, v in zip(grads, model.trainable_variables):
        assert g is not None and np.isfinite(np.asarray(g)).all(), v.path


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract_config_and_keras_file_round_trips(name, tmp_path):
    cls, args, kwargs, _ = CONTRACT[name]
    model = cls(*args, **kwargs)
    config = model.get_config()
    assert config["input_shape"] == args[0] and config["num_classes"] == args[1]
    again = cls.from_config(config)
    assert again.get_config() == config
    assert again.count_params() == model.count_params()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)  # no custom_objects
    assert type(loaded) is cls and loaded.get_config() == config
    x = _inputs(args)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_the_width_found_for_the_budget_is_in_the_config():
    model = models.STCNN((42, 42, 1), 10, pool=2, param_budget=50_000)
    width = model.get_config()["width"]
    assert abs(model.count_params() - 50_000) < abs(
        models.STCNN((42, 42, 1), 10, pool=2, width=width + 1).count_params() - 50_000
    )
    rebuilt = models.STCNN.from_config(model.get_config())
    assert rebuilt.count_params() == model.count_params()


@pytest.mark.parametrize(
    "a, b, c", [(1, 0, 0), (48.0, 3.0, 19_000), (0.5, 40.0, 7), (0, 9, 0)]
)
@pytest.mark.parametrize("budget", [1, 20_000, 400_000, 5_000_000, 10**12])
def test_width_for_budget_is_the_closest_width_and_never_builds_far_past_it(
    a, b, c, budget
):
    def count(width):  # a parameter count: quadratic in the width, plus a constant
        probed.append(width)
        return int(a * width**2 + b * width + c)

    probed = []
    got = models.registry.width_for_budget(count, budget)
    # Oracle: a linear scan for the first width at or over the budget, then the
    # closer of it and the one below.
    counts = [count(w) for w in range(1, models.registry.MAX_WIDTH + 1)]
    first = next((w for w, n in enumerate(counts, 1) if n >= budget), len(counts))
    below = counts[first - 2] if first > 1 else None
    want = (
        first - 1
        if below is not None and budget - below < counts[first - 1] - budget
        else first
    )
    assert got == want
    searched = probed[: -len(counts)]
    assert max(searched) <= max(2 * got, 2), searched  # no 2048-wide model built


def test_a_user_model_compiles_and_fits_with_plain_keras_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 42, 42, 1)).astype("f4")
    y = rng.integers(0, 10, 32)
    model = models.STCNN((42, 42, 1), 10, transform="tps", pool=2, width=4)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "m.keras")
    loaded = tf.keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        loaded.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), atol=1e-6
    )


def test_model_arguments_are_checked_with_what_was_received():
    with pytest.raises(ValueError, match=r"outputs must be one of .*outputs='theta'"):
        models.STCNN((42, 42, 1), 10, width=4, outputs="theta")
    with pytest.raises(ValueError, match=r"classifier must be one of .*'resnet'"):
        models.STNClassifier((42, 42, 1), 10, classifier="resnet", width=4)
    with pytest.raises(
        ValueError, match=r"pool is the average pooling after the transformer"
    ):
        models.STNClassifier((42, 42, 1), 10, pool=2, width=4)
    with pytest.raises(ValueError, match=r"width must be a positive integer.*0"):
        models.CNN((28, 28, 1), 10, width=0)
    with pytest.raises(ValueError, match=r"transformers must be one of"):
        models.SVHNClassifier((32, 32, 3), transformers="two")
    with pytest.raises(TypeError):
        models.STCNN((42, 42, 1), 10, classifier="fcn")  # a preset's fixed argument
