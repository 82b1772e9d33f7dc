"""Tests of stn_tf.colocalise: geometry, the encoder, the localiser, the command."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from stn_tf import colocalise, models, sampler, transforms
from stn_tf import train as trainer


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
    with pytest.raises(ValueError, match="digit must be >= 0 and <= 9"):
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


def _crop_and_bias_gradient(st, images, source, w):
    """The localiser's window on ``images``, its crop of ``source`` (by hand, with
    the plain sampler), and d sum(crop * w) / d the head's bias."""
    with tf.GradientTape() as tape:
        grid = transforms.attention_grid(st.window(images), (28, 28))
        crops = sampler.sample(source, grid)
        loss = tf.reduce_sum(crops * w)
    return crops.numpy(), tape.gradient(loss, st.head.bias).numpy()


def test_gaussian_blur_of_an_impulse_is_the_gaussian():
    image = np.zeros((1, 31, 31, 1), np.float32)
    image[0, 15, 15, 0] = 1.0
    blurred = colocalise.gaussian_blur(tf.constant(image), 2.0).numpy()[0, :, :, 0]
    x = np.arange(-15, 16)
    g = np.exp(-(x**2) / 8.0)
    g /= g[np.abs(x) <= 6].sum()  # taps out to 3 sigma
    g[np.abs(x) > 6] = 0
    np.testing.assert_allclose(blurred, np.outer(g, g), atol=1e-6)


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


@pytest.mark.parametrize("stop_target", [True, False])
def test_the_pairs_target_moves_only_without_stop_target(stop_target):
    # One SGD step (rate 1, no momentum) moves the localiser by minus the gradient
    # of A.2's hinge, written out here on raw pixels as the encoder: with the
    # second crop T(I_m) held constant (ours), or moving too (the paper's loss).
    import keras

    config = colocalise.CoLocConfig(
        optimizer="sgd",
        learning_rate=1.0,
        momentum=0.0,
        gradient_blur=0.0,
        margin=50.0,
        stop_target=stop_target,
    )
    rng = np.random.default_rng(3)
    images = tf.constant(rng.uniform(size=(4, 84, 84, 1)).astype("f4"))
    first, second = np.array([0, 1, 2]), np.array([3, 2, 0])
    u = rng.uniform(size=(3, 2)).astype("f4")
    encode = lambda x: tf.reshape(x, [tf.shape(x)[0], -1])  # noqa: E731
    keras.utils.set_random_seed(7)
    st = colocalise.Localiser(config)
    st(images[:1])
    before = [v.numpy() for v in st.trainable_variables]

    def hinge(moving_target: bool):
        a, b = tf.gather(images, first), tf.gather(images, second)
        crop_a = st(a)[0]
        crop_b = st(b)[0] if moving_target else tf.constant(st(b)[0].numpy())
        window = tf.concat(
            [tf.fill([3, 1], config.scale), (2 * u - 1) * (1 - config.scale)], 1
        )
        rand = transforms.warp(a, "attention", window, (28, 28))
        near = tf.reduce_sum(tf.square(encode(crop_a) - encode(crop_b)), 1)
        far = tf.reduce_sum(tf.square(encode(crop_a) - encode(rand)), 1)
        return tf.reduce_mean(tf.nn.relu(near - far + config.margin))

    grads = {}
    for moving in (True, False):
        with tf.GradientTape() as tape:
            loss = hinge(moving)
        grads[moving] = tape.gradient(loss, st.trainable_variables)
    assert any(
        not np.allclose(g, h, atol=1e-6) for g, h in zip(grads[True], grads[False])
    )
    colocalise._triplet_step(config, st, images, encode)(first, second, u)
    for v, v0, g in zip(st.trainable_variables, before, grads[not stop_target]):
        np.testing.assert_allclose(v.numpy(), v0 - g.numpy(), rtol=1e-3, atol=1e-4)
