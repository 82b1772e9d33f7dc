"""Exports a trained run, or any Keras model with stn_tf layers, for TF Serving.

    python -m stn_tf.export.saved_model --workdir=runs/quickstart --out=models/stn
    python -m stn_tf.export.saved_model --keras=my_model.keras --out=models/mine

The first writes ``models/stn/N/`` (N: one more than the highest version there, or
``--serving_version=N``; an existing version is never overwritten). ``--examples=x.npy``
gives a model of your own its warmup requests. A trained run gets these signatures:

- ``serving_default``: ``images`` float32 ``[B, H, W, C]`` in [0, 1] (the training
  range) -> ``probabilities`` ``[B, classes]`` (``[B, T, classes]`` for sequences),
  ``classes`` ``[B]`` int64 and ``theta_<i>``, the pose found by transformer ``i``;
- ``serving_uint8``: the same, for ``images`` uint8 in 0..255;
- ``serving_bytes`` (CUB and SVHN, the real-image sets): ``image_bytes``, a batch
  ``[B]`` of encoded JPEG or PNG strings, decoded, resized and centre-cropped in
  the graph exactly as the run's test pipeline prepares a stored image, so a
  client posts a photo (REST: ``{"instances": [{"b64": "..."}]}``);
- ``crops``: ``images`` float32 -> ``crops_<i>`` (what transformer ``i`` passes on)
  and ``theta_<i>``, for inspection.

A model a user built (``export_model``, or ``--keras``) gets ``serving_default``
(its outputs under their names, ``output`` for a single tensor) and, when its
inputs have a value range, ``serving_uint8`` (0..255 mapped onto that range).

Inputs are checked inside the graph, so TF Serving answers a bad request with
``INVALID_ARGUMENT`` and a message naming what was sent and what was expected
(rank, size, channels, empty batch, values outside the range, NaN, strings that are
not JPEG or PNG). The input spec is therefore left open (unknown rank); the
expected shape is in the messages, in ``stn_tf.json`` and in the README.
``assets.extra/`` holds ``tf_serving_warmup_requests`` (PredictRequests of real
test images, TF Serving's warmup format) and ``stn_tf.json`` (shapes, signatures,
the preprocessing a client must apply and, for a run, its config and step; read
by ``stn_tf.export.tflite`` and the benchmarks).

The transformers' sampler runs as plain TF ops, not XLA: every stn_tf layer's
``jit_compile`` is switched off while the graph is traced, so TF Serving and
TFLite load the graph as it is (a ``model.export()`` of a layer left at
``jit_compile=True`` would hold ``_XlaMustCompile`` functions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from stn_tf import cli, runs
from stn_tf.layers import transformers_in
from stn_tf.pipelines import cub

__all__ = [
    "BYTES_INPUT",
    "METADATA",
    "SIGNATURES",
    "WARMUP",
    "export_model",
    "export_saved_model",
    "load_metadata",
    "plain_graph",
    "resolve_version",
    "serving_functions",
    "test_examples",
]

SIGNATURES = ("serving_default", "serving_uint8", "serving_bytes", "crops")
BYTES_INPUT = "image_bytes"
METADATA = "stn_tf.json"
WARMUP = "tf_serving_warmup_requests"
WARMUP_BATCHES = (1, 8)  # one request per batch size and classifying signature
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


# === Requests, checked in the graph ===


def _check_images(images, shape, dtype, value_range=(0.0, 1.0)):
    """In-graph checks of a request; returns float32 images, shape known.

    uint8 images are mapped from 0..255 onto ``value_range``; float32 ones must be
    finite and (unless ``value_range`` is None) inside it.
    """
    expected = f"[batch, {', '.join(str(d) for d in shape)}]"
    dims = tf.shape(images)
    rank = tf.size(dims)
    ok_rank = tf.debugging.Assert(
        tf.equal(rank, len(shape) + 1),
        [
            f"images must have rank {len(shape) + 1}, {expected}; received rank",
            rank,
            "shape",
            dims,
        ],
    )
    with tf.control_dependencies([ok_rank]):
        ok_shape = tf.debugging.Assert(
            tf.reduce_all(tf.equal(dims[1:], shape)),
            [f"images must be {expected}; received", dims],
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
        low, high = value_range
        return low + tf.cast(images, tf.float32) * ((high - low) / 255.0)
    finite = tf.math.is_finite(images)
    non_finite = tf.size(images) - tf.math.count_nonzero(finite, dtype=tf.int32)
    ok_finite = tf.debugging.Assert(
        tf.reduce_all(finite),
        ["float32 images must be finite; received non-finite values:", non_finite],
    )
    if value_range is None:
        checks = [ok_finite]
    else:
        with tf.control_dependencies([ok_finite]):  # NaN is named as NaN
            low, high = tf.reduce_min(images), tf.reduce_max(images)
            ok_range = tf.debugging.Assert(
                (low >= value_range[0]) & (high <= value_range[1]),
                [
                    (
                        f"float32 images must be in [{value_range[0]:g}, "
                        f"{value_range[1]:g}] (the training range; send 0..255 as "
                        "uint8 to serving_uint8); received min, max"
                    ),
                    low,
                    high,
                ],
            )
        checks = [ok_finite, ok_range]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def _decode_images(encoded, decode, shape):
    """``[B]`` encoded JPEG/PNG strings -> ``[B, *shape]`` float32, checked first."""
    dims = tf.shape(encoded)
    ok_rank = tf.debugging.Assert(
        tf.equal(tf.size(dims), 1),
        [
            f"{BYTES_INPUT} must be a batch [batch] of encoded JPEG or PNG strings; "
            "received shape",
            dims,
        ],
        summarize=8,
    )
    with tf.control_dependencies([ok_rank]):
        encoded = tf.reshape(encoded, [-1])
    known = tf.equal(tf.strings.substr(encoded, 0, len(_JPEG)), _JPEG) | tf.equal(
        tf.strings.substr(encoded, 0, len(_PNG)), _PNG
    )
    ok_batch = tf.debugging.Assert(
        tf.size(encoded) > 0,
        [f"{BYTES_INPUT} is an empty batch; send at least one image"],
    )
    ok_format = tf.debugging.Assert(
        tf.reduce_all(known),
        [
            f"{BYTES_INPUT} must hold encoded JPEG or PNG images; these entries are "
            "not (index, then length in bytes; empty strings have length 0):",
            tf.where(~known)[:, 0],
            tf.boolean_mask(tf.strings.length(encoded), ~known),
        ],
        summarize=8,
    )
    with tf.control_dependencies([ok_batch, ok_format]):
        encoded = tf.identity(encoded)
    return tf.map_fn(
        decode, encoded, fn_output_signature=tf.TensorSpec(shape, tf.float32)
    )


# === Signatures ===


def _indexed(outputs: dict, single: str, prefix: str) -> list:
    """``outputs[single]`` or ``outputs[prefix_0], outputs[prefix_1], ...``."""
    if single in outputs:
        return [outputs[single]]
    return [outputs[k] for k in sorted(k for k in outputs if k.startswith(prefix))]


def serving_functions(
    model: keras.Model, shape: Sequence[int], decode: Callable | None = None
) -> dict:
    """``{signature: (function, input spec)}`` for a model of ``stn_tf.models``.

    Args:
        model: a model whose output is ``{"logits"[, "theta", "transformed"]}``.
        shape: one example's shape.
        decode: ``encoded string -> float32 example``; adds ``serving_bytes``.
    """
    shape = tuple(int(d) for d in shape)
    forward = _traced_once(model, shape)

    def predict(images):
        out = forward(images)
        logits = out["logits"]
        result = {
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, -1),
        }
        thetas = _indexed(out, "theta", "theta_")
        result.update({f"theta_{i}": t for i, t in enumerate(thetas)})
        return result

    def crops(images):
        out = forward(_check_images(images, shape, tf.float32))
        result = {
            f"crops_{i}": c
            for i, c in enumerate(_indexed(out, "transformed", "transformed_"))
        }
        thetas = _indexed(out, "theta", "theta_")
        result.update({f"theta_{i}": t for i, t in enumerate(thetas)})
        return result

    images = lambda dtype: tf.TensorSpec(None, dtype, name="images")  # noqa: E731
    functions = {
        "serving_default": (
            lambda x: predict(_check_images(x, shape, tf.float32)),
            images(tf.float32),
        ),
        "serving_uint8": (
            lambda x: predict(_check_images(x, shape, tf.uint8)),
            images(tf.uint8),
        ),
    }
    if decode is not None:
        functions["serving_bytes"] = (
            lambda x: predict(_decode_images(x, decode, shape)),
            tf.TensorSpec(None, tf.string, name=BYTES_INPUT),
        )
    if _indexed(model.output, "theta", "theta_"):
        functions["crops"] = (crops, images(tf.float32))
    return functions


def _traced_once(
    model: keras.Model, shape: tuple[int, ...]
) -> tf.types.experimental.GenericFunction:
    """The model's inference as one ``tf.function`` that every signature calls.

    A signature that calls the model itself traces it anew: with four signatures
    a SavedModel held the model's graph four times, and the 111M-parameter CUB
    model took four traces to export. Called through one function, the graph is
    traced once and stored once; TF Serving and the TFLite converter inline the
    call.
    """
    return tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="images")],
    )


def _named_outputs(out) -> dict:
    """A model's outputs as a signature's named outputs."""
    if isinstance(out, dict):
        return dict(out)
    if isinstance(out, (list, tuple)):
        return {f"output_{i}": o for i, o in enumerate(out)}
    return {"output": out}


@contextlib.contextmanager
def plain_graph(model: keras.Layer) -> Iterator[None]:
    """Switches the XLA sampler of every stn_tf layer in ``model`` off, and back.

    A graph traced inside runs the sampler as plain TF ops, which TF Serving and
    the TFLite converter take as they are (XLA-compiled functions carry
    ``_XlaMustCompile``, which TFLite cannot convert and a serving build without
    XLA cannot run). The outputs are the same (tests/test_layers.py).
    """
    found = transformers_in(model, recursive=True)
    before = [layer.jit_compile for layer in found]
    for layer in found:
        layer.jit_compile = False
    try:
        yield
    finally:
        for layer, value in zip(found, before):
            layer.jit_compile = value


# === Examples ===


def test_examples(config: runs.TrainConfig, num: int | None = None) -> dict:
    """The first ``num`` examples (default: all) of the run's fixed test set,
    through the run's own test pipeline (distorted MNIST, or the CUB/SVHN images
    resized and cropped as evaluation does)."""
    return _first_examples(runs.Run.of(config), num)


def _first_examples(run: runs.Run, num: int | None) -> dict:
    batch_size = min(num or 500, 500)
    pipeline = run.pipeline("test", batch_size=batch_size, training=False)
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


def _warmup_records(name: str, requests: list) -> list[bytes]:
    """PredictionLogs of ``(signature, input name, array)`` requests."""
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
    for signature, input_name, value in requests:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=name, signature_name=signature)
        )
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def _image_requests(images, signatures, value_range=(0.0, 1.0)) -> list:
    """Warmup requests of ``images`` (float32) at each batch size of ``WARMUP_BATCHES``
    for ``serving_default`` and, where it exists, ``serving_uint8``."""
    requests = []
    for size in WARMUP_BATCHES:
        batch = np.asarray(images[:size], np.float32)
        requests.append(("serving_default", "images", batch))
        if "serving_uint8" in signatures:
            low, high = value_range
            pixels = np.round((batch - low) * (255.0 / (high - low)))
            requests.append(
                ("serving_uint8", "images", np.clip(pixels, 0, 255).astype(np.uint8))
            )
    return requests


# === Versions ===


def resolve_version(path: str | Path) -> Path:
    """A version folder itself, or the highest version under a model base folder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = _versions(path)
    if not versions:
        raise FileNotFoundError(
            f"{path} is neither a SavedModel (no saved_model.pb) nor a model base folder "
            "with numbered versions (expected the --out of "
            "python -m stn_tf.export.saved_model)"
        )
    return path / str(max(versions))


