"""Bad inputs on every public entry point, each with the answer it must get.

    .venv/bin/python -m tools.reliability          # ~1 min; writes docs/reliability.md

``CASES`` is one table: where, what bad input, how it is given, and a regular
expression the answer must match. ``tests/test_reliability.py`` runs every case
and holds it to its expectation; this tool runs the same table and writes the
real answers (the exception's type and the first line of its message, or what
came back) into docs/reliability.md's ``reliability`` section.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gzip
import os
import re
import tempfile
from collections.abc import Callable
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


class Inputs:
    """What the cases are given, made in ``tmp``: small tensors, a localisation
    net, broken IDX files and, on first use, a tiny trained run and its SavedModel."""

    def __init__(self, tmp: Path):
        self.tmp = Path(tmp)
        self.image = tf.zeros([2, 8, 8, 1])
        self.coords = transforms.affine_grid(
            transforms.get_transform("affine").identity_params(2), (4, 4)
        )
        self.loc = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4)])
        self.st = layers.SpatialTransformer(self.loc, transform="affine")
        self.ok = np.zeros([1, 28, 28, 1], np.float32)
        self.bad_idx = self.tmp / "bad"
        self.bad_idx.mkdir(exist_ok=True)
        (self.bad_idx / "train-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 7)
        )
        (self.bad_idx / "train-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")
        )
        self.wrong_magic = self.tmp / "magic.idx"
        self.wrong_magic.write_bytes(b"\x12\x34\x56\x78")

    def pipeline(self, **kw) -> datasets.Pipeline:
        """An RTS pipeline on the embedded digits, ``kw`` changed."""
        digits = mnist.load_mnist("train", source="embedded")
        given = {"digits": digits, "batch_size": 8, "training": True, **kw}
        return datasets.Pipeline(**{"dataset": "mnist_rts", **given})

    def cli(self, *args) -> None:
        """``python -m stn_tf.train ARGS`` (on the embedded digits), in this process."""
        with flagsaver.flagsaver():
            train.main(flags.FLAGS(["stn_tf.train", "--mnist_source=embedded", *args]))

    def cli_parse(self, *args) -> None:
        """The training command's flags parsed, nothing run."""
        with flagsaver.flagsaver():
            flags.FLAGS(["stn_tf.train", *args])

    @functools.cached_property
    def run(self) -> Path:
        """A two-step ST-CNN run on RTS."""
        run = self.tmp / "run"
        config = smoke_config(model="st_cnn", steps=2, log_every=2, checkpoint_every=2)
        train.train_and_evaluate(config, run)
        return run

    @functools.cached_property
    def version(self) -> Path:
        """The run's SavedModel (version 1)."""
        return saved_model_lib.export_saved_model(self.run, self.tmp / "models" / "stn")

    @functools.cached_property
    def loaded(self):
        """The SavedModel, loaded."""
        return tf.saved_model.load(str(self.version))

    def signature(self, name: str):
        return self.loaded.signatures[name]


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``call(inputs)`` gives it; the answer must match ``expect``."""

    where: str
    what: str
    call: Callable[[Inputs], object]
    expect: str


def _finite(t) -> str:
    values = np.asarray(t)
    return "finite output" if np.isfinite(values).all() else "NON-FINITE output"


def _error(kind: str, *parts: str) -> str:
    """The answer ``kind`` (an exception's name) with ``parts`` in its message."""
    return f"^`{kind}`: .*" + ".*".join(parts)


_SERVE_ASSERT = r"assertion failed: \["
CASES = [
    # Sampler
    Case(
        "sampler.sample",
        "images of rank 3",
        lambda i: sampler.sample(tf.zeros([8, 8, 1]), i.coords),
        _error("ValueError", r"rank 4", r"Received: inputs.shape=\(8, 8, 1\)"),
    ),
    Case(
        "sampler.sample",
        "coords with 3 components in 2D",
        lambda i: sampler.sample(i.image, tf.zeros([2, 4, 4, 3])),
        _error("ValueError", r"3 components sample volumes", r"rank 5"),
    ),
    Case(
        "sampler.sample",
        "int32 images",
        lambda i: sampler.sample(tf.zeros([2, 8, 8, 1], tf.int32), i.coords),
        _error("ValueError", r"floating-point", r"Received: images.dtype=int32"),
    ),
    Case(
        "sampler.sample",
        "float16 coords",
        lambda i: sampler.sample(i.image, tf.cast(i.coords, tf.float16)),
        _error("ValueError", r"float32 or float64", r"coords.dtype=float16"),
    ),
    Case(
        "sampler.sample",
        "batch 2 images, batch 3 coords",
        lambda i: sampler.sample(i.image, tf.zeros([3, 4, 4, 2])),
        _error("ValueError", r"same batch size", r"coords.shape=\(3, 4, 4, 2\)"),
    ),
    Case(
        "sampler.sample",
        "unknown interpolation 'bicubic'",
        lambda i: sampler.sample(i.image, i.coords, interpolation="bicubic"),
        _error("ValueError", r"one of \('bilinear', 'nearest'\)", r"'bicubic'"),
    ),
    Case(
        "sampler.sample",
        "NaN, ±inf, 3e38 coordinates",
        lambda i: _finite(
            sampler.sample(
                i.image + 1,
                tf.constant(
                    [[[[np.nan, 0]], [[np.inf, 0]]], [[[3e38, -3e38]], [[0, -np.inf]]]],
                    tf.float32,
                ),
            )
        ),
        r"^no error: finite output$",
    ),
    Case(
        "sampler.sample",
        "NaN pixels, identity grid",
        lambda i: _finite(sampler.sample(tf.fill([2, 8, 8, 1], np.nan), i.coords)),
        r"^no error: NON-FINITE output$",  # pixels are data (see below)
    ),
    Case(
        "sampler.sample",
        "empty batch",
        lambda i: sampler.sample(tf.zeros([0, 8, 8, 1]), tf.zeros([0, 4, 4, 2])).shape,
        r"^no error: \(0, 4, 4, 1\)$",
    ),
    # Transforms
    Case(
        "transforms.get_transform",
        "unknown name 'similarity'",
        lambda i: transforms.get_transform("similarity"),
        _error("ValueError", r"'similarity'", r"Known transforms: \['affine'"),
    ),
    Case(
        "transform.grid (affine)",
        "5 parameters instead of 6",
        lambda i: transforms.affine_grid(tf.zeros([2, 5]), (4, 4)),
        _error("ValueError", r"\[B, 6\]", r"Received: params.shape=\(2, 5\)"),
    ),
    Case(
        "transform.grid (affine)",
        "output size (0, 4)",
        lambda i: transforms.affine_grid(tf.zeros([2, 6]), (0, 4)),
        _error("ValueError", r"positive integers", r"output_size=\(0, 4\)"),
    ),
    Case(
        "transform.grid (affine)",
        "output size (4,) for an image",
        lambda i: transforms.affine_grid(tf.zeros([2, 6]), (4,)),
        _error("ValueError", r"2 positive integers", r"output_size=\(4,\)"),
    ),
    Case(
        "transform.grid (tps)",
        "NaN and 3e38 parameters",
        lambda i: _finite(
            sampler.sample(
                tf.ones([2, 8, 8, 1]),
                transforms.tps_grid(tf.constant([[np.nan] * 32, [3e38] * 32]), (4, 4)),
            )
        ),
        r"^no error: finite output$",
    ),
    # Layers
    Case(
        "SpatialTransformer",
        "a localisation that is not a layer",
        lambda i: layers.SpatialTransformer("conv", transform="affine"),
        _error("ValueError", r"Keras layer or model", r"localization='conv'"),
    ),
    Case(
        "SpatialTransformer",
        "unknown transform 'shear'",
        lambda i: layers.SpatialTransformer(i.loc, transform="shear"),
        _error("ValueError", r"'shear'", r"Known transforms"),
    ),
    Case(
        "SpatialTransformer",
        "output_size=(0, 4)",
        lambda i: layers.SpatialTransformer(i.loc, output_size=(0, 4)),
        _error("ValueError", r"positive integers", r"output_size=\(0, 4\)"),
    ),
    Case(
        "SpatialTransformer",
        "downsample=-2",
        lambda i: layers.SpatialTransformer(i.loc, downsample=-2),
        _error("ValueError", r"downsample must be > 0", r"downsample=-2"),
    ),
    Case(
        "SpatialTransformer",
        "input of rank 3",
        lambda i: i.st(tf.zeros([8, 8, 1])),
        _error("ValueError", r"\[B, H, W, C\]", r"input_shape=\(8, 8, 1\)"),
    ),
    Case(
        "SpatialTransformer",
        "NaN pixels",
        lambda i: _finite(i.st(tf.fill([2, 8, 8, 1], np.nan))),
        r"^no error: finite output$",  # θ is NaN: the sampler reads zeros
    ),
    Case(
        "models.build_model",
        "unknown model 'resnet'",
        lambda i: models.build_model("resnet", (28, 28, 1), 10),
        _error("ValueError", r"Unknown model 'resnet'", r"one of fcn, cnn"),
    ),
    Case(
        "models.build_model",
        "input shape (28, 28)",
        lambda i: models.build_model("cnn", (28, 28), 10),
        _error("ValueError", r"\(H, W, C\)", r"input_shape=\(28, 28\)"),
    ),
    Case(
        "models.build_model",
        "3D transform for a 2D model",
        lambda i: models.build_model("st_cnn", (28, 28, 1), 10, transform="affine3d"),
        _error("ValueError", r"transform one of \('affine'", r"'affine3d'"),
    ),
    # Data
    Case(
        "mnist.load_mnist",
        "unknown split 'validation'",
        lambda i: mnist.load_mnist("validation", source="embedded"),
        _error("ValueError", r"'validation'", r"\('train', 'test'\)"),
    ),
    Case(
        "mnist.load_mnist",
        "unknown source 'http'",
        lambda i: mnist.load_mnist("train", source="http"),
        _error("ValueError", r"'http'", r"'idx', 'tfds', 'embedded'"),
    ),
    Case(
        "mnist.load_mnist",
        "--mnist_dir that does not exist",
        lambda i: mnist.load_mnist("train", mnist_dir=str(i.tmp / "nowhere")),
        _error("FileNotFoundError", r"nowhere: no train-images-idx3-ubyte"),
    ),
    Case(
        "mnist.load_mnist",
        "IDX files truncated / count mismatch",
        lambda i: mnist.load_mnist("train", mnist_dir=str(i.bad_idx)),
        _error("ValueError", r"train-images-idx3-ubyte.gz: IDX header truncated"),
    ),
    Case(
        "mnist.read_idx",
        "a file with a wrong magic number",
        lambda i: mnist.read_idx(i.wrong_magic),
        _error("ValueError", r"magic.idx: not an IDX file", r"12345678"),
    ),
    Case(
        "datasets.Pipeline",
        "unknown dataset 'mnist_x'",
        lambda i: i.pipeline(dataset="mnist_x"),
        _error("ValueError", r"'mnist_x'", r"one of mnist, mnist_r"),
    ),
    Case(
        "datasets.Pipeline",
        "batch_size=0",
        lambda i: i.pipeline(batch_size=0),
        _error("ValueError", r"batch_size must be a positive integer", r"0"),
    ),
    Case(
        "datasets.Pipeline",
        "seed=-1",
        lambda i: i.pipeline(seed=-1),
        _error("ValueError", r"seed must be in \[0, 2\*\*31\)", r"seed=-1"),
    ),
    Case(
        "datasets.Pipeline",
        "digits of 32x32",
        lambda i: i.pipeline(
            digits=mnist.Digits(
                np.zeros([4, 32, 32], np.uint8), np.zeros([4], np.int32), "hand-made"
            )
        ),
        _error("ValueError", r"28x28 digits", r"\(32, 32\)"),
    ),
    Case(
        "Pipeline.dataset",
        "augment_on='tpu'",
        lambda i: i.pipeline().dataset(augment_on="tpu"),
        _error("ValueError", r"\('host', 'device'\)", r"'tpu'"),
    ),
    # Command line
    Case(
        "python -m stn_tf.train",
        "--dataset=mnist_x",
        lambda i: i.cli_parse("--dataset=mnist_x"),
        _error(
            "IllegalFlagValueError", r"--dataset=mnist_x", r"one of <mnist\|mnist_r"
        ),
    ),
    Case(
        "python -m stn_tf.train",
        "--steps=0",
        lambda i: i.cli_parse("--steps=0"),
        _error("IllegalFlagValueError", r"--steps=0"),
    ),
    Case(
        "python -m stn_tf.train",
        "--learning_rate=-1",
        lambda i: i.cli_parse("--learning_rate=-1"),
        _error("IllegalFlagValueError", r"--learning_rate=-1"),
    ),
    Case(
        "python -m stn_tf.train",
        "--lr_boundaries=100,50",
        lambda i: i.cli("--lr_boundaries=100,50", f"--workdir={i.tmp / 'w1'}"),
        _error("UsageError", r"strictly increasing", r"\(100, 50\)"),
    ),
    Case(
        "python -m stn_tf.train",
        "--dataset=mnist_sequence --model=cnn (a model that does not fit)",
        lambda i: i.cli(
            "--dataset=mnist_sequence", "--model=cnn", f"--workdir={i.tmp / 'w2'}"
        ),
        _error("UsageError", r"'cnn' does not fit", r"rnn_spn, ffn_spn, conv_net"),
    ),
    Case(
        "python -m stn_tf.train",
        "a stray argument",
        lambda i: i.cli("oops"),
        _error("UsageError", r"Unexpected arguments: \['oops'\]"),
    ),
    Case(
        "python -m stn_tf.train",
        "another run's workdir",
        lambda i: i.cli("--dataset=mnist_r", "--steps=1", f"--workdir={i.run}"),
        r"^exit: error: .*run holds a run with other dataset.*pass another --workdir",
    ),
    Case(
        "python -m stn_tf.train",
        "a workdir under a file",
        lambda i: i.cli(f"--workdir={i.wrong_magic / 'run'}", "--steps=1"),
        r"^exit: error: .*cannot write to the workdir .*magic.idx/run",
    ),
    # Export
    Case(
        "export_saved_model",
        "a folder without config.json",
        lambda i: saved_model_lib.export_saved_model(i.tmp / "bad", i.tmp / "m"),
        _error("FileNotFoundError", r"not a training run: no config.json"),
    ),
    Case(
        "export_saved_model",
        "an existing version",
        lambda i: saved_model_lib.export_saved_model(
            i.run, i.version.parent, version=int(i.version.name)
        ),
        _error("FileExistsError", r"stn/1 exists; versions are never overwritten"),
    ),
    Case(
        "tflite.convert",
        "quantize='int4'",
        lambda i: tflite.convert(i.version, "int4"),
        _error("ValueError", r"'int4'", r"none, float16, dynamic, int8"),
    ),
    Case(
        "tflite.convert",
        "a folder that is no SavedModel",
        lambda i: tflite.convert(i.tmp / "bad"),
        _error("FileNotFoundError", r"bad is neither a SavedModel"),
    ),
    Case(
        "signature serving_default",
        "rank 3 images",
        lambda i: i.signature("serving_default")(images=tf.zeros([28, 28, 1])),
        _error("InvalidArgumentError", _SERVE_ASSERT + r"images must have rank 4"),
    ),
    Case(
        "signature serving_default",
        "images of 42x42",
        lambda i: i.signature("serving_default")(images=tf.zeros([2, 42, 42, 1])),
        _error("InvalidArgumentError", r"must be \[batch, 28, 28, 1\]", r"2 42 42 1"),
    ),
    Case(
        "signature serving_default",
        "3 channels",
        lambda i: i.signature("serving_default")(images=tf.zeros([2, 28, 28, 3])),
        _error("InvalidArgumentError", r"must be \[batch, 28, 28, 1\]", r"2 28 28 3"),
    ),
    Case(
        "signature serving_default",
        "empty batch",
        lambda i: i.signature("serving_default")(images=tf.zeros([0, 28, 28, 1])),
        _error("InvalidArgumentError", _SERVE_ASSERT + r"images is an empty batch"),
    ),
    Case(
        "signature serving_default",
        "float pixels 0..255",
        lambda i: i.signature("serving_default")(images=tf.constant(i.ok + 255)),
        _error("InvalidArgumentError", r"must be in \[0, 1\]", r"serving_uint8"),
    ),
    Case(
        "signature serving_default",
        "NaN pixels",
        lambda i: i.signature("serving_default")(images=tf.constant(i.ok * np.nan)),
        _error("InvalidArgumentError", r"images must be finite"),
    ),
    Case(
        "signature serving_default",
        "float64 images",
        lambda i: i.signature("serving_default")(
            images=tf.zeros([1, 28, 28, 1], tf.float64)
        ),
        _error(
            "InvalidArgumentError", r"expected to be a float tensor but is a double"
        ),
    ),
    Case(
        "signature serving_uint8",
        "float32 images",
        lambda i: i.signature("serving_uint8")(images=tf.constant(i.ok)),
        _error("InvalidArgumentError", r"expected to be a uint8 tensor but is a float"),
    ),
]


def outcome(case: Case, inputs: Inputs) -> str:
    """What ``case`` gets: ``\\`Type\\`: first line of the message``, ``exit ...``
    or ``no error: <what came back>``."""
    try:
        result = case.call(inputs)
    except SystemExit as e:
        return f"exit {e.code}" if isinstance(e.code, int) else f"exit: {e.code}"
    except Exception as e:  # noqa: BLE001 - the point is to record anything
        text = getattr(e, "message", None) or str(e)
        lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
        # TF wraps graph assertions: show the assertion, not the wrapper.
        line = next((ln for ln in lines if "assertion failed" in ln), None)
        line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line or "")
        return f"`{type(e).__name__}`: {line or (lines[0] if lines else '')}"
    return f"no error: {result}"


