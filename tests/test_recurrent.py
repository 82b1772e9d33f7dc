"""Tests of the recurrent and multi-object experiments (issue 6): RNN-SPN, FFN-SPN
and the conv net on sequences, 2xST-FCN on addition, the 3D transformer, and
co-localisation (geometry, encoder, the optimisation's CLI)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from conftest import reference_sample, tiny_config

from stn_tf import colocalise, models, pictures, sampler, transforms
from stn_tf import train as trainer

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


def test_rnn_spn_starts_with_three_windows_left_to_right():
    # Windows 0.6x the input, centred at x = -0.4, 0, 0.4: checked against the
    # loop reference sampler at a few output pixels of each step.
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(1, *SEQ)).astype("f4")
    out = models.build_model("rnn_spn", SEQ, 10, label_shape=(3,), downsample=4.0)(
        images
    )
    expected = [[0.6, 0, x, 0, 0.6, 0] for x in (-0.4, 0.0, 0.4)]
    np.testing.assert_allclose(out["theta"][0], expected, atol=1e-6)
    u = np.linspace(-1, 1, 25)
    for t, centre in enumerate((-0.4, 0.0, 0.4)):
        rows, cols = rng.integers(0, 25, 6), rng.integers(0, 25, 6)
        points = np.stack([0.6 * u[cols] + centre, 0.6 * u[rows]], -1)
        want = reference_sample(images[0].astype(np.float64), points)
        got = out["transformed"].numpy()[0, t, rows, cols]
        np.testing.assert_allclose(got, want, atol=1e-5)


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


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"dataset": "mnist_sequence", "model": "cnn"},
            "models for it: rnn_spn, ffn_spn, conv_net",
        ),
        (
            {"dataset": "mnist_3d", "model": "st_cnn"},
            "models for it: st_cnn_3d, cnn_3d",
        ),
        ({"dataset": "mnist_coloc_t"}, "python -m stn_tf.colocalise"),
        (
            {"optimizer": "rmsprop", "model": "st_fcn", "loc_lr_multiplier": 0.1},
            "only under SGD",
        ),
        (
            {"model": "st_cnn_3d", "dataset": "mnist_3d", "transform": "affine"},
            "affine3d",
        ),
    ],
)
def test_configs_that_cannot_work_are_refused_with_what_fits(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_errors_count_digits_and_whole_sequences():
    logits = tf.one_hot([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 10)
    labels = tf.constant([[1, 2, 3], [4, 0, 6], [0, 0, 9]])
    wrong, wrong_sequences = trainer._mistakes(logits, labels)
    assert (float(wrong), float(wrong_sequences)) == (3.0, 2.0)
    single = trainer._mistakes(tf.one_hot([1, 2], 10), tf.constant([1, 3]))
    assert tuple(float(v) for v in single) == (1.0, 1.0)


def test_theta_stats_of_known_windows_in_2d_and_3d():
    config = tiny_config(model="st_fcn", transform="affine")
    half = trainer._theta_stats(config, np.array([[0.5, 0, 0.25, 0, 0.5, 0]]), (9, 9))
    assert half["theta_scale"] == pytest.approx(0.5)
    assert half["theta_shift"] == pytest.approx(0.25)
    assert half["grid_outside"] == 0
    config = tiny_config(model="st_cnn_3d", dataset="mnist_3d")
    identity = np.array([[[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]] * 2])  # [B, K, 12]
    stats = trainer._theta_stats(config, identity, (5, 5, 5))
    assert stats == {
        "theta_scale": pytest.approx(1.0),
        "theta_shift": pytest.approx(0.0, abs=1e-7),
        "grid_outside": 0.0,
    }


def test_sequence_training_cli_reports_digit_and_sequence_errors(tmp_path, capsys):
    workdir = tmp_path / "rnn"
    argv = [
        "train",
        "--dataset=mnist_sequence",
        "--model=rnn_spn",
        "--downsample=4",
        "--optimizer=rmsprop",
        "--learning_rate=0.001",
        "--steps=3",
        "--batch_size=4",
        "--log_every=1",
        "--picture_every=3",
        "--mnist_source=embedded",
        "--eval_batch_size=500",
        f"--workdir={workdir}",
    ]
    with flagsaver.flagsaver():
        trainer.FLAGS(argv)
        trainer.main(argv[:1])
    printed = capsys.readouterr().out
    assert "per digit" in printed and "of sequences wrong" in printed
    results = json.loads((workdir / "results.json").read_text())
    assert 0 <= results["test_error"] <= results["test_sequence_error"] <= 1
    rows = (workdir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "sequence_error" and rows[1].split(",")[3] != ""
    assert (workdir / "transformer.png").exists()
    config = json.loads((workdir / "config.json").read_text())
    assert (config["optimizer"], config["downsample"]) == ("rmsprop", 4.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dataset": "mnist_addition", "model": "st_fcn_2x", "transform": "tps"},
        {"dataset": "mnist_3d", "model": "st_cnn_3d", "eval_batch_size": 100},
        {"dataset": "mnist_sequence", "model": "ffn_spn", "downsample": 4.0},
    ],
    ids=["addition-2xst", "3d", "ffn_spn"],
)
def test_each_new_model_trains_and_draws_its_transformers(tmp_path, overrides):
    config = tiny_config(steps=2, batch_size=2, param_budget=40_000, **overrides)
    results = trainer.train_and_evaluate(config, tmp_path)
    assert np.isfinite(results["test_error"]) and results["steps"] == 2
    assert (tmp_path / "transformer.png").exists()


def test_sheets_draw_one_colour_per_transformer():
    images = np.zeros((2, 20, 20, 1), np.float32)
    u = np.linspace(-0.5, 0.5, 10)
    grid = np.stack(np.meshgrid(u, u, indexing="xy"), -1)
    coords = np.stack([grid - 0.3, grid + 0.3], 0)[None].repeat(
        2, 0
    )  # [2, 2, 10, 10, 2]
    outputs = np.zeros((2, 2, 10, 10, 1), np.float32)
    sheet = np.asarray(pictures.transformer_sheet(images, coords, outputs, zoom=2))
    for colour in pictures.COLOURS[:2]:
        assert np.all(sheet == colour, axis=-1).sum() > 40  # grid border and frame
    assert not np.all(sheet == pictures.COLOURS[2], axis=-1).any()


# === Co-localisation ===


def test_attention_boxes_by_hand():
    boxes = colocalise.attention_boxes(
        [
            [27 / 83, -28 / 83, 0.0],  # samples pixels 14..41 x 28..55 one to one
            [1.0, 0.0, 0.0],  # the whole 84x84 input, 28 samples 83/27 px apart
        ],
        (84, 84),
    )
    np.testing.assert_allclose(boxes[0], [14, 28, 42, 56], atol=1e-12)
    half = 83 / 27 / 2
    np.testing.assert_allclose(boxes[1], [0.5 - half] * 2 + [83.5 + half] * 2)


def test_box_iou_by_hand():
    a = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 5]]
    b = [[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 5]]
    np.testing.assert_allclose(colocalise.box_iou(a, b), [25 / 175, 1.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("encoder")
    trainer.train_and_evaluate(tiny_config(model="cnn", steps=2), workdir)
    return workdir


def test_the_encoder_concatenates_the_classifier_weight_layers(encoder_run):
    from stn_tf import runs

    _, model, _ = runs.restore(encoder_run)
    encode = colocalise.encoder_features(model)
    images = np.random.default_rng(5).uniform(size=(3, 28, 28, 1)).astype("f4")
    features = encode(images).numpy()
    classifier = model.get_layer("classifier")
    sizes = [
        int(np.prod(l.output.shape[1:]))
        for l in classifier.layers
        if "conv" in l.name or l.name == "logits"
    ]
    assert features.shape == (3, sum(sizes))
    # Raw activations, as in A.2: the last 10 entries are the logits themselves.
    logits = model(images)["logits"].numpy()
    np.testing.assert_allclose(features[:, -10:], logits, rtol=1e-5, atol=1e-6)


def test_the_encoder_must_be_a_plain_digit_classifier():
    st = models.build_model("st_cnn", (28, 28, 1), 10, width=4)
    with pytest.raises(ValueError, match="no transformer"):
        colocalise.encoder_features(st)
    with pytest.raises(ValueError, match=r"28x28x1 digits.*\(42, 42, 1\)"):
        colocalise.encoder_features(models.build_model("cnn", (42, 42, 1), 10, width=4))


def test_colocalise_writes_boxes_results_and_the_figure(encoder_run, tmp_path):
    config = colocalise.CoLocConfig(
        dataset="mnist_coloc_tc",
        digit=3,
        encoder=str(encoder_run),
        num_images=10,
        steps=3,
        batch_size=4,
        mnist_source="embedded",
    )
    results = colocalise.colocalise(config, tmp_path, progress=False)
    assert results["num_images"] == 10 and 0.0 <= results["localised"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["digit"] == 3 and len(saved["indices"]) == 10
    assert (tmp_path / "colocalisation.png").exists()
    with pytest.raises(ValueError, match="has .* digits of class 3"):
        colocalise.colocalise(
            colocalise.CoLocConfig(**{**config.__dict__, "num_images": 5000}), tmp_path
        )


def test_colocalise_config_checks():
    with pytest.raises(ValueError, match="dataset must be one of"):
        colocalise.CoLocConfig(dataset="mnist_tc")
    with pytest.raises(ValueError, match="digit must be 0..9"):
        colocalise.CoLocConfig(digit=12)
    with pytest.raises(ValueError, match="num_images"):
        colocalise.CoLocConfig(num_images=1)
    with pytest.raises(
        ValueError, match=r"optimizer must be one of \('adam', 'sgd', 'rmsprop'\)"
    ):
        colocalise.CoLocConfig(optimizer="adagrad")
    with pytest.raises(ValueError, match=r"scale must be in \(0, 1\). Received: 1.5"):
        colocalise.CoLocConfig(scale=1.5)
    with pytest.raises(ValueError, match="min_scale must be in"):
        colocalise.CoLocConfig(learn_scale=True, min_scale=0.5)
    with pytest.raises(ValueError, match="gradient_blur must be >= 0"):
        colocalise.CoLocConfig(gradient_blur=-1.0)


def test_gaussian_blur_of_an_impulse_is_the_gaussian():
    image = np.zeros((1, 31, 31, 1), np.float32)
    image[0, 15, 15, 0] = 1.0
    blurred = colocalise.gaussian_blur(tf.constant(image), 2.0).numpy()[0, :, :, 0]
    x = np.arange(-15, 16)
    g = np.exp(-(x**2) / 8.0)
    g /= g[np.abs(x) <= 6].sum()  # taps out to 3 sigma
    g[np.abs(x) > 6] = 0
    np.testing.assert_allclose(blurred, np.outer(g, g), atol=1e-6)


def _crop_and_bias_gradient(st, images, source, w):
    """The localiser's window on ``images``, its crop of ``source`` (by hand, with
    the plain sampler), and d sum(crop * w) / d the head's bias."""
    with tf.GradientTape() as tape:
        grid = transforms.attention_grid(st.window(images), (28, 28))
        crops = sampler.sample(source, grid)
        loss = tf.reduce_sum(crops * w)
    return crops.numpy(), tape.gradient(loss, st.head.bias).numpy()


