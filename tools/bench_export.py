"""Size, single-image latency and test error of a trained run in every exported form.

    .venv/bin/python -m tools.bench_export --workdir=runs/reproduce_mnist/mnist_rts_st_cnn_affine
    .venv/bin/python -m tools.bench_export --sample=cub --num_st=4 --image_size=448 --repeats=5

Exports the run's latest checkpoint (SavedModel, then TFLite float32, float16,
dynamic-range and int8) into a temporary folder and measures, side by side in one
process (TF intra/inter-op threads and LiteRT ``num_threads`` set to each of
``--threads``):

- size on disk: the Keras ``.keras`` file, the SavedModel folder, each ``.tflite``;
- latency of one image: median and 90th percentile of ``--repeats`` calls after
  warm-up (Keras: the model as trained, XLA sampler, in a ``tf.function``;
  SavedModel: its ``serving_default`` signature, request checks included;
  TFLite: the LiteRT interpreter with its default XNNPACK delegate);
- test error on the run's fixed test set, the share of test labels where each
  form predicts the same class as the SavedModel, and the largest difference
  of a probability from the SavedModel's.

``--sample=cub`` or ``--sample=svhn`` measures the real-image models offline (with
the training command's ``--model``, ``--num_st`` and ``--image_size``): it
first trains a one-step run (random backbone weights, ``--weights=none``) on
stand-in data (``tools.sample_data``: random JPEGs of all sizes for CUB, random
house-number archives for SVHN) and measures that run on the stand-in test set.
Sizes and latencies are those of the real models; agreement is measured on the
stand-in images.

Writes the ``bench_export`` section of ``docs/benchmarks.md`` (``--section``).
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from absl import app, flags, logging

_REPO = Path(__file__).resolve().parents[1]

import numpy as np
import tensorflow as tf

from stn_tf import fields, runs
from stn_tf.export import saved_model as saved_model_lib
from stn_tf.export import tflite
from stn_tf.training import train_and_evaluate
from tools import benchlib, sample_data

# --model, --num_st and --image_size for --sample: flags made from TrainConfig's
# declarations, as the training command's are.
fields.define_flags(runs.TrainConfig, only=("model", "num_st", "image_size"))
benchlib.define_flag("string", "workdir", None, "The finished training run to measure.")
flags.DEFINE_enum(
    "sample",
    None,
    ["cub", "svhn"],
    "Instead of --workdir: a one-step run of this real-image set on stand-in data "
    "(--model, --num_st, --image_size as for training).",
)
flags.DEFINE_integer("sample_test", 16, "--sample: stand-in test images.")
flags.DEFINE_integer(
    "repeats", 300, "Timed single-image calls per form.", lower_bound=3
)
flags.DEFINE_list("threads", ["1"], "Thread counts to time each form at.")
flags.DEFINE_string("section", "bench_export", "Section of --out to write.")
flags.DEFINE_string("out", "docs/benchmarks.md", "Markdown file of sections to update.")
FLAGS = flags.FLAGS


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _latency(fn, image, repeats: int) -> tuple[float, float]:
    for _ in range(min(10, max(2, repeats // 10))):
        fn(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.9 * len(times))] * 1e3


def _batched(fn, images, batch=100) -> dict:
    parts = [fn(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def _set_threads(threads: int) -> None:
    """TF's thread pools can be sized once per process: the first call wins."""
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def measure(workdir, repeats: int, threads: list[int]):
    """``(config, step, rows)``: one row per form, latencies per thread count.

    TF's thread pools cannot change inside a process, so Keras and SavedModel
    latencies are timed at the first thread count only; LiteRT at each.
    """
    config, model, step = runs.restore(workdir, jit_compile=True)
    test = saved_model_lib.test_examples(config)
    images, labels = test["image"], test["label"]
    one = images[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keras_file = tmp / "model.keras"
        model.save(keras_file)

        @tf.function
        def call(x):
            logits = model(x, training=False)["logits"]
            return {
                "probabilities": tf.nn.softmax(logits),
                "classes": tf.argmax(logits, -1),
            }

        rows.append(
            {
                "form": "Keras (as trained, XLA sampler)",
                "bytes": _size(keras_file),
                "latency": {threads[0]: _latency(call, tf.constant(one), repeats)},
                "out": _batched(call, images),
            }
        )
        version = saved_model_lib.export_saved_model(workdir, tmp / "models" / "stn")
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
        rows.append(
            {
                "form": "SavedModel `serving_default`",
                "bytes": _size(version),
                "latency": {
                    threads[0]: _latency(
                        lambda x: serve(images=x), tf.constant(one), repeats
                    )
                },
                "out": _batched(lambda x: serve(images=tf.constant(x)), images),
            }
        )
        for quantize in tflite.QUANTIZATIONS:
            logging.warning("converting to TFLite %s", quantize)
            path = tmp / f"stn_{quantize}.tflite"
            path.write_bytes(tflite.convert(version, quantize))
            latency = {}
            for n in threads:
                lite = tflite.LiteModel(path, num_threads=n)
                latency[n] = _latency(lite, one, repeats)
            rows.append(
                {
                    "form": f"TFLite {quantize}",
                    "bytes": _size(path),
                    "latency": latency,
                    "out": _batched(lite, images),
                }
            )
    reference = rows[1]["out"]
    for row in rows:
        row["error"] = float(np.mean(row["out"]["classes"] != labels))
        row["agree"] = float(np.mean(row["out"]["classes"] == reference["classes"]))
        row["delta"] = float(
            np.max(np.abs(row["out"]["probabilities"] - reference["probabilities"]))
        )
    return config, step, rows


def report(source, config, step, rows, seconds, threads) -> str:
    timed = " | ".join(f"latency, {n} thread{'s' * (n > 1)}" for n in threads)
    # A one-step run on stand-in data has no test error worth a column.
    error = "" if FLAGS.sample else " test error |"
    lines = [
        f"| form | size | {timed} |{error} same class as SavedModel | max abs Δ probability |",
        "| --- | ---: |" + " ---: |" * (len(threads) + 2 + (not FLAGS.sample)),
    ]
    for row in rows:
        cells = []
        for n in threads:
            if n in row["latency"]:
                median, p90 = row["latency"][n]
                cells.append(f"{median:,.1f} ms ({p90:,.1f})")
            else:
                cells.append("")
        cells += [] if FLAGS.sample else [f"{100 * row['error']:.2f} %"]
        lines.append(
            f"| {row['form']} | {row['bytes'] / 2**20:,.1f} MiB | {' | '.join(cells)} | "
            f"{100 * row['agree']:.2f} % | {row['delta']:.2g} |"
        )
    examples = len(rows[0]["out"]["classes"])
    stand_in = (
        " (stand-in data from tools/sample_data, weights one step from random: sizes and "
        "latencies are the real model's, the classes mean nothing)"
        if FLAGS.sample
        else ""
    )
    transform = f" ({config.transform})" if "theta_0" in rows[1]["out"] else ""
    extra = f", num_st={config.num_st}" if config.num_st is not None else ""
    size = f", {config.image_size} px" if config.image_size else ""
    return f"""## Export: {config.model}{extra} on {config.dataset}{size}

`.venv/bin/python -m tools.bench_export {source}`
(run {datetime.date.today().isoformat()}, {seconds:.0f} s): {config.model}{transform}{extra}
trained on {config.dataset} for {step} steps, measured on its fixed test set of
{examples:,} examples{stand_in}. TF and LiteRT threads as in each column (TF's pools are
sized once per process: Keras and SavedModel at {threads[0]} only), on
{benchlib.cpu_model()}, {benchlib.cores()} cores available, TensorFlow
{tf.__version__}, Python {platform.python_version()},
{benchlib.code_version("export", "stn_tf")}.

{chr(10).join(lines)}

Keras is the model as trained: XLA-compiled sampler inside a `tf.function`. The
SavedModel runs the same weights with the sampler as plain ops (TF Serving loads
no XLA) and checks each request in the graph (rank, size, range, NaN); the other
forms are compared with it. TFLite runs under LiteRT with its default XNNPACK
delegate; `int8` takes and returns int8 tensors (calibrated on up to 200 test
examples; here `LiteModel` quantises the input and dequantises the outputs).
Latency is a single call with a batch of one: median (90th percentile) of
{FLAGS.repeats} calls after warm-up; a serving process adds its own RPC overhead.
"""


@contextlib.contextmanager
def _sample_run(kind: str) -> Iterator[str]:
    """A one-step run of ``kind`` on stand-in data; the data stays mocked inside."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        options = dict(
            steps=1,
            batch_size=4,
            eval_batch_size=8,
            log_every=1,
            picture_every=10**6,
            image_size=FLAGS.image_size,
        )
        if kind == "cub":
            stack.enter_context(
                sample_data.mock_cub({"train": 8, "test": FLAGS.sample_test})
            )
            options.update(weights="none", num_st=FLAGS.num_st)
        else:
            manual = sample_data.svhn_sample(tmp / "manual", 8, FLAGS.sample_test)
            options.update(data_dir=str(tmp / "tfds"), manual_dir=str(manual))
        config = runs.TrainConfig(dataset=kind, model=FLAGS.model, **options)
        train_and_evaluate(config, tmp / "run")
        yield str(tmp / "run")


def main(argv):
    del argv
    if (FLAGS.workdir is None) == (FLAGS.sample is None):
        raise app.UsageError("pass exactly one of --workdir and --sample")
    threads = [int(n) for n in FLAGS.threads]
    _set_threads(threads[0])
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    source = " ".join(a for a in sys.argv[1:] if not a.startswith("--out"))
    with (
        _sample_run(FLAGS.sample)
        if FLAGS.sample
        else contextlib.nullcontext(FLAGS.workdir)
    ) as workdir:
        config, step, rows = measure(workdir, FLAGS.repeats, threads)
    text = report(source, config, step, rows, time.perf_counter() - start, threads)
    print(text)
    path = benchlib.write_section(
        _REPO / FLAGS.out, FLAGS.section, text, tool="bench_export"
    )
    print(f"wrote the {FLAGS.section} section of {path}")


if __name__ == "__main__":
    app.run(main)
