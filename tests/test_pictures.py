"""Tests of stn_tf.pictures: the transformer sheets."""

import numpy as np

from stn_tf import pictures


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
