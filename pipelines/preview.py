"""Writes a picture of a dataset's examples, with their ground truth drawn on them.

    python -m stn_tf.pipelines.preview --dataset=mnist_sequence --out=out/mnist_sequence.png

Green: the digits' ink boxes; blue: the 28x28 frame a digit was pasted in
(co-localisation's ground truth); red: clutter crops; yellow: where the digit's
corners went (projective). Addition shows channel 0 in magenta and channel 1 in
green; 3D shows two projections of the volume (summed along depth and along x).
Each tile's caption is its label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from stn_tf import cli
from stn_tf.pipelines import datasets
from stn_tf.pipelines import flags as data_flags

__all__ = ["render"]

flags.DEFINE_string("out", None, "PNG to write (default out/<dataset>.png).")
flags.DEFINE_enum("split", "test", ["train", "test"], "Split to show.")
flags.DEFINE_integer("num", 16, "Examples to show.", lower_bound=1, upper_bound=256)
flags.DEFINE_integer("columns", 4, "Tiles per row.", lower_bound=1)
flags.DEFINE_integer("tile", 168, "Tile size in pixels.", lower_bound=28)
flags.DEFINE_integer(
    "step",
    0,
    "Training batch to show (split=train): a later step is a later epoch.",
    lower_bound=0,
)

FLAGS = flags.FLAGS
_COLOURS = {
    "boxes": (60, 220, 60),
    "frame": (70, 130, 255),
    "frames": (70, 130, 255),
    "clutter_boxes": (230, 50, 50),
}


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """One example as ``uint8 [H, W, 3]`` (3D: two projections side by side)."""
    if image.ndim == 4:  # [D, H, W, 1]
        front = image[..., 0].sum(axis=0)  # sum over depth: [H, W]
        side = image[..., 0].sum(axis=2).T  # sum over x: [D, H] -> [H, D]
        gap = np.ones((front.shape[0], 2))
        gray = np.concatenate(
            [front / max(front.max(), 1e-6), gap, side / max(side.max(), 1e-6)], 1
        )
        return np.repeat((gray * 255).astype(np.uint8)[..., None], 3, -1)
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 2:
        a, b = image[..., 0], image[..., 1]
        return (np.stack([a, b, a], -1) * 255).astype(np.uint8)
    return np.repeat((image[..., 0] * 255).astype(np.uint8)[..., None], 3, -1)


def _caption(label: np.ndarray, truth: dict, i: int) -> str:
    if "digits" in truth:  # addition
        a, b = truth["digits"][i]
        return f"{a}+{b}={int(label)}"
    return " ".join(str(int(v)) for v in np.ravel(label))


def render(
    batch: dict, *, num: int = 16, columns: int = 4, tile: int = 168, title: str = ""
) -> Image.Image:
    """A grid of the first ``num`` examples of a batch (numpy or tensors) with truth drawn.

    Args:
        batch: ``{"image", "label", "truth"}`` as a :class:`~stn_tf.pipelines.datasets.Pipeline` yields.
        num: examples to show.
        columns: tiles per row.
        tile: tile size in pixels (each example scaled to fit).
        title: text above the grid.
    """
    images = np.asarray(batch["image"])[:num]
    labels = np.asarray(batch["label"])[:num]
    truth = {k: np.asarray(v) for k, v in batch["truth"].items()}
    rows = -(-len(images) // columns)
    pad, caption, header = 6, 16, 22 if title else 0
    rgbs = [_to_rgb(image) for image in images]
    zoom = tile / max(max(rgb.shape[:2]) for rgb in rgbs)  # one scale for all tiles
    row_height = round(max(rgb.shape[0] for rgb in rgbs) * zoom) + caption + pad
    sheet = Image.new(
        "RGB",
        (columns * (tile + pad) + pad, header + rows * row_height + pad),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 5), title, fill="black")
    for i, (image, rgb) in enumerate(zip(images, rgbs)):
        h, w = rgb.shape[:2]
        picture = Image.fromarray(rgb).resize(
            (round(w * zoom), round(h * zoom)), Image.NEAREST
        )
        pen = ImageDraw.Draw(picture)
        for key, colour in _COLOURS.items():
            if key in truth and image.ndim == 3:
                for box in truth[key][i].reshape(-1, 4):
                    pen.rectangle(
                        [float(v) * zoom for v in box], outline=colour, width=1
                    )
        if "corners" in truth:
            quad = [
                ((x + 0.5) * zoom, (y + 0.5) * zoom) for x, y in truth["corners"][i]
            ]
            pen.polygon(quad, outline=(250, 210, 40))
        x0 = pad + (i % columns) * (tile + pad)
        y0 = header + pad + (i // columns) * row_height
        sheet.paste(picture, (x0, y0))
        draw.text(
            (x0, y0 + picture.height + 2), _caption(labels[i], truth, i), fill="black"
        )
    return sheet


def main(argv):
    cli.prepare(argv)
    spec = datasets.get_dataset(FLAGS.dataset)
    digits = data_flags.load_digits(FLAGS.split)
    training = FLAGS.split == "train"
    pipeline = datasets.Pipeline(
        spec.name, digits, batch_size=FLAGS.num, training=training, seed=FLAGS.seed
    )
    batch = next(iter(pipeline.dataset(start_step=FLAGS.step if training else 0)))
    where = f"{FLAGS.split} split" + (
        f", step {FLAGS.step}, seed {FLAGS.seed}" if training else " (fixed)"
    )
    title = f"{spec.name}: {spec.description} - {where}; digits: {digits.origin}"
    picture = render(
        batch, num=FLAGS.num, columns=FLAGS.columns, tile=FLAGS.tile, title=title
    )
    out = Path(FLAGS.out or f"out/{spec.name}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
