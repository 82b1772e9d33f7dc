"""Co-localisation (STN paper, Appendix A.2): find the common object of a set of
images with a spatial transformer, with no labels and no boxes.

    python -m stn_tf.train --dataset=mnist --model=cnn --workdir=runs/encoder
    python -m stn_tf.colocalise --dataset=mnist_coloc_t --digit=8 --encoder=runs/encoder

The set is ``--num_images`` (100) images of one digit class, each placed uniformly
in 84x84 (``mnist_coloc_t``; ``mnist_coloc_tc`` adds sixteen 6x6 clutter crops).
An attention transformer (scale and translation; localisation net: eight 9x9
filters at stride 4, 2x2 max-pooling, two 8-unit layers) crops a 28x28 window of
each image, and SGD minimises the triplet hinge loss of A.2 over random pairs
``(n, m)``::

    max(0, |e(T(I_n)) - e(T(I_m))|^2 - |e(T(I_n)) - e(R(I_n))|^2 + margin)

``e`` is a digit classifier trained by ``python -m stn_tf.train`` (``--encoder``, a
run's workdir; its weights stay fixed): the outputs of its weight layers (two
hidden layers and the logits), concatenated and L2-normalised. The normalisation
is ours: with the raw features (squared distances in the thousands, against a
margin of 1) the loss is far lower for windows on empty background than on the
digits (measured for 100 "8"s with a CNN encoder: 0.63 on background, 331 on the
true frames); normalised, the true frames win (0.25 against 0.67). ``R(I_n)`` is a random window of
``I_n`` of the same size as the transformer's. The window ``θ = (s, tx, ty)`` is the
predicted box; a box is correct when its IoU with the digit's 28x28 frame exceeds
0.5. Writes ``results.json`` and ``colocalisation.png`` (boxes over the steps, like
Figure 4) into ``--workdir``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageDraw

from pipelines import datasets
from pipelines import flags as data_flags
from stn_tf import cli, pictures, runs, sampler, transforms
from stn_tf.layers import SpatialTransformer

__all__ = [
    "CoLocConfig",
    "attention_boxes",
    "box_iou",
    "colocalise",
    "encoder_features",
    "image_set",
]

CROP = 28  # the transformer's output: a digit's size


@dataclasses.dataclass(frozen=True)
class CoLocConfig:
    """One co-localisation: which images, which encoder, how long."""

    dataset: str = "mnist_coloc_t"
    digit: int = 0
    encoder: str = ""
    num_images: int = 100
    split: str = "test"
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    margin: float = 1.0
    seed: int = 0
    mnist_dir: str | None = None
    data_dir: str | None = None
    mnist_source: str = "auto"

    def __post_init__(self):
        if self.dataset not in runs.COLOCALISATION_DATASETS:
            raise ValueError(
                f"dataset must be one of {runs.COLOCALISATION_DATASETS}. "
                f"Received: {self.dataset!r}"
            )
        if not 0 <= self.digit <= 9:
            raise ValueError(f"digit must be 0..9. Received: {self.digit}")
        if self.optimizer not in runs.OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {runs.OPTIMIZERS}. Received: {self.optimizer!r}"
            )
        if self.num_images < 2:
            raise ValueError(f"num_images must be >= 2. Received: {self.num_images}")


# === Geometry ===


def attention_boxes(params, input_size, output_size=(CROP, CROP)) -> np.ndarray:
    """The input region an attention window samples, as boxes in pixel edges.

    Args:
        params: ``[N, 3]`` attention parameters ``(s, tx, ty)``.
        input_size: ``(H, W)`` of the input.
        output_size: ``(H', W')`` of the sampled output.

    Returns:
        ``[N, 4]`` boxes ``(x0, y0, x1, y1)``: the first and last sample centres
        (corner-aligned) widened by half a sample spacing, so the window that
        samples pixels ``c .. c + 27`` one to one is ``(c, ..., c + 28, ...)``.
    """
    params = np.asarray(params, np.float64)
    s, centre = params[:, :1], params[:, 1:3]  # [N, 1], [N, 2] as (x, y)
    extent = np.array([input_size[1] - 1, input_size[0] - 1], np.float64)
    samples = np.array([output_size[1] - 1, output_size[0] - 1], np.float64)
    lo = (centre - s + 1) / 2 * extent  # first sample centre, pixel-centre units
    hi = (centre + s + 1) / 2 * extent
    half = (hi - lo) / np.maximum(samples, 1) / 2
    return np.concatenate([lo - half + 0.5, hi + half + 0.5], axis=1)


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of boxes ``[N, 4]`` ``(x0, y0, x1, y1)``, pairwise by row."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    wh = np.clip(
        np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None
    )
    inter = wh[:, 0] * wh[:, 1]

    def area(x):
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# === Data and encoder ===


def image_set(config: CoLocConfig, digits) -> tuple[tf.Tensor, np.ndarray, np.ndarray]:
    """The set: ``config.num_images`` digits of class ``config.digit`` (a seeded
    choice from the split), distorted once. Returns images ``[N, 84, 84, 1]``, true
    boxes ``[N, 4]`` (the 28x28 frames) and the digits' indices in the split."""
    candidates = np.flatnonzero(digits.labels == config.digit)
    if len(candidates) < config.num_images:
        raise ValueError(
            f"{digits.origin} has {len(candidates)} digits of class {config.digit}; "
            f"num_images={config.num_images} asks for more"
        )
    chosen = np.sort(
        np.random.default_rng(config.seed).choice(
            candidates, config.num_images, replace=False
        )
    )
    pipeline = datasets.Pipeline(
        config.dataset,
        digits,
        batch_size=config.num_images,
        training=True,
        seed=config.seed,
    )
    index = tf.constant(chosen, tf.int32)
    batch = pipeline.distort({"index": index, "epoch": tf.zeros_like(index)})
    return batch["image"], batch["truth"]["frame"].numpy(), chosen


