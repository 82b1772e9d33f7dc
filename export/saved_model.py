"""Exports a trained run as a SavedModel in TF Serving's layout.

    python -m export.saved_model --workdir=runs/quickstart --out=models/stn [--version=N]

writes ``models/stn/N/`` (N: one more than the highest version there; an existing
version is never overwritten) with three signatures:

- ``serving_default``: ``images`` float32 ``[B, H, W, C]`` in [0, 1] (the training
  range) -> ``probabilities`` ``[B, classes]``, ``classes`` ``[B]`` int64 and
  ``theta_<i>`` ``[B, P]``, the pose found by transformer ``i``;
- ``serving_uint8``: the same, for ``images`` uint8 in 0..255;
- ``crops``: ``images`` float32 -> ``crops_<i>`` (what transformer ``i`` passes on)
  and ``theta_<i>``, for inspection.

Inputs are checked inside the graph, so TF Serving answers a bad request with a
message naming what was sent and what was expected (rank, size, channels, empty
batch, values outside the range, NaN). The input spec is therefore left open
(unknown rank); the expected shape is in the messages, in ``stn_tf.json`` and in
the README. ``assets.extra/`` holds ``tf_serving_warmup_requests`` (PredictRequests
of real test images, TF Serving's warmup format) and ``stn_tf.json`` (the run's
config, shapes and checkpoint step, read by ``export.tflite`` and the benchmarks).
The transformers' sampler runs as plain TF ops, not XLA: TF Serving and TFLite
load the graph as it is.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from pipelines import datasets
from stn_tf import cli, runs

__all__ = [
    "METADATA",
    "SIGNATURES",
    "WARMUP",
    "export_saved_model",
    "load_metadata",
    "resolve_version",
    "serving_functions",
    "test_examples",
]

SIGNATURES = ("serving_default", "serving_uint8", "crops")
METADATA = "stn_tf.json"
WARMUP = "tf_serving_warmup_requests"
WARMUP_BATCHES = (1, 8)  # one request per batch size and classifying signature


def _check_images(images, shape, dtype):
    """In-graph checks of a request; returns float32 images in [0, 1], shape known."""
    expected = f"[batch, {', '.join(str(d) for d in shape)}]"
    dims = tf.shape(images)
    rank = tf.size(dims)
    ok_rank = tf.debugging.Assert(
        tf.equal(rank, 4),
        [f"images must have rank 4, {expected}; received rank", rank, "shape", dims],
    )
    with tf.control_dependencies([ok_rank]):
        ok_shape = tf.debugging.Assert(
            tf.reduce_all(tf.equal(dims[1:], shape)),
            [f"images must be {expected} (height, width, channels); received", dims],
            summarize=8,
        )
        ok_batch = tf.debugging.Assert(
            dims[0] > 0,
            ["images is an empty batch; send at least one image", dims],
            summarize=8,
        )
    with tf.control_dependencies([ok_shape, ok_batch]):
        images = tf.reshape(images, [-1, *shape])
    if dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    ok_values = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(images)) & (low >= 0.0) & (high <= 1.0),
        [
            (
                "float32 images must be finite and in [0, 1] (the training range; "
                "send 0..255 as uint8 to serving_uint8); received min, max"
            ),
            low,
            high,
        ],
    )
    with tf.control_dependencies([ok_values]):
        return tf.identity(images)


def _thetas(outputs: dict) -> list:
    """The θ of each transformer, in order (``theta`` or ``theta_0``, ``theta_1``...)."""
    if "theta" in outputs:
        return [outputs["theta"]]
    return [outputs[k] for k in sorted(k for k in outputs if k.startswith("theta_"))]


def _crops(outputs: dict) -> list:
    if "transformed" in outputs:
        return [outputs["transformed"]]
    keys = sorted(k for k in outputs if k.startswith("transformed_"))
    return [outputs[k] for k in keys]


def serving_functions(model: keras.Model, shape) -> dict:
    """``{signature name: (function, input dtype)}`` for a model of ``stn_tf.models``."""
    shape = tuple(int(d) for d in shape)

    def classify(dtype):
        def fn(images):
            out = model(_check_images(images, shape, dtype), training=False)
            logits = out["logits"]
            result = {
                "probabilities": tf.nn.softmax(logits),
                "classes": tf.argmax(logits, -1),
            }
            result.update({f"theta_{i}": t for i, t in enumerate(_thetas(out))})
            return result

        return fn

    def crops(images):
        out = model(_check_images(images, shape, tf.float32), training=False)
        result = {f"crops_{i}": c for i, c in enumerate(_crops(out))}
        result.update({f"theta_{i}": t for i, t in enumerate(_thetas(out))})
        return result

    functions = {
        "serving_default": (classify(tf.float32), tf.float32),
        "serving_uint8": (classify(tf.uint8), tf.uint8),
    }
    if _thetas(model.output):
        functions["crops"] = (crops, tf.float32)
    return functions


def test_examples(config: runs.TrainConfig, num: int | None = None) -> dict:
    """The first ``num`` examples (default: all) of the run's fixed test set."""
    digits = runs.load_split(config, "test")
    batch_size = min(num or 500, 500)
    pipeline = datasets.Pipeline(
        config.dataset, digits, batch_size=batch_size, training=False
    )
    images, labels = [], []
    for batch in pipeline.dataset():
        images.append(batch["image"].numpy())
        labels.append(batch["label"].numpy())
        if num is not None and sum(len(x) for x in labels) >= num:
            break
    return {
        "image": np.concatenate(images)[:num],
        "label": np.concatenate(labels)[:num],
    }


