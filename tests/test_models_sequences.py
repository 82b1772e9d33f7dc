"""Tests of stn_tf.models.sequences and the addition and 3D presets of
stn_tf.models.classifier: RNN-SPN, FFN-SPN, the conv net, 2xST-FCN, the 3D ST-CNN."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import reference_sample

from stn_tf import models

SEQ = (100, 100, 1)


# === Models ===


@pytest.mark.parametrize(
    "name,downsample,crop",
    [
        ("rnn_spn", 2.0, (3, 50, 50, 1)),
        ("rnn_spn", 4.0, (3, 25, 25, 1)),
        ("ffn_spn", 2.0, (50, 50, 1)),
        ("conv_net", 2.0, None),
    ],
)
def test_sequence_models_give_one_softmax_per_digit(name, downsample, crop):
    model = models.build_model(name, SEQ, 10, label_shape=(3,), downsample=downsample)
    out = model(np.zeros((2, *SEQ), np.float32))
    assert out["logits"].shape == (2, 3, 10)
    if crop is None:
        assert set(out) == {"logits"}
    else:
        assert out["transformed"].shape == (2, *crop)
        assert out["theta"].shape == ((2, 3, 6) if name == "rnn_spn" else (2, 6))


def test_the_paper_widths_fix_the_sequence_models_sizes():
    # Appendix: 32-filter classifier (Dense 256) for RNN-SPN, 96 filters (Dense 400)
    # for FFN-SPN; the GRU has 256 units.
    rnn = models.build_model("rnn_spn", SEQ, 10, label_shape=(3,))
    gru = rnn.get_layer("st").rnn
    assert gru.units == 256
    conv = [
        v for v in rnn.trainable_variables if "conv" in v.path and "kernel" in v.path
    ]
    assert {int(v.shape[-1]) for v in conv} == {
        20,
        32,
    }  # localisation 20, classifier 32
    ffn = models.build_model("ffn_spn", SEQ, 10, label_shape=(3,))
    kernels = {tuple(v.shape) for v in ffn.trainable_variables if "kernel" in v.path}
    assert (3, 3, 96, 96) in kernels and (9 * 9 * 96, 400) in kernels
    # Dense(400), then the three softmax heads straight on it (no second hidden layer).
    assert (400, 3 * 10) in kernels and (400, 400) not in kernels


def test_ffn_spn_and_2x_st_fcn_start_at_the_identity():
    images = np.random.default_rng(0).uniform(size=(2, *SEQ)).astype("f4")
    out = models.build_model("ffn_spn", SEQ, 10, label_shape=(3,), downsample=1.0)(
        images
    )
    np.testing.assert_allclose(out["theta"], np.tile([1, 0, 0, 0, 1, 0], (2, 1)))
    np.testing.assert_allclose(out["transformed"], images, atol=1e-6)

    pair = np.random.default_rng(1).uniform(size=(2, 42, 42, 2)).astype("f4")
    model = models.build_model("st_fcn_2x", (42, 42, 2), 19, transform="tps")
    out = model(pair)
    np.testing.assert_allclose(out["theta"], np.zeros((2, 2, 32)), atol=0)
    np.testing.assert_allclose(out["transformed"], np.stack([pair, pair], 1), atol=1e-5)
    assert abs(model.count_params() - 400_000) <= 40_000


def test_the_default_rnn_spn_is_the_papers_theta_a_linear_function_of_h():
    # RNN-SPN §3.2: θ_t = W h_t + b; no per-step offset, no trained one; every
    # step starts at the identity.
    model = models.RNNSPN(SEQ, 10, num_outputs=3, downsample=4.0, outputs="all")
    st = model.get_layer("st")
    assert not [w for w in model.weights if "offset" in w.path]
    assert not st.learn_offsets and st.step_offsets is None
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(2, *SEQ)).astype("f4")
    np.testing.assert_allclose(
        model(images)["theta"], np.tile([1, 0, 0, 0, 1, 0], (2, 3, 1)), atol=1e-6
    )
    st.head.kernel.assign(rng.normal(0, 0.05, st.head.kernel.shape))
    features = st.localization(images)  # [B, F], read by the GRU at every step
    h = st.rnn(tf.repeat(features[:, None], 3, axis=1))  # [B, T, 256]
    want = h.numpy() @ st.head.kernel.numpy() + st.head.bias.numpy()
    np.testing.assert_allclose(model(images)["theta"], want, atol=1e-5)
    # The aids, on request: trained offsets are a weight, started at the starts.
    aided = models.RNNSPN(SEQ, 10, starts="left_to_right", learn_offsets=True)
    offsets = [w for w in aided.trainable_weights if "step_offsets" in w.path]
    assert len(offsets) == 1 and offsets[0].shape == (3, 6)
    with pytest.raises(ValueError, match=r"starts must be one of.*'random'"):
        models.RNNSPN(SEQ, 10, starts="random")


def test_rnn_spn_left_to_right_starts_are_three_windows():
    # Windows 0.6x the input, centred at x = -0.4, 0, 0.4: checked against the
    # loop reference sampler at a few output pixels of each step.
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(1, *SEQ)).astype("f4")
    out = models.build_model(
        "rnn_spn",
        SEQ,
        10,
        label_shape=(3,),
        downsample=4.0,
        starts="left_to_right",
    )(images)
    expected = [[0.6, 0, x, 0, 0.6, 0] for x in (-0.4, 0.0, 0.4)]
    np.testing.assert_allclose(out["theta"][0], expected, atol=1e-6)
    u = np.linspace(-1, 1, 25)
    for t, centre in enumerate((-0.4, 0.0, 0.4)):
        rows, cols = rng.integers(0, 25, 6), rng.integers(0, 25, 6)
        points = np.stack([0.6 * u[cols] + centre, 0.6 * u[rows]], -1)
        want = reference_sample(images[0].astype(np.float64), points)
        got = out["transformed"].numpy()[0, t, rows, cols]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_2x_st_fcn_has_two_independent_transformers_on_both_channels():
    # A.1: "two independent spatial transformers, ST1 and ST2, each of which
    # operate on both channels", within the ~400k budget of the other models.
    model = models.STFCN2x((42, 42, 2), 19, outputs="all")
    assert abs(model.count_params() - 400_000) <= 20_000
    st = [model.get_layer(f"st_{i}") for i in range(2)]
    first = [t.localization.get_layer("fc_0").kernel for t in st]
    assert [tuple(k.shape) for k in first] == [(42 * 42 * 2, 32)] * 2
    assert first[0] is not first[1]
    own = [{id(v) for v in t.trainable_variables} for t in st]
    assert not own[0] & own[1]  # nothing shared
    # Moving one transformer's head moves its θ only.
    st[1].head.bias.assign(st[1].head.bias + 0.1)
    theta = model(np.zeros((1, 42, 42, 2), "f4"))["theta"].numpy()
    np.testing.assert_allclose(theta[0, 0], [1, 0, 0, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(theta[0, 1], [1.1, 0.1, 0.1, 0.1, 1.1, 0.1], atol=1e-6)
    shared = models.STFCN2x((42, 42, 2), 19, shared_localization=True)
    assert [layer.name for layer in shared.transformers] == ["st"]


def test_the_3d_models_have_the_same_classifier():
    # A.3 compares the 3D ST-CNN with a CNN; their classifiers are equal, so the
    # transformer is the only difference. The pooled localisation net's Dense
    # reads 4^3 x 20 features (26k parameters), not 9^3 x 20 (292k).
    st = models.STCNN3D((60, 60, 60, 1), 10, jit_compile=False)
    cnn = models.CNN3D((60, 60, 60, 1), 10)
    assert st.width == cnn.width
    assert abs(st.count_params() - 400_000) <= 20_000
    loc = st.get_layer("st").localization.get_layer("fc_0").kernel
    assert tuple(loc.shape) == (4 * 4 * 4 * 20, 20)
    assert (
        st.get_layer("classifier").count_params()
        == cnn.get_layer("classifier").count_params()
    )


def test_gradients_reach_the_gru_through_every_step():
    model = models.build_model("rnn_spn", SEQ, 10, label_shape=(3,), downsample=4.0)
    st = model.get_layer("st")
    # A fresh head has a zero kernel (identity start), which blocks the GRU's
    # gradient; give it small weights to see the path through all three steps.
    st.head.kernel.assign(
        np.random.default_rng(3).normal(0, 0.01, st.head.kernel.shape)
    )
    images = np.random.default_rng(4).uniform(size=(2, *SEQ)).astype("f4")
    labels = np.array([[1, 2, 3], [4, 5, 6]])
    with tf.GradientTape(persistent=True) as tape:
        out = model(images, training=True)
        loss = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(
                labels, out["logits"], from_logits=True
            )
        )
        theta = out["theta"]
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
        assert g is not None and np.all(np.isfinite(g)), v.path
    gru = {
        v.path: g for v, g in zip(model.trainable_variables, grads) if "gru" in v.path
    }
    assert gru and all(float(tf.reduce_max(tf.abs(g))) > 0 for g in gru.values())
    per_step = tape.gradient(loss, theta)  # [B, T, 6]: every glimpse is trained
    assert np.all(np.abs(per_step.numpy()).sum(axis=(0, 2)) > 0)


def test_the_3d_transformer_starts_at_the_identity_and_sums_depth():
    # V(z, y, x) = a x + b y + c z + d is linear, so trilinear sampling of it is
    # exact: the model's depth projection at the identity is computable by hand.
    size, a, b, c, d = 40, 0.5, -0.25, 0.125, 1.0
    z, y, x = np.meshgrid(*[np.arange(size, dtype=np.float64)] * 3, indexing="ij")
    volume = (a * x + b * y + c * z + d)[None, ..., None].astype("f4")
    model = models.build_model(
        "st_cnn_3d", (size,) * 3 + (1,), 10, downsample=2.0, width=4
    )
    out = model(volume)
    np.testing.assert_allclose(out["theta"], [[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]])
    pos = np.linspace(0, size - 1, size // 2)  # the 20 sample positions per axis
    px, py = np.meshgrid(pos, pos, indexing="xy")
    want = len(pos) * (a * px + b * py + d) + c * pos.sum()
    np.testing.assert_allclose(out["transformed"][0, ..., 0], want, rtol=1e-5)


@pytest.mark.parametrize(
    "name,shape,labels,message",
    [
        ("cnn", SEQ, (3,), "rnn_spn, ffn_spn, conv_net"),
        ("rnn_spn", (28, 28, 1), (), "predicts a sequence"),
        ("st_cnn", (60, 60, 60, 1), (), r"takes examples \(H, W, C\)"),
    ],
)
def test_models_refuse_data_they_do_not_fit(name, shape, labels, message):
    with pytest.raises(ValueError, match=message):
        models.build_model(name, shape, 10, label_shape=labels)


# === Training ===
