"""Converts an exported SavedModel to TFLite, builtin ops only, and runs it with LiteRT.

    python -m stn_tf.export.tflite --saved_model=models/stn --quantize=int8 --out=stn_int8.tflite

``--saved_model`` is a version folder or a model base folder (its highest
version). The ``serving_default`` signature is converted: input ``images``
``[B, H, W, C]`` (float32 in [0, 1]; int8 for ``--quantize=int8``), outputs
``probabilities``, ``classes`` and ``theta_<i>``; the batch size can be resized.

Quantisation: ``none`` (float32), ``float16`` (float16 weights), ``dynamic``
(int8 weights, float activations) and ``int8`` (everything int8, calibrated on
examples of the run's own distorted test split, int8 inputs and outputs).
The conversion uses TFLite builtins only: if the graph needed the Flex delegate
(TF Select ops) it fails and names the ops.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import app, flags

from stn_tf import cli, runs
from stn_tf.export import saved_model as saved_model_lib

__all__ = ["CALIBRATION_EXAMPLES", "QUANTIZATIONS", "LiteModel", "convert"]

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
CALIBRATION_EXAMPLES = 200
SIGNATURE = "serving_default"


def convert(
    saved_model: str | Path,
    quantize: str = "none",
    calibration: np.ndarray | None = None,
) -> bytes:
    """The TFLite flatbuffer of a SavedModel's ``serving_default``.

    Args:
        saved_model: a version folder, or a base folder (highest version): from
            ``stn_tf.export.saved_model`` (a run or ``export_model``), or any SavedModel
            whose ``serving_default`` takes one tensor of known shape past the batch
            axis (``model.export()``).
        quantize: one of ``QUANTIZATIONS``.
        calibration: float32 inputs ``[N, *shape]`` for ``int8``; default, for an
            exported run: the first ``CALIBRATION_EXAMPLES`` examples of its test
            split, through its own test pipeline.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization {quantize!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    path = saved_model_lib.resolve_version(saved_model)
    meta = saved_model_lib.load_metadata(path) or {}
    loaded = tf.saved_model.load(str(path))
    signature, input_name, dtype, shape = _one_input_signature(loaded, path, meta)

    # The signature takes any batch (ours: any shape, checked in the graph); TFLite
    # wants the shape it will run, with a resizable batch.
    @tf.function(input_signature=[tf.TensorSpec([None, *shape], dtype)])
    def serve(images):
        return signature(**{input_name: images})

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], loaded
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        calibration = _calibration(path, meta, calibration, shape)
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return _builtins_only(converter, path, quantize)


def _one_input_signature(loaded, path, meta):
    """``serving_default``, its one input's name and dtype, and that input's shape
    past the batch axis (from the run's metadata, else from the signature)."""
    if SIGNATURE not in loaded.signatures:
        raise ValueError(
            f"{path} has no {SIGNATURE} signature to convert; it has "
            f"{sorted(loaded.signatures) or 'none'}"
        )
    signature = loaded.signatures[SIGNATURE]
    (input_name, spec), *others = signature.structured_input_signature[1].items()
    if others:
        raise ValueError(
            f"{path}: {SIGNATURE} takes {1 + len(others)} inputs; TFLite conversion "
            "here takes models with one input tensor"
        )
    if "input_shape" in meta:
        shape = list(meta["input_shape"])
    elif spec.shape.rank and None not in spec.shape[1:]:
        shape = spec.shape.as_list()[1:]
    else:
        raise ValueError(
            f"{path}: the shape of {SIGNATURE}'s input {input_name!r} past the batch "
            f"axis is not known ({spec.shape}) and there is no {saved_model_lib.METADATA}; "
            "export the model with stn_tf.export.saved_model.export_model"
        )
    return signature, input_name, spec.dtype, shape


