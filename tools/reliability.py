"""Tries bad inputs on every public entry point and writes what each gives.

    .venv/bin/python -m tools.reliability          # ~1 min; writes docs/reliability.md

Each case is run for real, here, and its outcome (the exception's type and the
first line of its message, or what came back) is written into the table of
docs/reliability.md's ``reliability`` section: the table cannot drift from the code.
"""

from __future__ import annotations

import datetime
import gzip
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_REPO = Path(__file__).resolve().parents[1]

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from absl.testing import flagsaver

from stn_tf import layers, models, sampler, train, transforms
from stn_tf.export import saved_model as saved_model_lib
from stn_tf.export import tflite
from stn_tf.pipelines import datasets, mnist
from tools import benchlib
from tools.sample_data import smoke_config

TITLE = """# Reliability

What the code does when things go wrong: faults a training run survives, and the
bad inputs every public entry point was given, with what each answered.
"""


def _outcome(fn) -> str:
    try:
        result = fn()
    except SystemExit as e:
        return f"exit {e.code}" if isinstance(e.code, int) else f"exit: {e.code}"
    except BaseException as e:  # noqa: BLE001 - the point is to record anything
        text = getattr(e, "message", None) or str(e)
        lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
        # TF wraps graph assertions: show the assertion, not the wrapper.
        line = next((ln for ln in lines if "assertion failed" in ln), None)
        line = line or (lines[0] if lines else "")
        line = line.replace("|", "\\|")
        if len(line) > 230:
            line = line[:227] + "..."
        return f"`{type(e).__name__}`: {line}"
    return f"no error: {result}"


def _finite(t) -> str:
    values = np.asarray(t)
    return "finite output" if np.isfinite(values).all() else "NON-FINITE output"