def load_metadata(saved_model: str | Path) -> dict | None:
    """``stn_tf.json`` of an exported version, or None for a SavedModel made
    elsewhere (``model.export()``, ``tf.saved_model.save``)."""
    path = resolve_version(saved_model) / "assets.extra" / METADATA
    return json.loads(path.read_text()) if path.is_file() else None


def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]


def _target(out: Path, version: int | None) -> Path:
    existing = _versions(out)
    if version is None:
        version = max(existing, default=0) + 1
    if version < 1:
        raise ValueError(f"version must be a positive integer. Received: {version}")
    target = out / str(version)
    if target.exists():
        raise FileExistsError(
            f"{target} exists; versions are never overwritten (pass another "
            f"--serving_version or leave it out for {max(existing, default=0) + 1})"
        )
    return target


def _track_weights_once(archive: keras.export.ExportArchive, model) -> None:
    """Gives the SavedModel the model's weights as ``variables``,
    ``trainable_variables`` and ``non_trainable_variables``, each stored once.

    ``ExportArchive.track`` lists the ``keras.Variable`` wrappers while the
    endpoints capture the ``tf.Variable`` inside each; the checkpoint tells
    objects apart by identity, so it writes every weight twice and every loader,
    TF Serving included, restores both (keras-team/keras#23553). Listing the
    ``tf.Variable`` objects themselves makes both references one. Weights, not
    all variables: a dropout layer's seed state serves no request. Our models
    hold no lookup tables, the other thing ``track`` collects.
    """
    for name, weights in [
        ("variables", model.weights),
        ("trainable_variables", model.trainable_weights),
        ("non_trainable_variables", model.non_trainable_weights),
    ]:
        archive.add_variable_collection(name, [_tf_variable(w) for w in weights])