def _calibration(path, meta, calibration, shape) -> np.ndarray:
    """int8's calibration inputs: those given, or an exported run's first test
    examples through its own test pipeline."""
    if calibration is None:
        if "config" not in meta:
            raise ValueError(
                f"int8 calibrates on example inputs: {path} is not an exported "
                "training run, so pass calibration images (--calibration=FILE.npy)"
            )
        config = runs.config_from_saved(meta["config"])  # as restore reads it
        examples = saved_model_lib.test_examples(config, CALIBRATION_EXAMPLES)
        calibration = examples["image"]
    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != len(shape) + 1 or list(calibration.shape[1:]) != shape:
        raise ValueError(
            f"calibration images must be [N, {', '.join(map(str, shape))}]. "
            f"Received: shape={calibration.shape}"
        )
    return calibration


def _builtins_only(converter, path, quantize) -> bytes:
    """Converts, refusing a model that would need the Flex delegate."""
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # ConverterError's text is an MLIR dump: say what matters
        text = str(e)
        needed = re.findall(r"(?:TF Select ops|Flex ops): ([^\n]+)", text)
        unsupported = re.findall(r"'(tfl?\.\w+)' op [^\n]*not supported[^\n]*", text)
        raise RuntimeError(
            f"{path} does not convert to TFLite builtins ({quantize}): "
            + (
                f"it would need the Flex delegate for {'; '.join(needed)}"
                if needed
                else f"{'; '.join(sorted(set(unsupported))) or text.splitlines()[-1]}"
            )
        ) from e
    flex = [op for op in LiteModel(flatbuffer).ops if op.startswith("Flex")]
    if flex:
        raise RuntimeError(
            f"the TFLite model needs Flex ops {flex}; refusing to write it"
        )
    return flatbuffer


class LiteModel:
    """A TFLite model under the LiteRT interpreter, called like the SavedModel.

    ``model(images)`` takes float32 inputs at any batch size, quantises them for
    an int8 model, and returns the outputs as float32 (dequantised) or int64
    (``classes``) NumPy arrays. Any model with one input in its ``serving_default``
    signature works (ours call it ``images``; another name is taken as it is).
    """

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ValueError(
                f"the TFLite model has no {SIGNATURE} signature; it has "
                f"{sorted(signatures) or 'none'} (convert with stn_tf.export.tflite)"
            )
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()
        if len(self.inputs) != 1:
            raise ValueError(
                f"LiteModel runs models with one input; this one has {sorted(self.inputs)}"
            )
        (self.input_name,) = self.inputs

    @property
    def ops(self) -> list[str]:
        """The op names of the graph, sorted."""
        details = self.interpreter._get_ops_details()  # no public API lists them
        return sorted({op["op_name"] for op in details})

    @property
    def input_dtype(self):
        return self.inputs[self.input_name]["dtype"]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images, np.float32)
        detail = self.inputs[self.input_name]
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            images = np.clip(np.round(images / scale + zero), info.min, info.max)
            images = images.astype(detail["dtype"])
        out = self.runner(**{self.input_name: images})
        result = {}
        for name, value in out.items():
            scale, zero = self.outputs[name]["quantization"]
            if scale and name != "classes":
                value = (value.astype(np.float32) - zero) * scale
            result[name] = value
        return result


# === Command line ===

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run, so the module imports clean)."""
    flags.DEFINE_string(
        "saved_model", None, "Exported SavedModel: a version folder or a base folder."
    )
    flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS), "Quantisation.")
    flags.DEFINE_string("out", None, "The .tflite file to write.")
    flags.DEFINE_string(
        "calibration",
        None,
        "int8: a .npy of float32 inputs [N, ...] to calibrate on (default, for an "
        "exported run: its own test examples).",
    )


def main(argv):
    cli.prepare(argv, required=("saved_model", "out"))
    try:
        calibration = np.load(FLAGS.calibration) if FLAGS.calibration else None
        flatbuffer = convert(FLAGS.saved_model, FLAGS.quantize, calibration)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(flatbuffer)
    partial.replace(out)
    model = LiteModel(flatbuffer)
    shape = model.inputs[model.input_name]["shape_signature"].tolist()
    print(
        f"TFLite ({FLAGS.quantize}) of {saved_model_lib.resolve_version(FLAGS.saved_model)} "
        f"in {out}: {len(flatbuffer) / 1024:.0f} KiB, builtin ops only "
        f"({len(model.ops)} kinds), input {model.input_name} {shape} "
        f"{np.dtype(model.input_dtype).name}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