def test_the_localiser_keeps_its_window_inside_and_adds_a_blurred_gradient():
    config = colocalise.CoLocConfig(gradient_blur=3.0)
    st = colocalise.Localiser(config)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(2, 84, 84, 1)), tf.float32)
    crops, window = st(images)
    st.head.bias.assign([0.0, 40.0, -40.0])  # tanh saturates: the window at a corner
    window = st.window(images).numpy()
    np.testing.assert_allclose(window[:, 0], 28 / 84, rtol=1e-6)  # fixed scale
    np.testing.assert_allclose(window[:, 1:], [[1 - 28 / 84, -(1 - 28 / 84)]] * 2)
    boxes = colocalise.attention_boxes(window, (84, 84))  # edges half a sample out
    assert boxes.min() > -0.02 and boxes.max() < 84.02
    # Forward: the sharp crop.
    st.head.bias.assign([0.0, 0.3, -0.2])
    w = tf.constant(rng.normal(size=(2, 28, 28, 1)), tf.float32)
    want_crops, _ = _crop_and_bias_gradient(st, images, images, w)
    blurred = colocalise.gaussian_blur(images, 3.0)
    _, want_grad = _crop_and_bias_gradient(st, images, blurred, w)
    _, sharp_grad = _crop_and_bias_gradient(st, images, images, w)
    with tf.GradientTape() as tape:
        crops, _ = st(images)
        loss = tf.reduce_sum(crops * w)
    got = tape.gradient(loss, st.head.bias).numpy()
    np.testing.assert_allclose(crops.numpy(), want_crops, atol=1e-5)
    # The gradient: the sharp crop's plus the blurred crop's.
    np.testing.assert_allclose(got, sharp_grad + want_grad, rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, sharp_grad, rtol=1e-2)  # the blur made a difference
    assert got[0] == 0.0  # the scale is fixed: no gradient reaches its output


