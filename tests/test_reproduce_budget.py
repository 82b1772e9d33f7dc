"""tools/reproduce_budget.py: the budget curve's table and figure from runs' curves."""

import numpy as np
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from tools import reproduce_budget


def _results(errors):
    return {
        "curve": [
            {"step": 100 * (i + 1), "test_error": e} for i, e in enumerate(errors)
        ]
    }


def test_the_curve_is_examples_seen_against_percent_error():
    with flagsaver.flagsaver(batch_size=256):
        flags.FLAGS.mark_as_parsed()
        points = reproduce_budget.curve(_results([0.5, 0.1, 0.02]))
    assert points == [(25_600, 50.0), (51_200, 10.0), (76_800, 2.0)]


def test_the_table_lines_up_both_models_by_examples_seen():
    curves = {"cnn": [(192_000, 4.0), (384_000, 2.5)], "st_cnn": [(384_000, 1.25)]}
    lines = reproduce_budget.table(curves).splitlines()
    assert lines[0] == (
        "| examples seen | / first budget | CNN % (paper 0.8) | ST-CNN Aff % (paper 0.5) |"
    )
    assert lines[2] == "| 192,000 | 1.0x | 4.00 | – |"
    assert lines[3] == "| 384,000 | 2.0x | 2.50 | 1.25 |"


def test_the_figure_draws_each_model_and_the_papers_lines(tmp_path):
    curves = {
        "cnn": [(10_000, 50.0), (100_000, 8.0), (1_000_000, 2.0)],
        "st_cnn": [(10_000, 40.0), (100_000, 5.0), (1_000_000, 1.0)],
    }
    with flagsaver.flagsaver(steps=7_500, dataset="mnist_rts"):
        flags.FLAGS.mark_as_parsed()
        out = reproduce_budget.draw(curves, tmp_path / "budget.png")
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape[0] > 300 and image.shape[1] > 500
    # Both models' colours are drawn (matplotlib's tab:blue and tab:red).
    for rgb in ((31, 119, 180), (214, 39, 40)):
        assert np.sum(np.all(np.abs(image - rgb) < 10, axis=-1)) > 200, rgb
