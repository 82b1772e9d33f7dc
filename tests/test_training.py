"""Tests of stn_tf.training's parts: mistakes, θ statistics."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from stn_tf.training import evaluate, summaries


def test_errors_count_digits_and_whole_sequences():
    logits = tf.one_hot([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 10)
    labels = tf.constant([[1, 2, 3], [4, 0, 6], [0, 0, 9]])
    wrong, wrong_sequences = evaluate.mistakes(logits, labels)
    assert (float(wrong), float(wrong_sequences)) == (3.0, 2.0)
    single = evaluate.mistakes(tf.one_hot([1, 2], 10), tf.constant([1, 3]))
    assert tuple(float(v) for v in single) == (1.0, 1.0)


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
