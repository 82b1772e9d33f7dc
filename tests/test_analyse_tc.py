"""tools/analyse_tc.py: the clutter crops it cuts and the shares it counts, by hand."""

import numpy as np

from tools import analyse_tc


def test_crops_cut_each_patch_of_its_digit_at_its_corner():
    digits = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28)
    index = np.array([[1, 0]])  # one example, two crops
    corner = np.array([[[3, 5], [22, 0]]])  # (x, y)
    got = analyse_tc.crops(digits, index, corner)
    assert got.shape == (1, 2, 6, 6)
    np.testing.assert_array_equal(got[0, 0], digits[1, 5:11, 3:9])
    np.testing.assert_array_equal(got[0, 1], digits[0, 0:6, 22:28])


def test_shares_count_blank_and_nearly_blank_crops():
    blank = np.zeros((6, 6))
    faint = np.zeros((6, 6))
    faint[0, :2] = 1.0  # 2 inked pixels: nearly blank, not blank
    faint[5, 5] = 0.4  # under half intensity: not counted as ink
    inked = np.zeros((6, 6))
    inked[2, :4] = 0.9  # 4 inked pixels
    found = analyse_tc.shares(np.stack([blank, faint, inked, inked]))
    assert found == {"blank": 0.25, "nearly_blank": 0.5, "mean_ink_pixels": 2.5}