def _warmup_records(name: str, functions: dict, examples: dict) -> list[bytes]:
    try:
        from tensorflow_serving.apis import (
            model_pb2,
            predict_pb2,
            prediction_log_pb2,
        )
    except ImportError as e:
        raise ImportError(
            "writing TF Serving warmup requests needs the tensorflow-serving-api protos: "
            'pip install --no-deps "tensorflow-serving-api>=2.21" (--no-deps: it would '
            "pull a second TensorFlow next to tensorflow-cpu)"
        ) from e
    records = []
    for signature in ("serving_default", "serving_uint8"):
        for size in WARMUP_BATCHES:
            images = examples["image"][:size]
            if functions[signature][1] == tf.uint8:
                images = np.round(images * 255).astype(np.uint8)
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=signature)
            )
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            records.append(log.SerializeToString())
    return records


def resolve_version(path: str | Path) -> Path:
    """A version folder itself, or the highest version under a model base folder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = _versions(path)
    if not versions:
        raise FileNotFoundError(
            f"{path} is neither a SavedModel (no saved_model.pb) nor a model base folder "
            "with numbered versions (expected the --out of python -m export.saved_model)"
        )
    return path / str(max(versions))


def load_metadata(saved_model: str | Path) -> dict:
    """``stn_tf.json`` of an exported version (config, input shape, classes)."""
    path = resolve_version(saved_model) / "assets.extra" / METADATA
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {saved_model} was not exported by export.saved_model"
        )
    return json.loads(path.read_text())


def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]


def export_saved_model(
    workdir: str | Path, out: str | Path, version: int | None = None
) -> Path:
    """Exports the latest checkpoint of ``workdir`` to ``out/<version>``; returns it.

    The version is written to a temporary folder next to it and renamed when
    complete, so TF Serving, which watches ``out``, never sees half a model.
    """
    out = Path(out)
    existing = _versions(out)
    if version is None:
        version = max(existing, default=0) + 1
    if version < 1:
        raise ValueError(f"version must be a positive integer. Received: {version}")
    target = out / str(version)
    if target.exists():
        raise FileExistsError(
            f"{target} exists; versions are never overwritten (pass another --version "
            f"or leave it out for {max(existing, default=0) + 1})"
        )
    config, model, step = runs.restore(workdir)
    spec = datasets.get_dataset(config.dataset)
    functions = serving_functions(model, spec.shape)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, dtype) in functions.items():
        archive.add_endpoint(
            name, fn, input_signature=[tf.TensorSpec(None, dtype, name="images")]
        )
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=out))
    try:
        archive.write_out(str(staging), verbose=False)
        extra = staging / "assets.extra"
        extra.mkdir()
        examples = test_examples(config, max(WARMUP_BATCHES))
        with tf.io.TFRecordWriter(str(extra / WARMUP)) as writer:
            for record in _warmup_records(out.name, functions, examples):
                writer.write(record)
        metadata = {
            "config": json.loads((Path(workdir) / "config.json").read_text()),
            "input_shape": list(spec.shape),
            "num_classes": spec.num_classes,
            "transformers": len(_thetas(model.output)),
            "step": step,
            "signatures": list(functions),
        }
        (extra / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would lock out a serving user
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# === Command line ===

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run, so the module imports clean)."""
    flags.DEFINE_string(
        "workdir", None, "Training run to export (its latest checkpoint)."
    )
    flags.DEFINE_string("out", None, "Model base folder; the version goes in out/<N>.")
    flags.DEFINE_integer(
        "version",
        None,
        "Version number (default: highest existing + 1).",
        lower_bound=1,
    )


def main(argv):
    cli.prepare(argv, required=("workdir", "out"))
    try:
        path = export_saved_model(FLAGS.workdir, FLAGS.out, FLAGS.version)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    meta = load_metadata(path)
    print(
        f"SavedModel of {FLAGS.workdir} (step {meta['step']}) in {path}\n"
        f"  signatures: {', '.join(meta['signatures'])}; input images "
        f"[batch, {', '.join(map(str, meta['input_shape']))}]\n"
        f"  inspect: saved_model_cli show --dir {path} --all"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