def test_a_learned_scale_starts_at_scale_and_stays_above_min_scale():
    config = colocalise.CoLocConfig(learn_scale=True, scale=0.4, min_scale=0.25)
    st = colocalise.Localiser(config)
    images = tf.zeros((1, 84, 84, 1))
    st(images)
    st.head.kernel.assign(tf.zeros_like(st.head.kernel))
    np.testing.assert_allclose(st.window(images).numpy()[0, 0], 0.4, rtol=1e-5)
    st.head.bias.assign([-50.0, 0.0, 0.0])
    np.testing.assert_allclose(st.window(images).numpy()[0, 0], 0.25, rtol=1e-5)


def test_a_sequence_model_exports_one_prediction_per_digit(tmp_path):
    from export import saved_model
    from stn_tf import runs

    config = tiny_config(
        dataset="mnist_sequence", model="rnn_spn", downsample=4.0, steps=1, batch_size=2
    )
    trainer.train_and_evaluate(config, tmp_path / "run")
    path = saved_model.export_saved_model(
        tmp_path / "run", tmp_path / "serving" / "rnn"
    )
    _, model, _ = runs.restore(tmp_path / "run")
    images = saved_model.test_examples(config, 3)["image"]
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = served(images=tf.constant(images))
    assert out["classes"].shape == (3, 3) and out["theta_0"].shape == (3, 3, 6)
    want = tf.nn.softmax(model(images)["logits"]).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), want, atol=1e-5)