def encoder_features(model: keras.Model):
    """``e()``: a trained classifier's weight-layer outputs, flattened and concatenated.

    Args:
        model: a model of ``python -m stn_tf.train`` without a transformer, taking
            28x28x1 digits (``fcn`` or ``cnn``); its layers are used as they are.

    Returns:
        A function ``[N, 28, 28, 1] -> [N, F]``.
    """
    shape = tuple(model.input.shape[1:])
    if shape != (CROP, CROP, 1):
        raise ValueError(
            f"the encoder must take 28x28x1 digits (train it on --dataset=mnist). "
            f"Received: a model taking {shape}"
        )
    try:
        classifier = model.get_layer("classifier")
    except ValueError:
        raise ValueError(
            f"the encoder must be an fcn or cnn run (a 'classifier' without a "
            f"transformer). Received: model {model.name!r}"
        ) from None
    if any(layer.name == "st" for layer in model.layers):
        raise ValueError(
            f"the encoder must have no transformer. Received: {model.name!r}"
        )

    def encode(images):
        x, features = images, []
        for layer in classifier.layers:
            x = layer(x, training=False)
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                features.append(tf.reshape(x, [tf.shape(x)[0], -1]))
        return tf.math.l2_normalize(tf.concat(features, axis=1), axis=1)

    return encode


