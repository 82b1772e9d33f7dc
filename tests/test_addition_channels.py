"""Tests of tools/addition_channels.py: each transformer's share of each channel."""

import numpy as np
import pytest
from conftest import tiny_config

from stn_tf import train
from tools import addition_channels


def test_shares_against_hand_made_outputs():
    out = np.zeros([2, 2, 4, 4, 2], np.float32)  # [B, K, H, W, C]
    out[0, 0, :2, :, 0] = 1.0  # example 0, ST1: 8 px of channel 1, 0 of channel 2
    out[0, 1, 0, 0, 0], out[0, 1, 1, :3, 1] = 1.0, 1.0  # ST2: 1 and 3 px
    out[1, 0, 0, 0, :] = 0.5  # example 1, ST1: half and half
    out[1, 1, 2:, 2:, 1] = 2.0  # ST2: channel 2 only
    np.testing.assert_allclose(
        addition_channels.channel_shares(out),
        [[(1.0 + 0.5) / 2, (0.0 + 0.5) / 2], [(0.25 + 0.0) / 2, (0.75 + 1.0) / 2]],
    )
    # One transformer ([B, H, W, C]); an empty output counts as no example.
    one = np.zeros([3, 4, 4, 2], np.float32)
    one[0, 0, 0] = [3.0, 1.0]
    one[1, 1, 1] = [1.0, 1.0]
    np.testing.assert_allclose(addition_channels.channel_shares(one), [[0.625, 0.375]])


def test_a_trained_2xst_fcn_is_measured_on_its_test_set(tmp_path):
    config = tiny_config(
        dataset="mnist_addition", model="st_fcn_2x", steps=2, param_budget=400_000
    )
    train.train_and_evaluate(config, tmp_path)
    _, shares, seen = addition_channels.measure(str(tmp_path), 40)
    assert shares.shape == (2, 2) and seen == 40
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-6)
    # Near the identity after 2 steps: each output holds both digits.
    assert (shares > 0.2).all(), shares


def test_runs_that_are_not_addition_transformers_are_refused(tmp_path):
    train.train_and_evaluate(tiny_config(dataset="mnist_addition", steps=1), tmp_path)
    with pytest.raises(ValueError, match=r"trained 'fcn' on 'mnist_addition'"):
        addition_channels.measure(str(tmp_path), 10)
