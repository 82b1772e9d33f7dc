"""Tests of tools.analyse_p: its homographies and convexity, by hand, and its
measures on digits whose answer is known."""

import numpy as np

from tools import analyse_p

SQUARE = np.array([[[0, 0], [27, 0], [27, 27], [0, 27]]], np.float64)


def test_homography_of_a_shift_and_of_a_scaling():
    shift = analyse_p.homographies(SQUARE, SQUARE + [2.0, -1.0])
    np.testing.assert_allclose(shift[0], [[1, 0, 2], [0, 1, -1], [0, 0, 1]], atol=1e-9)
    half = analyse_p.homographies(SQUARE, SQUARE / 2)
    np.testing.assert_allclose(half[0], np.diag([0.5, 0.5, 1]), atol=1e-9)


def test_a_crossed_corner_is_folded_and_a_square_is_not():
    bow_tie = np.array([[[0, 0], [27, 0], [0, 27], [27, 27]]], np.float64)
    dent = np.array([[[0, 0], [27, 0], [10, 10], [0, 27]]], np.float64)
    assert analyse_p.convex(SQUARE).tolist() == [True]
    assert analyse_p.convex(bow_tie).tolist() == [False]
    assert analyse_p.convex(dent).tolist() == [False]


def test_ink_pushed_off_the_canvas_is_counted_as_cropped():
    digit = np.zeros((1, 28, 28))
    digit[0, 10:18, 4:8] = 1.0  # a bar in columns 4..7
    still = analyse_p.measure(digit, SQUARE, np.ones(1), np.zeros((1, 4, 2)))
    assert still["folded"] == 0 and still["lost_mean"] == 0
    # Moving every corner 6 px left pushes columns 4 and 5 (of 4..7) off the canvas.
    left = analyse_p.measure(digit, SQUARE, np.ones(1), np.full((1, 4, 2), [-6.0, 0]))
    np.testing.assert_allclose(left["lost_mean"], 0.5)
    assert left["cropped_25"] == 1.0 and left["folded"] == 0


def test_a_map_that_flattens_the_digit_counts_as_squashed():
    digit = np.zeros((1, 28, 28))
    digit[0, 8:20, 8:20] = 1.0
    # Bottom corners lifted: rows compressed to 0.3 of their height.
    flat = SQUARE.copy()
    flat[0, 2:, 1] = 0.3 * 27
    r = analyse_p.measure(digit, SQUARE, np.ones(1), flat - SQUARE)
    assert r["squashed"] == r["flattened"] == r["unreadable"] == 1.0
    assert r["folded"] == 0
    mild = analyse_p.measure(digit, SQUARE, np.full(1, 0.75), np.zeros((1, 4, 2)))
    assert mild["flattened"] == mild["squashed"] == 0  # the scaling alone: 0.75