def matches(case: Case, answer: str) -> bool:
    return re.search(case.expect, answer) is not None


def _cell(answer: str, tmp: Path) -> str:
    cell = answer.replace(str(tmp), "/tmp/...").replace("|", "\\|")
    return cell if len(cell) <= 230 else cell[:227] + "..."


def main(argv):
    del argv
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Inputs(Path(tmp))
        rows = [(case, outcome(case, inputs)) for case in CASES]
        lines = [
            f"| {c.where} | {c.what} | {_cell(answer, Path(tmp))} |"
            for c, answer in rows
        ]
    wrong = [
        f"{c.where}, {c.what}: {answer}" for c, answer in rows if not matches(c, answer)
    ]
    table = "\n".join(
        ["| entry point | bad input | what it gives |", "| --- | --- | --- |", *lines]
    )
    text = f"""## Bad inputs, tried

`.venv/bin/python -m tools.reliability` (run {datetime.date.today().isoformat()},
{benchlib.code_version("stn_tf", "pipelines", "export")}): {len(rows)} bad inputs on
{len({c.where for c in CASES})} entry points; each row is the real outcome, the first
line of the message (temporary paths shortened to `/tmp/...`). Each case and the
answer it must get are one table, `tools.reliability.CASES`, which
`tests/test_reliability.py` runs as tests.

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
    if wrong:  # the tests say the same; the page is not written with them
        raise SystemExit("answers that do not match their case:\n" + "\n".join(wrong))
    path = benchlib.write_section(
        _REPO / "docs" / "reliability.md", "reliability", text, title=TITLE
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
