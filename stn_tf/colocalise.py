"""Co-localisation (STN paper, Appendix A.2): find the common object of a set of
images with a spatial transformer, with no labels and no boxes.

    python -m stn_tf.train --dataset=mnist --model=cnn --workdir=runs/encoder
    python -m stn_tf.colocalise --dataset=mnist_coloc_t --digit=8 --encoder=runs/encoder

The set is ``--num_images`` (100) images of one digit class, each placed uniformly
in 84x84 (``mnist_coloc_t``; ``mnist_coloc_tc`` adds sixteen 6x6 clutter crops).
An attention transformer (localisation net: eight 9x9 filters at stride 4, 2x2
max-pooling, two 8-unit layers, 3 outputs) crops a 28x28 window of each image, and
the optimiser minimises the triplet hinge loss of A.2 over random pairs
``(n, m)``::

    max(0, |e(T(I_n)) - e(T(I_m))|^2 - |e(T(I_n)) - e(R(I_n))|^2 + margin)

``e`` is a digit classifier trained by ``python -m stn_tf.train`` (``--encoder``, a
run's workdir; its weights stay fixed): the outputs of its weight layers (two
hidden layers and the logits), concatenated, as in the paper. ``R(I_n)`` is a
window of ``I_n`` at a uniform place inside the image. The window ``(s, tx, ty)`` is
the predicted box; a box is correct when its IoU with the digit's 28x28 frame
exceeds 0.5. Writes ``results.json`` and ``colocalisation.png`` (boxes over the
steps, like Figure 4) into ``--workdir``.

What A.2 leaves open, and what we chose (each measured on the digit-8 set of
``tools/reproduce_coloc.py``; plain SGD on the loss as written localised 0 %):

- **Only ``T(I_n)`` moves** (``--stop_target``). ``T(I_m)`` is the target of the
  pair, a constant for the step (stop-gradient). When both windows move, every
  pair pulls its two windows together, and they all end on the same empty
  background (0 %).
- **The window keeps the digit's size** (``--scale``, 28/84), and its centre stays
  inside the image (``t = (1 - s) tanh(.)``). With the scale learned too, the raw
  features reward shrinking onto the densest ink: it went down to 0.13 when
  allowed; bounded below at 0.25 (``--learn_scale --min_scale=0.25``) it localised
  97 % of the 8s. ``R(I_n)`` has the same size.
- **Adam** (3e-3): the raw features' distances are in the thousands, and no SGD
  rate from 1e-2 to 1e-6 found the digits.
- **The localiser's head starts random** (N(0, 0.1)), so the windows depend on the
  image from the first step, and **θ's gradient adds that of the same crop of a
  blurred copy of the image** (``--gradient_blur``, a Gaussian of 4 px; the crop's
  values stay sharp): bilinear sampling has no gradient on black background, the
  blur gives a window there a pull toward ink nearby. Both matter on TC, not on T.
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

from stn_tf import cli, fields, pictures, runs, transforms
from stn_tf.pipelines import datasets
from stn_tf.pipelines import flags as data_flags
from stn_tf.training.workdir import fingerprint

__all__ = [
    "CoLocConfig",
    "attention_boxes",
    "box_iou",
    "colocalise",
    "encoder_features",
    "image_set",
]

CROP = 28  # the transformer's output: a digit's size


OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclasses.dataclass(frozen=True)
class CoLocConfig:
    """One co-localisation: which images, which encoder, how long. Each field is
    declared with its help and accepted values; the command's flags are made from
    these (``fields.define_flags``)."""

    dataset: str = fields.field(
        "mnist_coloc_t",
        "Image set: T (a digit on 84x84) or TC (with clutter).",
        choices=runs.COLOCALISATION_DATASETS,
    )
    digit: int = fields.field(
        0, "The digit class of the image set (0-9).", lower_bound=0, upper_bound=9
    )
    encoder: str = fields.field(
        "", "Workdir of a python -m stn_tf.train run on --dataset=mnist (fcn or cnn)."
    )
    num_images: int = fields.field(100, "Images in the set.", lower_bound=2)
    split: str = fields.field(
        "test", "MNIST split the set's digits come from.", choices=("train", "test")
    )
    steps: int = fields.field(1500, "Optimisation steps.", lower_bound=1)
    batch_size: int = fields.field(32, "Pairs (n, m) per step.", lower_bound=1)
    learning_rate: float = fields.field(0.003, "Learning rate.", lower_bound=0.0)
    optimizer: str = fields.field(
        "adam",
        "adam (ours: SGD did not find the digits), sgd (the paper) or rmsprop.",
        choices=OPTIMIZERS,
    )
    momentum: float = fields.field(
        0.9, "SGD momentum.", lower_bound=0.0, upper_bound=0.999
    )
    margin: float = fields.field(1.0, "Margin α of the hinge loss.", lower_bound=0.0)
    scale: float = fields.field(
        CROP / 84,
        "Window scale (side / the image's), in (0, 1): fixed, or the start with "
        "--learn_scale.",
    )
    learn_scale: bool = fields.field(False, "Learn the scale too, >= --min_scale.")
    min_scale: float = fields.field(0.25, "Least scale with --learn_scale.")
    gradient_blur: float = fields.field(
        4.0,
        "Sigma (px) of the blurred copy whose crop adds to θ's gradient (0: none).",
        lower_bound=0.0,
    )
    stop_target: bool = fields.field(
        True,
        "Hold each pair's second crop T(I_m) as a constant target (ours); "
        "--nostop_target: both windows move, the loss as A.2 writes it.",
    )
    seed: int = fields.field(datasets.DEFAULT_SEED, datasets.SEED_HELP)
    mnist_dir: str | None = fields.same_as(datasets.Sources, "mnist_dir")
    data_dir: str | None = fields.same_as(datasets.Sources, "data_dir")
    mnist_source: str = fields.same_as(datasets.Sources, "mnist_source")

    def __post_init__(self):
        fields.check(self)
        if not 0 < self.scale < 1:
            raise ValueError(f"scale must be in (0, 1). Received: {self.scale}")
        if self.learn_scale and not 0 < self.min_scale < self.scale:
            raise ValueError(
                "with learn_scale, min_scale must be in (0, scale). "
                f"Received: min_scale={self.min_scale}, scale={self.scale}"
            )


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
    """``e()``: a trained classifier's weight-layer outputs, flattened and concatenated
    (A.2: "concatenating the three layers of activations").

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
        return tf.concat(features, axis=1)

    return encode


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """``images`` ``[B, H, W, 1]`` blurred by a Gaussian of ``sigma`` pixels (zeros
    outside, as the sampler reads), separably."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).astype(np.float32)
    rows = tf.nn.conv2d(images, taps.reshape(-1, 1, 1, 1), 1, "SAME")
    return tf.nn.conv2d(rows, taps.reshape(1, -1, 1, 1), 1, "SAME")


class Localiser(keras.Model):
    """The attention transformer of A.2: image -> 28x28 crop and window ``(s, tx, ty)``.

    The head's three outputs ``(a, b, c)`` give the window: ``s`` is ``scale``, or
    ``min_scale + (1 - min_scale) sigmoid(a)`` (starting at ``scale``) with
    ``learn_scale``; ``(tx, ty) = (1 - s) tanh(b, c)``, so the window stays inside
    the image. With ``gradient_blur`` the crop's values are the image's, and its
    gradient w.r.t. the window adds that of the same crop of the blurred image.
    """

    def __init__(self, config: CoLocConfig, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.min_scale = config.scale, config.min_scale
        self.learn_scale, self.blur = config.learn_scale, config.gradient_blur
        self.net = keras.Sequential(
            [
                keras.layers.Conv2D(8, 9, strides=4, activation="relu", name="conv_0"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(8, activation="relu", name="fc_0"),
                keras.layers.Dense(8, activation="relu", name="fc_1"),
            ],
            name="localization",
        )
        logit = 0.0  # the scale output's start: s = scale
        if self.learn_scale:
            start = (self.scale - self.min_scale) / (1 - self.min_scale)
            logit = float(np.log(start / (1 - start)))
        self.head = keras.layers.Dense(
            3,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.1),
            bias_initializer=keras.initializers.Constant([logit, 0.0, 0.0]),
            name="head",
        )

    def window(self, images, training=False):
        raw = self.head(self.net(images, training=training))
        if self.learn_scale:
            s = self.min_scale + (1 - self.min_scale) * tf.sigmoid(raw[:, :1])
        else:
            s = tf.fill(tf.shape(raw[:, :1]), self.scale)
        return tf.concat([s, (1 - s) * tf.tanh(raw[:, 1:])], axis=1)

    def call(self, images, training=False):
        window = self.window(images, training=training)
        crops = transforms.warp(images, "attention", window, (CROP, CROP))
        if self.blur > 0:
            soft = transforms.warp(
                gaussian_blur(images, self.blur), "attention", window, (CROP, CROP)
            )
            crops += soft - tf.stop_gradient(soft)
        return crops, window


# === The optimisation ===


def _triplet_step(config: CoLocConfig, st, images, encode):
    """``step(first, second, u) -> loss``: one update of the localiser on the
    triplet loss of image pairs (``first``, ``second``) and random windows at ``u``
    (A.2)."""
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(config.learning_rate)
    elif config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(
            config.learning_rate, momentum=config.momentum
        )
    else:
        optimizer = keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    variables = st.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(first, second, u):
        a, b = tf.gather(images, first), tf.gather(images, second)
        with tf.GradientTape() as tape:
            crops_a, _ = st(a, training=True)
            crops_b = st(b, training=True)[0]
            if config.stop_target:  # the pair's target, a constant for the step
                crops_b = tf.stop_gradient(crops_b)
            # R(I_n): a window of the digit's size at a uniform place in the image.
            s = tf.fill([tf.shape(u)[0], 1], config.scale)
            window = tf.concat([s, (2 * u - 1) * (1 - s)], axis=1)
            random_crops = transforms.warp(a, "attention", window, (CROP, CROP))
            e_a, e_b, e_r = encode(crops_a), encode(crops_b), encode(random_crops)
            near = tf.reduce_sum(tf.square(e_a - e_b), axis=1)
            far = tf.reduce_sum(tf.square(e_a - e_r), axis=1)
            loss = tf.reduce_mean(tf.nn.relu(near - far + config.margin))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


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
    st = Localiser(config)
    st(images[:1])  # builds the weights
    step = _triplet_step(config, st, images, encode)
    size = images.shape[1:3]

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
        "encoder_weights_sha256": fingerprint(encoder_model),
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
    """The command's own flags, made from ``CoLocConfig``'s fields (not defined on
    import: ``--steps`` and friends would clash with the training command's in a
    process that imports both). ``--dataset``, ``--seed`` and the sources come
    with ``stn_tf.pipelines.flags``; ``--digit`` and ``--encoder`` are required."""
    shared = (
        "dataset",
        "seed",
        *(f.name for f in dataclasses.fields(datasets.Sources)),
    )
    fields.define_flags(CoLocConfig, skip=shared)
    for name in ("digit", "encoder"):
        FLAGS.set_default(name, None)
    flags.DEFINE_string(
        "workdir", None, "Output folder (default runs/<dataset>_digit<K>_s<seed>)."
    )


def main(argv):
    cli.prepare(argv, required=("encoder",))
    if FLAGS.digit is None:
        raise app.UsageError("--digit is required (0-9)")
    try:
        config = CoLocConfig(
            **{f.name: FLAGS[f.name].value for f in dataclasses.fields(CoLocConfig)}
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