def cases(tmp: Path) -> list[tuple[str, str, callable]]:
    image = tf.zeros([2, 8, 8, 1])
    coords = transforms.affine_grid(
        transforms.get_transform("affine").identity_params(2), (4, 4)
    )
    loc = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4)])
    st = layers.SpatialTransformer(loc, transform="affine")

    def pipeline(**kw):
        digits = mnist.load_mnist("train", source="embedded")
        return datasets.Pipeline(
            **{
                "dataset": "mnist_rts",
                "digits": digits,
                "batch_size": 8,
                "training": True,
                **kw,
            }
        )

    bad_idx = tmp / "bad"
    bad_idx.mkdir()
    (bad_idx / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 7)
    )
    (bad_idx / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")
    )
    wrong_magic = tmp / "magic.idx"
    wrong_magic.write_bytes(b"\x12\x34\x56\x78")

    def cli(*args):
        with flagsaver.flagsaver():
            argv = flags.FLAGS(["stn_tf.train", "--mnist_source=embedded", *args])
            train.main(argv)

    def cli_parse(*args):
        with flagsaver.flagsaver():
            flags.FLAGS(["stn_tf.train", *args])

    # A tiny trained run and its export, for the export entry points.
    run = tmp / "run"
    train.train_and_evaluate(
        smoke_config(model="st_cnn", steps=2, log_every=2, checkpoint_every=2), run
    )
    version = saved_model_lib.export_saved_model(run, tmp / "models" / "stn")
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    serve8 = tf.saved_model.load(str(version)).signatures["serving_uint8"]
    ok = np.zeros([1, 28, 28, 1], np.float32)

    return [
        # Sampler
        (
            "sampler.sample",
            "images of rank 3",
            lambda: sampler.sample(tf.zeros([8, 8, 1]), coords),
        ),
        (
            "sampler.sample",
            "coords with 3 components in 2D",
            lambda: sampler.sample(image, tf.zeros([2, 4, 4, 3])),
        ),
        (
            "sampler.sample",
            "int32 images",
            lambda: sampler.sample(tf.zeros([2, 8, 8, 1], tf.int32), coords),
        ),
        (
            "sampler.sample",
            "float16 coords",
            lambda: sampler.sample(image, tf.cast(coords, tf.float16)),
        ),
        (
            "sampler.sample",
            "batch 2 images, batch 3 coords",
            lambda: sampler.sample(image, tf.zeros([3, 4, 4, 2])),
        ),
        (
            "sampler.sample",
            "unknown interpolation 'bicubic'",
            lambda: sampler.sample(image, coords, interpolation="bicubic"),
        ),
        (
            "sampler.sample",
            "NaN, ±inf, 3e38 coordinates",
            lambda: _finite(
                sampler.sample(
                    image + 1,
                    tf.constant(
                        [
                            [[[np.nan, 0]], [[np.inf, 0]]],
                            [[[3e38, -3e38]], [[0, -np.inf]]],
                        ],
                        tf.float32,
                    ),
                )
            ),
        ),
        (
            "sampler.sample",
            "NaN pixels, identity grid",
            lambda: _finite(sampler.sample(tf.fill([2, 8, 8, 1], np.nan), coords)),
        ),
        (
            "sampler.sample",
            "empty batch",
            lambda: (
                sampler.sample(tf.zeros([0, 8, 8, 1]), tf.zeros([0, 4, 4, 2])).shape
            ),
        ),
        # Transforms
        (
            "transforms.get_transform",
            "unknown name 'similarity'",
            lambda: transforms.get_transform("similarity"),
        ),
        (
            "transform.grid (affine)",
            "5 parameters instead of 6",
            lambda: transforms.affine_grid(tf.zeros([2, 5]), (4, 4)),
        ),
        (
            "transform.grid (affine)",
            "output size (0, 4)",
            lambda: transforms.affine_grid(tf.zeros([2, 6]), (0, 4)),
        ),
        (
            "transform.grid (affine)",
            "output size (4,) for an image",
            lambda: transforms.affine_grid(tf.zeros([2, 6]), (4,)),
        ),
        (
            "transform.grid (tps)",
            "NaN and 3e38 parameters",
            lambda: _finite(
                sampler.sample(
                    tf.ones([2, 8, 8, 1]),
                    transforms.tps_grid(
                        tf.constant([[np.nan] * 32, [3e38] * 32]), (4, 4)
                    ),
                )
            ),
        ),
        # Layers
        (
            "SpatialTransformer",
            "a localisation that is not a layer",
            lambda: layers.SpatialTransformer("conv", transform="affine"),
        ),
        (
            "SpatialTransformer",
            "unknown transform 'shear'",
            lambda: layers.SpatialTransformer(loc, transform="shear"),
        ),
        (
            "SpatialTransformer",
            "output_size=(0, 4)",
            lambda: layers.SpatialTransformer(loc, output_size=(0, 4)),
        ),
        (
            "SpatialTransformer",
            "downsample=-2",
            lambda: layers.SpatialTransformer(loc, downsample=-2),
        ),
        ("SpatialTransformer", "input of rank 3", lambda: st(tf.zeros([8, 8, 1]))),
        (
            "SpatialTransformer",
            "NaN pixels",
            lambda: _finite(st(tf.fill([2, 8, 8, 1], np.nan))),
        ),
        (
            "models.build_model",
            "unknown model 'resnet'",
            lambda: models.build_model("resnet", (28, 28, 1), 10),
        ),
        (
            "models.build_model",
            "input shape (28, 28)",
            lambda: models.build_model("cnn", (28, 28), 10),
        ),
        (
            "models.build_model",
            "3D transform for a 2D model",
            lambda: models.build_model("st_cnn", (28, 28, 1), 10, transform="affine3d"),
        ),
        # Data
        (
            "mnist.load_mnist",
            "unknown split 'validation'",
            lambda: mnist.load_mnist("validation", source="embedded"),
        ),
        (
            "mnist.load_mnist",
            "unknown source 'http'",
            lambda: mnist.load_mnist("train", source="http"),
        ),
        (
            "mnist.load_mnist",
            "--mnist_dir that does not exist",
            lambda: mnist.load_mnist("train", mnist_dir=str(tmp / "nowhere")),
        ),
        (
            "mnist.load_mnist",
            "IDX files truncated / count mismatch",
            lambda: mnist.load_mnist("train", mnist_dir=str(bad_idx)),
        ),
        (
            "mnist.read_idx",
            "a file with a wrong magic number",
            lambda: mnist.read_idx(wrong_magic),
        ),
        (
            "datasets.Pipeline",
            "unknown dataset 'mnist_x'",
            lambda: pipeline(dataset="mnist_x"),
        ),
        ("datasets.Pipeline", "batch_size=0", lambda: pipeline(batch_size=0)),
        ("datasets.Pipeline", "seed=-1", lambda: pipeline(seed=-1)),
        (
            "datasets.Pipeline",
            "digits of 32x32",
            lambda: pipeline(
                digits=mnist.Digits(
                    np.zeros([4, 32, 32], np.uint8),
                    np.zeros([4], np.int32),
                    "hand-made",
                )
            ),
        ),
        (
            "Pipeline.dataset",
            "augment_on='tpu'",
            lambda: pipeline().dataset(augment_on="tpu"),
        ),
        # Command line
        (
            "python -m stn_tf.train",
            "--dataset=mnist_x",
            lambda: cli_parse("--dataset=mnist_x"),
        ),
        ("python -m stn_tf.train", "--steps=0", lambda: cli_parse("--steps=0")),
        (
            "python -m stn_tf.train",
            "--learning_rate=-1",
            lambda: cli_parse("--learning_rate=-1"),
        ),
        (
            "python -m stn_tf.train",
            "--lr_boundaries=100,50",
            lambda: cli("--lr_boundaries=100,50", f"--workdir={tmp / 'w1'}"),
        ),
        (
            "python -m stn_tf.train",
            "--dataset=mnist_sequence --model=cnn (a model that does not fit)",
            lambda: cli(
                "--dataset=mnist_sequence", "--model=cnn", f"--workdir={tmp / 'w2'}"
            ),
        ),
        ("python -m stn_tf.train", "a stray argument", lambda: cli("oops")),
        (
            "python -m stn_tf.train",
            "another run's workdir",
            lambda: cli("--dataset=mnist_r", "--steps=1", f"--workdir={run}"),
        ),
        (
            "python -m stn_tf.train",
            "a workdir under a file",
            lambda: cli(f"--workdir={wrong_magic / 'run'}", "--steps=1"),
        ),
        # Export
        (
            "export_saved_model",
            "a folder without config.json",
            lambda: saved_model_lib.export_saved_model(tmp / "bad", tmp / "m"),
        ),
        (
            "export_saved_model",
            "an existing version",
            lambda: saved_model_lib.export_saved_model(
                run, tmp / "models" / "stn", version=1
            ),
        ),
        ("tflite.convert", "quantize='int4'", lambda: tflite.convert(version, "int4")),
        (
            "tflite.convert",
            "a folder that is no SavedModel",
            lambda: tflite.convert(tmp / "bad"),
        ),
        (
            "signature serving_default",
            "rank 3 images",
            lambda: serve(images=tf.zeros([28, 28, 1])),
        ),
        (
            "signature serving_default",
            "images of 42x42",
            lambda: serve(images=tf.zeros([2, 42, 42, 1])),
        ),
        (
            "signature serving_default",
            "3 channels",
            lambda: serve(images=tf.zeros([2, 28, 28, 3])),
        ),
        (
            "signature serving_default",
            "empty batch",
            lambda: serve(images=tf.zeros([0, 28, 28, 1])),
        ),
        (
            "signature serving_default",
            "float pixels 0..255",
            lambda: serve(images=tf.constant(ok + 255)),
        ),
        (
            "signature serving_default",
            "NaN pixels",
            lambda: serve(images=tf.constant(ok * np.nan)),
        ),
        (
            "signature serving_default",
            "float64 images",
            lambda: serve(images=tf.zeros([1, 28, 28, 1], tf.float64)),
        ),
        (
            "signature serving_uint8",
            "float32 images",
            lambda: serve8(images=tf.constant(ok)),
        ),
    ]


