"""Size, single-image latency and test error of a trained run in every exported form.

    .venv/bin/python tools/bench_export.py --workdir=runs/reproduce_mnist/mnist_rts_st_cnn_affine

Exports the run's latest checkpoint (SavedModel, then TFLite float32, float16,
dynamic-range and int8) into a temporary folder and measures, side by side in one
process on one thread (TF intra/inter-op threads 1, LiteRT ``num_threads=1``):

- size on disk: the Keras ``.keras`` file, the SavedModel folder, each ``.tflite``;
- latency of one image: median and 90th percentile of ``--repeats`` calls after
  warm-up (Keras: the model as trained, XLA sampler, in a ``tf.function``;
  SavedModel: its ``serving_default`` signature, request checks included;
  TFLite: the LiteRT interpreter with its default XNNPACK delegate);
- test error on the run's fixed distorted test set, and the share of test
  examples where each export predicts the same class as the Keras model.

Writes the ``bench_export`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as `python tools/bench_export.py`
    sys.path.insert(0, str(_REPO))

import numpy as np
import tensorflow as tf

from export import saved_model as saved_model_lib
from export import tflite
from stn_tf import runs
from tools import benchlib

flags.DEFINE_string("workdir", None, "A finished training run.", required=True)
flags.DEFINE_integer(
    "repeats", 300, "Timed single-image calls per form.", lower_bound=10
)
flags.DEFINE_string("out", "docs/benchmarks.md", "Markdown file of sections to update.")
FLAGS = flags.FLAGS


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _latency(fn, image, repeats: int) -> tuple[float, float]:
    for _ in range(10):
        fn(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.9 * len(times))] * 1e3


def _classes(fn, images, batch=500) -> np.ndarray:
    return np.concatenate(
        [np.asarray(fn(images[i : i + batch])) for i in range(0, len(images), batch)]
    )


def measure(workdir: str, repeats: int) -> tuple[runs.TrainConfig, int, list[dict]]:
    config, model, step = runs.restore(workdir, jit_compile=True)
    test = saved_model_lib.test_examples(config)
    images, labels = test["image"], test["label"]
    one = images[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keras_file = tmp / "model.keras"
        model.save(keras_file)
        call = tf.function(lambda x: tf.argmax(model(x, training=False)["logits"], -1))
        keras_classes = _classes(call, images)
        rows.append(
            {
                "form": "Keras (as trained, XLA sampler)",
                "bytes": _size(keras_file),
                "latency": _latency(call, tf.constant(one), repeats),
                "classes": keras_classes,
            }
        )
        version = saved_model_lib.export_saved_model(workdir, tmp / "models" / "stn")
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
        rows.append(
            {
                "form": "SavedModel `serving_default`",
                "bytes": _size(version),
                "latency": _latency(
                    lambda x: serve(images=x), tf.constant(one), repeats
                ),
                "classes": _classes(
                    lambda x: serve(images=tf.constant(x))["classes"], images
                ),
            }
        )
        for quantize in tflite.QUANTIZATIONS:
            path = tmp / f"stn_{quantize}.tflite"
            path.write_bytes(tflite.convert(version, quantize))
            lite = tflite.LiteModel(path, num_threads=1)
            rows.append(
                {
                    "form": f"TFLite {quantize}",
                    "bytes": _size(path),
                    "latency": _latency(lite, one, repeats),
                    "classes": _classes(
                        lambda x, lite=lite: lite(x)["classes"], images
                    ),
                }
            )
    for row in rows:
        row["error"] = float(np.mean(row["classes"] != labels))
        row["agree"] = float(np.mean(row["classes"] == keras_classes))
    return config, step, rows


def report(workdir, config, step, rows, seconds) -> str:
    keras_error = rows[0]["error"]
    lines = [
        "| form | size | latency, 1 image, median (p90) | test error | Δ error | same class as Keras |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        median, p90 = row["latency"]
        lines.append(
            f"| {row['form']} | {row['bytes'] / 1024:,.0f} KiB | {median:.3f} ms ({p90:.3f}) | "
            f"{100 * row['error']:.2f} % | {100 * (row['error'] - keras_error):+.2f} pt | "
            f"{100 * row['agree']:.2f} % |"
        )
    examples = len(rows[0]["classes"])
    transform = f" ({config.transform})" if config.model.startswith("st_") else ""
    return f"""## Export: size, latency, accuracy

`.venv/bin/python tools/bench_export.py --workdir={workdir}`
(run {datetime.date.today().isoformat()}, {seconds:.0f} s): {config.model}{transform}
trained on {config.dataset} for {step} steps, measured on its fixed test set of
{examples:,} distorted digits. One thread everywhere (TF intra/inter-op 1, LiteRT
`num_threads=1`), on {benchlib.cpu_model()}, {benchlib.cores()} cores available,
TensorFlow {tf.__version__}, Python {platform.python_version()},
{benchlib.code_version("export", "stn_tf")}.

{chr(10).join(lines)}

Keras is the model as trained: XLA-compiled sampler inside a `tf.function`. The
SavedModel runs the same weights with the sampler as plain ops (TF Serving loads
no XLA) and checks each request in the graph (rank, size, range, NaN). TFLite
runs under LiteRT with its default XNNPACK delegate; `int8` takes and returns
int8 tensors (calibrated on 200 test examples; here `LiteModel` quantises the
input and dequantises the outputs). Latency is a single call with a batch of one,
after 10 warm-up calls; a serving process adds its own RPC overhead on top.
"""


def main(argv):
    del argv
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    config, step, rows = measure(FLAGS.workdir, FLAGS.repeats)
    text = report(FLAGS.workdir, config, step, rows, time.perf_counter() - start)
    print(text)
    path = benchlib.write_section(_REPO / FLAGS.out, "bench_export", text)
    print(f"wrote the bench_export section of {path}")


if __name__ == "__main__":
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    app.run(main)
