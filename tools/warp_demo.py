"""Warps real MNIST digits through every 2D transform and writes one PNG.

Each row is a digit; for each transform the picture shows the input with the
sampling grid drawn on it (what the transformer reads) and the sampled output.

    python -m tools.warp_demo --out=out/warp_demo.png
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from PIL import Image, ImageDraw

from stn_tf import sampler, transforms
from stn_tf.pictures import draw_grid
from stn_tf.pipelines import mnist

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "out/warp_demo.png", "Where to write the PNG.")
flags.DEFINE_integer(
    "num_digits", 5, "Digits (rows) to show.", lower_bound=1, upper_bound=50
)
flags.DEFINE_integer("seed", 0, "Seed of the digit choice and the random transforms.")
flags.DEFINE_string(
    "mnist_dir",
    None,
    "Folder with train-images-idx3-ubyte(.gz) and labels; "
    "default: the embedded 1,000-digit sample.",
)
flags.DEFINE_integer("zoom", 4, "Pixels per input pixel in the picture.", lower_bound=1)

CANVAS = 42
NAMES = ("affine", "attention", "projective", "tps")


def load_digits(num, seed, mnist_dir=None):
    """``num`` digits centred on a 42x42 canvas, ``[num, 42, 42, 1]`` in [0, 1]."""
    source = "idx" if mnist_dir else "embedded"
    digits = mnist.load_mnist("train", mnist_dir=mnist_dir, source=source)
    images, labels = digits.images, digits.labels
    logging.info("digits from the %s", digits.origin)
    index = np.random.default_rng(seed).choice(len(images), num, replace=False)
    h, w = images.shape[1:]
    canvas = np.zeros((num, CANVAS, CANVAS, 1), np.float32)
    top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
    canvas[:, top : top + h, left : left + w, 0] = images[index] / 255.0
    return canvas, labels[index]


def random_params(name, num, rng):
    """Moderate random parameters of each transform, ``[num, P]``."""
    if name == "affine":
        a = rng.uniform(-0.7, 0.7, num)
        s = rng.uniform(0.6, 0.9, num)
        t = rng.uniform(-0.1, 0.1, (num, 2))
        return np.stack(
            [
                s * np.cos(a),
                -s * np.sin(a),
                t[:, 0],
                s * np.sin(a),
                s * np.cos(a),
                t[:, 1],
            ],
            1,
        )
    if name == "attention":
        return np.c_[np.full(num, 0.5), rng.uniform(-0.2, 0.2, (num, 2))]
    if name == "projective":
        identity = np.array([1, 0, 0, 0, 1, 0, 0, 0], float)
        p = (
            identity
            + np.c_[rng.normal(0, 0.05, (num, 6)), rng.uniform(-0.4, 0.4, (num, 2))]
        )
        return p * np.r_[np.full(6, 0.8), np.ones(2)]
    return rng.normal(0, 0.12, (num, 32))  # tps: 16 control points


def main(argv):
    del argv
    digits, labels = load_digits(FLAGS.num_digits, FLAGS.seed, FLAGS.mnist_dir)
    rng = np.random.default_rng(FLAGS.seed)
    zoom, size = FLAGS.zoom, CANVAS * FLAGS.zoom
    pad, header = 6, 22
    columns = 1 + 2 * len(NAMES)
    sheet = Image.new(
        "RGB",
        (columns * (size + pad) + pad, header + len(digits) * (size + pad)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), "input", fill="black")
    for j, name in enumerate(NAMES):
        params = random_params(name, len(digits), rng)
        coords = transforms.get_transform(name).grid(
            tf.constant(params, tf.float32), (CANVAS, CANVAS)
        )
        out = sampler.bilinear_sample(digits, coords, jit_compile=True).numpy()
        x0 = (1 + 2 * j) * (size + pad) + pad
        draw.text((x0, 5), f"{name}: grid on input  ->  output", fill="black")
        for i in range(len(digits)):
            y0 = header + i * (size + pad)
            sheet.paste(draw_grid(digits[i], coords.numpy()[i], zoom), (x0, y0))
            enlarged = np.repeat(
                np.repeat(np.clip(out[i, ..., 0], 0, 1), zoom, 0), zoom, 1
            )
            sheet.paste(
                Image.fromarray((enlarged * 255).astype(np.uint8)),
                (x0 + size + pad, y0),
            )
    for i in range(len(digits)):
        enlarged = np.repeat(np.repeat(digits[i, ..., 0], zoom, 0), zoom, 1)
        sheet.paste(
            Image.fromarray((enlarged * 255).astype(np.uint8)),
            (pad, header + i * (size + pad)),
        )
    out_path = Path(FLAGS.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    logging.info(
        "wrote %s (%d digits: %s)", out_path, len(digits), " ".join(map(str, labels))
    )
    print(f"wrote {out_path}")


if __name__ == "__main__":
    app.run(main)