def main(argv):
    del argv
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(where, what, _outcome(fn)) for where, what, fn in cases(Path(tmp))]
    table = "\n".join(
        ["| entry point | bad input | what it gives |", "| --- | --- | --- |"]
        + [
            f"| {where} | {what} | {outcome.replace(str(Path(tempfile.gettempdir())), '/tmp')} |"
            for where, what, outcome in rows
        ]
    )
    text = f"""## Bad inputs, tried

`.venv/bin/python -m tools.reliability` (run {datetime.date.today().isoformat()},
{benchlib.code_version("stn_tf", "pipelines", "export")}): {len(rows)} bad inputs on
{len({r[0] for r in rows})} entry points; each row is the real outcome, the first line
of the message. Temporary paths are shortened to `/tmp`.

{table}

The rows without an error are by design. Non-finite coordinates and θ read zeros
(finite output, zero gradient), so one broken example cannot poison a batch; that
is also why a transformer fed NaN pixels gives a finite (zero) output: its θ is
NaN. NaN pixels are data to the sampler, sampled like any other value (checking
every pixel would cost a reduction per call); they are refused at the serving
boundary, and in training a NaN reaching the loss stops the run with the last
good checkpoint named. An empty batch is a valid empty result.
"""
    print(text)
    path = benchlib.write_section(
        _REPO / "docs" / "reliability.md", "reliability", text, title=TITLE
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