def _localiser(jit_compile: bool = True) -> SpatialTransformer:
    localization = keras.Sequential(
        [
            keras.layers.Conv2D(8, 9, strides=4, activation="relu", name="conv_0"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu", name="fc_0"),
            keras.layers.Dense(8, activation="relu", name="fc_1"),
        ],
        name="localization",
    )
    return SpatialTransformer(
        localization,
        "attention",
        output_size=(CROP, CROP),
        return_theta=True,
        jit_compile=jit_compile,
        name="st",
    )


# === The optimisation ===


def colocalise(config: CoLocConfig, workdir: str | Path, progress: bool = True) -> dict:
    """Runs one co-localisation; writes ``results.json`` and ``colocalisation.png``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    _, encoder_model, _ = runs.restore(config.encoder, jit_compile=False)
    encode = encoder_features(encoder_model)
    digits = runs.load_split(config, config.split)
    images, truth, chosen = image_set(config, digits)
    n = config.num_images
    st = _localiser()
    st.build(images.shape)
    kind = (
        keras.optimizers.RMSprop
        if config.optimizer == "rmsprop"
        else keras.optimizers.SGD
    )
    optimizer = kind(config.learning_rate, momentum=config.momentum)
    variables = st.trainable_variables
    optimizer.build(variables)
    size = images.shape[1:3]

    @tf.function
    def step(first, second, u):
        a, b = tf.gather(images, first), tf.gather(images, second)
        with tf.GradientTape() as tape:
            crops_a, theta_a = st(a, training=True)
            crops_b, _ = st(b, training=True)
            # R(I_n): a window of the transformer's own scale, at a uniform place
            # inside the image (a zoomed-out transformer gets zoomed-out windows).
            s = tf.stop_gradient(theta_a[:, :1])
            shift = (2 * u - 1) * tf.abs(1 - tf.abs(s))  # [B, 2]
            window = tf.concat([s, shift], axis=1)
            random_crops = sampler.sample(
                a, transforms.attention_grid(window, (CROP, CROP)), jit_compile=True
            )
            e_a, e_b, e_r = encode(crops_a), encode(crops_b), encode(random_crops)
            near = tf.reduce_sum(tf.square(e_a - e_b), axis=1)
            far = tf.reduce_sum(tf.square(e_a - e_r), axis=1)
            loss = tf.reduce_mean(tf.nn.relu(near - far + config.margin))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function
    def predict():
        return st(images, training=False)[1]

    rng = np.random.default_rng(config.seed)
    track = sorted(
        {0, 10, 25, 50, 100, 200, config.steps} & set(range(config.steps + 1))
    )
    history, losses = {0: predict().numpy()}, []
    began = time.perf_counter()
    for i in range(1, config.steps + 1):
        first = rng.integers(0, n, config.batch_size)
        second = (first + rng.integers(1, n, config.batch_size)) % n  # m != n
        u = rng.random((config.batch_size, 2)).astype(np.float32)
        losses.append(float(step(first, second, u)))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(
                f"non-finite loss at step {i}; lower --learning_rate"
            )
        if i in track:
            history[i] = predict().numpy()
        if progress and (i % 100 == 0 or i == config.steps):
            print(
                f"step {i}/{config.steps}  loss {np.mean(losses[-100:]):.4f}",
                flush=True,
            )
    elapsed = time.perf_counter() - began
    boxes = attention_boxes(history[config.steps], size)
    iou = box_iou(boxes, truth)
    results = {
        "dataset": config.dataset,
        "digit": config.digit,
        "num_images": n,
        "steps": config.steps,
        "localised": float(np.mean(iou > 0.5)),
        "mean_iou": float(np.mean(iou)),
        "localised_at_start": float(
            np.mean(box_iou(attention_boxes(history[0], size), truth) > 0.5)
        ),
        "final_loss": float(np.mean(losses[-20:])),
        "wall_time_s": elapsed,
        "encoder": str(config.encoder),
        "digits": digits.origin,
        "indices": chosen.tolist(),
    }
    (workdir / "config.json").write_text(
        json.dumps(dataclasses.asdict(config), indent=2) + "\n"
    )
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    figure(images.numpy(), truth, history, size).save(workdir / "colocalisation.png")
    return results


def figure(
    images, truth, history: dict, size, rows: int = 3, zoom: int = 2
) -> Image.Image:
    """Boxes over the optimisation (Figure 4): ``rows`` images, one column per
    tracked step; red the transformer's box, green the digit's frame."""
    pad, caption = 4, 14
    side = images.shape[1] * zoom
    steps = sorted(history)
    sheet = Image.new(
        "RGB",
        (pad + len(steps) * (side + pad), caption + pad + rows * (side + pad)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    for j, step in enumerate(steps):
        x = pad + j * (side + pad)
        draw.text((x, 2), f"step {step}", fill="black")
        boxes = attention_boxes(history[step][:rows], size)
        for i in range(min(rows, len(images))):
            y = caption + pad + i * (side + pad)
            tile = pictures.to_uint8(images[i], zoom)
            d = ImageDraw.Draw(tile)
            d.rectangle([float(v) * zoom for v in truth[i]], outline=(60, 220, 60))
            d.rectangle(
                [float(v) * zoom for v in boxes[i]],
                outline=pictures.COLOURS[0],
                width=2,
            )
            sheet.paste(tile, (x, y))
    return sheet


# === Command line ===

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's own flags (not defined on import: ``--steps`` and friends would
    clash with the training command's in a process that imports both)."""
    flags.DEFINE_integer(
        "digit",
        None,
        "The digit class of the image set (0-9).",
        lower_bound=0,
        upper_bound=9,
    )
    flags.DEFINE_string(
        "encoder",
        None,
        "Workdir of a python -m stn_tf.train run on --dataset=mnist (fcn or cnn).",
    )
    flags.DEFINE_integer("num_images", 100, "Images in the set.", lower_bound=2)
    flags.DEFINE_enum(
        "split", "test", ["train", "test"], "MNIST split the set's digits come from."
    )
    flags.DEFINE_integer("steps", 400, "SGD steps.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 32, "Pairs (n, m) per step.", lower_bound=1)
    flags.DEFINE_float("learning_rate", 0.01, "Learning rate.", lower_bound=0.0)
    flags.DEFINE_enum(
        "optimizer", "sgd", list(runs.OPTIMIZERS), "sgd (the paper) or rmsprop."
    )
    flags.DEFINE_float(
        "momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=0.999
    )
    flags.DEFINE_float("margin", 1.0, "Margin α of the hinge loss.", lower_bound=0.0)
    flags.DEFINE_string(
        "workdir", None, "Output folder (default runs/<dataset>_digit<K>_s<seed>)."
    )


def main(argv):
    cli.prepare(argv, required=("encoder",))
    if FLAGS.digit is None:
        raise app.UsageError("--digit is required (0-9)")
    try:
        config = CoLocConfig(
            dataset=FLAGS.dataset,
            digit=FLAGS.digit,
            encoder=FLAGS.encoder,
            num_images=FLAGS.num_images,
            split=FLAGS.split,
            steps=FLAGS.steps,
            batch_size=FLAGS.batch_size,
            learning_rate=FLAGS.learning_rate,
            optimizer=FLAGS.optimizer,
            momentum=FLAGS.momentum,
            margin=FLAGS.margin,
            seed=FLAGS.seed,
            mnist_dir=FLAGS.mnist_dir,
            data_dir=FLAGS.data_dir,
            mnist_source=FLAGS.mnist_source,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    workdir = (
        FLAGS.workdir or f"runs/{config.dataset}_digit{config.digit}_s{config.seed}"
    )
    try:
        results = colocalise(config, workdir)
    except (OSError, ValueError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}") from None
    print(
        f"digit {config.digit} on {config.dataset}: {100 * results['localised']:.0f}% of "
        f"{config.num_images} images localised (IoU > 0.5), mean IoU {results['mean_iou']:.2f}; "
        f"results in {workdir}"
    )


if __name__ == "__main__":
    define_flags()
    data_flags.FLAGS.set_default("dataset", "mnist_coloc_t")
    app.run(main)
