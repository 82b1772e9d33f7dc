"""Tests of stn_tf.training's parts: mistakes, θ statistics, the optimizer's
schedule, the localisation nets' hold and multiplier, what weight decay acts on."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from stn_tf import layers, runs
from stn_tf.training import evaluate, optim, summaries


def test_errors_count_digits_and_whole_sequences():
    logits = tf.one_hot([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 10)
    labels = tf.constant([[1, 2, 3], [4, 0, 6], [0, 0, 9]])
    wrong, wrong_sequences = evaluate.mistakes(logits, labels)
    assert (float(wrong), float(wrong_sequences)) == (3.0, 2.0)
    single = evaluate.mistakes(tf.one_hot([1, 2], 10), tf.constant([1, 3]))
    assert tuple(float(v) for v in single) == (1.0, 1.0)


def test_non_finite_logits_are_wrong_whatever_their_argmax():
    # Row 0: NaN everywhere (argmax would give class 0, the label); row 1: +inf on
    # the right class; row 2: finite and right; row 3: finite and wrong.
    logits = np.zeros([4, 10], np.float32)
    logits[0] = np.nan
    logits[1, 2] = np.inf
    logits[2, 5] = 1.0
    logits[3, 7] = 1.0
    labels = tf.constant([0, 2, 5, 6])
    wrong, wrong_examples = evaluate.mistakes(tf.constant(logits), labels)
    assert (float(wrong), float(wrong_examples)) == (3.0, 3.0)


def test_theta_stats_of_known_windows_in_2d_and_3d():
    config = tiny_config(model="st_fcn", transform="affine")
    half = summaries.theta_stats(config, np.array([[0.5, 0, 0.25, 0, 0.5, 0]]), (9, 9))
    assert half["theta_scale"] == pytest.approx(0.5)
    assert half["theta_shift"] == pytest.approx(0.25)
    assert half["grid_outside"] == 0
    config = tiny_config(model="st_cnn_3d", dataset="mnist_3d")
    identity = np.array([[[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]] * 2])  # [B, K, 12]
    stats = summaries.theta_stats(config, identity, (5, 5, 5))
    assert stats == {
        "theta_scale": pytest.approx(1.0),
        "theta_shift": pytest.approx(0.0, abs=1e-7),
        "grid_outside": 0.0,
    }


def _tiny_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


def test_the_learning_rate_is_divided_by_ten_after_each_boundary():
    # The rate the optimizer uses at each of its iterations (0-based): boundaries
    # 3 and 6 keep iterations 0..3 at the rate, 4..6 at a tenth, then a hundredth.
    config = tiny_config(learning_rate=0.1, lr_boundaries=(3, 6), steps=9)
    optimizer, _ = optim.make_optimizer(config, _tiny_model())
    rates = []
    for step in range(9):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    want = [0.1] * 4 + [0.01] * 3 + [0.001] * 2
    np.testing.assert_allclose(rates, want, rtol=1e-6)
    # Unset boundaries are a third and two thirds of the run (A.4's 50k and 100k
    # of 150k); a one-step run has none and keeps its rate.
    assert tiny_config(steps=150_000).lr_boundaries == (50_000, 100_000)
    assert tiny_config(steps=3).lr_boundaries == (1, 2)
    one = tiny_config(learning_rate=0.1, steps=1)
    assert one.lr_boundaries == ()
    schedule = optim.learning_rate_schedule(one)
    assert [float(schedule(s)) for s in range(3)] == pytest.approx([0.1] * 3)


def test_the_localisation_hold_ends_at_its_step_and_the_multiplier_applies():
    # Held for loc_hold_steps=3 steps: iterations 0, 1, 2 give the localisation
    # nets no gradient, iteration 3 gives them loc_lr_multiplier times theirs.
    config = tiny_config(model="st_fcn", loc_hold_steps=3, loc_lr_multiplier=0.5)
    grads = [tf.fill([2], 4.0), tf.fill([3], 4.0)]
    loc = [True, False]
    for step, scale in [(0, 0.0), (2, 0.0), (3, 0.5), (4, 0.5)]:
        got = optim.scale_localization(config, grads, loc, tf.constant(step))
        np.testing.assert_array_equal(got[0], [4.0 * scale] * 2, err_msg=str(step))
        np.testing.assert_array_equal(got[1], [4.0] * 3)  # the rest untouched
    plain = tiny_config(model="st_fcn")
    assert optim.scale_localization(plain, grads, loc, tf.constant(0)) is grads


def test_weight_decay_acts_on_kernels_only():
    # Kernels (and a GRU's recurrent kernel) decay; biases, batch norm's scale
    # and shift, a TPS transformer's learnt control points and the RNN-SPN's
    # learnt step offsets do not. The oracle is each variable's own name.
    locnet = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4)])
    inputs = keras.Input((12, 12, 1))
    x = layers.SpatialTransformer(
        locnet, transform="tps", learn_control_points=True, jit_compile=False
    )(inputs)
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    sequences = runs.build_model(
        tiny_config(
            dataset="mnist_sequence",
            model="rnn_spn",
            model_version=1,  # its steps' offsets are learnt
        )
    )
    decaying = tiny_config(weight_decay=1e-3)
    for net in (model, sequences):
        names = {v.path.rsplit("/", 1)[1] for v in net.trainable_variables}
        assert {"bias", "kernel"} <= names
        got = [v.path for v in optim.decayed_variables(decaying, net)]
        want = [
            v.path
            for v in net.trainable_variables
            if v.path.rsplit("/", 1)[1] in ("kernel", "recurrent_kernel")
        ]
        assert got == want
    names = {v.path.rsplit("/", 1)[1] for v in model.trainable_variables}
    assert {"gamma", "beta", "control_points"} <= names
    assert "step_offsets" in {v.path.rsplit("/", 1)[1] for v in sequences.weights}
    assert optim.decayed_variables(tiny_config(), model) == []