def _tf_variable(variable) -> tf.Variable:
    # Outside a layer's call no autocast scope is active, so .value is the
    # tf.Variable the endpoints captured, not a cast copy.
    value = getattr(variable, "value", variable)
    if not isinstance(value, tf.Variable):
        raise TypeError(
            f"expected {variable.path} to hold a tf.Variable, found {type(value)}"
        )
    return value


def _write_version(
    target: Path, model, functions: dict, requests: Callable[[], list], metadata
) -> Path:
    """Writes the SavedModel to a temporary folder next to ``target`` and renames it
    when complete, so TF Serving, which watches the base folder, never sees half a
    model."""
    archive = keras.export.ExportArchive()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with plain_graph(model):
            for name, (fn, spec) in functions.items():
                archive.add_endpoint(name, fn, input_signature=[spec])
            _track_weights_once(archive, model)
            archive.write_out(str(staging), verbose=False)
        if b"_XlaMustCompile" in (staging / "saved_model.pb").read_bytes():
            raise ValueError(
                "the model runs XLA-compiled functions that are not stn_tf layers' "
                "(a layer or model with jit_compile=True); TF Serving without XLA and "
                "TFLite cannot run them: turn their jit_compile off before exporting"
            )
        extra = staging / "assets.extra"
        extra.mkdir()
        records = _warmup_records(target.parent.name, requests())
        if records:
            with tf.io.TFRecordWriter(str(extra / WARMUP)) as writer:
                for record in records:
                    writer.write(record)
        metadata = {**metadata, "signatures": list(functions)}
        (extra / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would lock out a serving user
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# === Exports ===


def export_saved_model(
    workdir: str | Path,
    out: str | Path,
    version: int | None = None,
    *,
    restored: tuple | None = None,
) -> Path:
    """Exports the latest checkpoint of ``workdir`` (or a preset: a bundled name
    or a preset directory) to ``out/<version>``; returns it.

    Everything comes from the run's own config: the input shape (``image_size``
    for CUB and SVHN, volumes, addition's two channels, sequences), the warmup
    requests (its test pipeline's first examples) and, for CUB and SVHN, the
    in-graph decoding of ``serving_bytes``. ``restored``: what
    ``runs.restore(workdir)`` returned, where the caller holds it already (a
    111M-parameter CUB model takes ~20 s to build and restore).
    """
    target = _target(Path(out), version)
    config, model, step = restored or runs.restore(workdir)
    run = runs.Run.of(config)
    spec = run.data
    decode = run.decoder()
    functions = serving_functions(model, spec.shape, decode)

    def requests():
        images = _first_examples(run, max(WARMUP_BATCHES))["image"]
        found = _image_requests(images, functions)
        if decode is not None:
            encoded = run.encoded_examples("test", max(WARMUP_BATCHES))
            found += [
                ("serving_bytes", BYTES_INPUT, np.array(encoded[:size], object))
                for size in WARMUP_BATCHES
            ]
        return found

    shape = ", ".join(map(str, spec.shape))
    preprocessing = {
        "images": f"float32 [batch, {shape}] in [0, 1] (serving_default, crops); "
        "uint8 0..255 (serving_uint8)"
    }
    if decode is not None:
        preprocessing[BYTES_INPUT] = (
            "[batch] encoded JPEG or PNG strings (serving_bytes), decoded to RGB, "
            + spec.decoding()
        )
    metadata = {
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "input_shape": list(spec.shape),
        "value_range": [0.0, 1.0],
        "num_classes": spec.num_classes,
        "transformers": len(_indexed(model.output, "theta", "theta_")),
        "step": step,
        "preprocessing": preprocessing,
    }
    return _write_version(target, model, functions, requests, metadata)


def _checked_inputs(
    model, examples, value_range
) -> tuple[tuple[int, ...], np.ndarray | None]:
    """``export_model``'s arguments checked: the model's input shape past the
    batch axis, and the warmup examples as float32 (or None)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: {type(model)}")
    if len(model.inputs or ()) != 1 or None in model.inputs[0].shape[1:]:
        received = [tuple(x.shape) for x in model.inputs or ()]
        raise ValueError(
            "export_model takes a model with one input whose shape past the batch "
            f"axis is known (build it on keras.Input(shape)). Received inputs: {received}"
        )
    if value_range is not None and not value_range[0] < value_range[1]:
        raise ValueError(f"value_range must be (low, high). Received: {value_range}")
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if examples is not None:
        examples = np.asarray(examples, np.float32)
        if examples.shape[1:] != shape or not len(examples):
            raise ValueError(
                f"examples must be [N, {', '.join(map(str, shape))}] for the model's "
                f"input. Received: shape={examples.shape}"
            )
    return shape, examples


def _described_input(shape, value_range) -> str:
    """The metadata's words for the ``images`` input."""
    text = f"float32 [batch, {', '.join(map(str, shape))}]"
    if value_range is None:
        return text
    return text + f" in [{value_range[0]:g}, {value_range[1]:g}]"


def export_model(
    model: keras.Model,
    out: str | Path,
    *,
    examples: np.ndarray | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    version: int | None = None,
) -> Path:
    """Exports any Keras model (stn_tf layers inside or not) for TF Serving.

    The graph runs the stn_tf layers without XLA (``plain_graph``). The model
    must have one input with a known shape past the batch axis.

    Args:
        model: the model; it is called with ``training=False``.
        out: the model base folder; the version goes in ``out/<version>``.
        examples: float32 inputs ``[N, *shape]`` for the warmup requests
            (none written without them).
        value_range: the range of the model's float inputs: requests outside it
            are refused, and ``serving_uint8`` maps 0..255 onto it. None: any
            finite values, no ``serving_uint8``.
        version: default one more than the highest there.

    Returns:
        The version folder. Signatures: ``serving_default`` (input ``images``
        float32; outputs the model's, named by its output dict's keys, or
        ``output`` / ``output_<i>``) and ``serving_uint8``.
    """
    shape, examples = _checked_inputs(model, examples, value_range)
    target = _target(Path(out), version)

    forward = _traced_once(model, shape)

    def serve(dtype):
        return lambda x: _named_outputs(
            forward(_check_images(x, shape, dtype, value_range))
        )

    functions = {
        "serving_default": (
            serve(tf.float32),
            tf.TensorSpec(None, tf.float32, "images"),
        )
    }
    if value_range is not None:
        functions["serving_uint8"] = (
            serve(tf.uint8),
            tf.TensorSpec(None, tf.uint8, "images"),
        )
    requests = lambda: (  # noqa: E731
        [] if examples is None else _image_requests(examples, functions, value_range)
    )
    metadata = {
        "model": model.name,
        "input_shape": list(shape),
        "value_range": None if value_range is None else list(map(float, value_range)),
        "preprocessing": {"images": _described_input(shape, value_range)},
    }
    return _write_version(target, model, functions, requests, metadata)


# === Command line ===

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run, so the module imports clean)."""
    flags.DEFINE_string(
        "workdir", None, "Training run to export (its latest checkpoint)."
    )
    flags.DEFINE_string(
        "preset",
        None,
        "Instead of --workdir: a bundled preset's name, or a preset directory.",
    )
    flags.DEFINE_string(
        "keras",
        None,
        "Instead of --workdir: a .keras file of your own model (stn_tf layers load "
        "without custom_objects).",
    )
    flags.DEFINE_string(
        "examples",
        None,
        "With --keras: a .npy of float32 inputs [N, ...] for the warmup requests.",
    )
    flags.DEFINE_string(
        "value_range",
        "0,1",
        "With --keras: LOW,HIGH of the model's float inputs (requests outside are "
        "refused; serving_uint8 maps 0..255 onto it), or 'any'.",
    )
    flags.DEFINE_string("out", None, "Model base folder; the version goes in out/<N>.")
    flags.DEFINE_integer(
        "serving_version",
        None,
        "The SavedModel's version number, its folder under --out (default: highest "
        "existing + 1).",
        lower_bound=1,
    )


def _value_range(text: str) -> tuple[float, float] | None:
    if text == "any":
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise app.UsageError(
            f"--value_range must be LOW,HIGH or 'any'. Received: {text!r}"
        ) from None
    return low, high


def main(argv):
    cli.prepare(argv, required=("out",))
    kind, source = cli.source(("workdir", "preset", "keras"))
    try:
        if kind != "keras":
            path = export_saved_model(source, FLAGS.out, FLAGS.serving_version)
        else:
            model = keras.saving.load_model(FLAGS.keras)
            examples = np.load(FLAGS.examples) if FLAGS.examples else None
            path = export_model(
                model,
                FLAGS.out,
                examples=examples,
                value_range=_value_range(FLAGS.value_range),
                version=FLAGS.serving_version,
            )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    meta = load_metadata(path)
    step = f" (step {meta['step']})" if "step" in meta else ""
    print(
        f"SavedModel of {source}{step} in {path}\n"
        f"  signatures: {', '.join(meta['signatures'])}; input images "
        f"[batch, {', '.join(map(str, meta['input_shape']))}]\n"
        f"  inspect: saved_model_cli show --dir {path} --all"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
