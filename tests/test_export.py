"""Tests of the exports: SavedModel for TF Serving and TFLite under LiteRT.

One tiny ST-CNN is trained once per module on embedded MNIST digits; every export
is compared with that model as trained (XLA sampler) on real distorted test
examples, never with another export.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from export import saved_model as sm
from export import tflite
from stn_tf import runs, train

REPO = Path(__file__).resolve().parents[1]


def _train(workdir, model="st_cnn", transform="affine", steps=150, dataset="mnist"):
    config = train.TrainConfig(
        dataset=dataset,
        model=model,
        transform=transform,
        steps=steps,
        batch_size=32,
        learning_rate=0.02,
        momentum=0.9,
        mnist_source="embedded",
        param_budget=20_000,
        log_every=steps,
        checkpoint_every=steps,
        picture_every=10**6,
        eval_batch_size=500,
    )
    train.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "stn"
    return sm.export_saved_model(run, base)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


@pytest.fixture(scope="module")
def trained(run):
    """The model as it was trained: XLA sampler, latest checkpoint."""
    _, model, _ = runs.restore(run, jit_compile=True)
    return model


@pytest.fixture(scope="module")
def examples(run):
    config, _, _ = runs.restore(run)
    return sm.test_examples(config, 300)


# === SavedModel ===


def test_version_layout_metadata_and_no_xla(exported):
    assert exported.name == "1" and (exported / "saved_model.pb").is_file()
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]
    meta = json.loads((exported / "assets.extra" / sm.METADATA).read_text())
    assert meta["input_shape"] == [28, 28, 1] and meta["num_classes"] == 10
    assert meta["step"] == 150 and meta["config"]["model"] == "st_cnn"
    # TF Serving runs the graph as it is: no function may demand XLA.
    graph = (exported / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in graph
    assert oct(exported.stat().st_mode & 0o777) == "0o755"


def test_signatures_have_the_documented_names(loaded):
    assert set(loaded.signatures) == set(sm.SIGNATURES)
    for name, dtype in [("serving_default", tf.float32), ("serving_uint8", tf.uint8)]:
        fn = loaded.signatures[name]
        (spec,) = fn.structured_input_signature[1].values()
        assert spec.name == "images" and spec.dtype == dtype
        assert set(fn.structured_outputs) == {"probabilities", "classes", "theta_0"}
    assert set(loaded.signatures["crops"].structured_outputs) == {"crops_0", "theta_0"}


@pytest.mark.parametrize("batch", [1, 7])
def test_saved_model_equals_the_trained_model(loaded, trained, examples, batch):
    images = examples["image"][10 : 10 + batch]
    want = trained(images, training=False)
    got = loaded.signatures["serving_default"](images=tf.constant(images))
    probabilities = tf.nn.softmax(want["logits"]).numpy()
    np.testing.assert_allclose(got["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(got["theta_0"], want["theta"], atol=1e-5)
    np.testing.assert_array_equal(got["classes"], probabilities.argmax(-1))
    crops = loaded.signatures["crops"](images=tf.constant(images))
    np.testing.assert_allclose(crops["crops_0"], want["transformed"], atol=1e-5)

    pixels = np.round(images * 255).astype(np.uint8)
    got8 = loaded.signatures["serving_uint8"](images=tf.constant(pixels))
    want8 = tf.nn.softmax(trained(pixels / np.float32(255), training=False)["logits"])
    np.testing.assert_allclose(got8["probabilities"], want8, atol=1e-5)


def test_the_exported_model_classifies_test_digits(loaded, examples):
    got = loaded.signatures["serving_default"](images=tf.constant(examples["image"]))
    error = np.mean(got["classes"].numpy() != examples["label"])
    assert error < 0.5  # 150 tiny steps: far better than chance (0.9)


def test_warmup_file_holds_real_predict_requests(exported, loaded, examples):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported / "assets.extra" / sm.WARMUP
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 2 * len(sm.WARMUP_BATCHES)
    seen = []
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "stn"
        images = tf.make_ndarray(request.inputs["images"])
        signature = request.model_spec.signature_name
        seen.append((signature, images.shape[0], images.dtype))
        out = loaded.signatures[signature](images=tf.constant(images))
        assert out["probabilities"].shape == (images.shape[0], 10)
        if images.dtype == np.float32:  # real test digits, not noise
            np.testing.assert_array_equal(images, examples["image"][: len(images)])
    assert ("serving_default", 8, np.float32) in seen
    assert ("serving_uint8", 1, np.uint8) in seen


BAD_REQUESTS = {
    "rank": (np.zeros((28, 28, 1), np.float32), "must have rank 4"),
    "size": (np.zeros((2, 42, 42, 1), np.float32), r"must be \[batch, 28, 28, 1\]"),
    "channels": (np.zeros((2, 28, 28, 3), np.float32), r"received\] \[2 28 28 3\]"),
    "empty": (np.zeros((0, 28, 28, 1), np.float32), "empty batch"),
    "range": (np.full((1, 28, 28, 1), 255, np.float32), r"in \[0, 1\].*\[255\]"),
    "nan": (np.full((1, 28, 28, 1), np.nan, np.float32), "must be finite"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_clear_errors(loaded, case):
    images, message = BAD_REQUESTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["serving_default"](images=tf.constant(images))


def test_wrong_dtype_is_named(loaded):
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="float tensor but is a double"
    ):
        loaded.signatures["serving_default"](
            images=tf.zeros([1, 28, 28, 1], tf.float64)
        )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="uint8 tensor but is a float"
    ):
        loaded.signatures["serving_uint8"](images=tf.zeros([1, 28, 28, 1]))


def test_versions_are_numbered_and_never_overwritten(run, tmp_path):
    base = tmp_path / "stn"
    assert sm.export_saved_model(run, base).name == "1"
    assert sm.export_saved_model(run, base, version=5).name == "5"
    assert sm.export_saved_model(run, base).name == "6"
    before = (base / "5" / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="never overwritten"):
        sm.export_saved_model(run, base, version=5)
    assert (base / "5" / "saved_model.pb").stat().st_mtime_ns == before
    assert sorted(p.name for p in base.iterdir()) == ["1", "5", "6"]
    assert sm.resolve_version(base) == base / "6"


def test_a_workdir_without_checkpoint_or_config_is_refused(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training run: no config.json"):
        sm.export_saved_model(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        sm.export_saved_model(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# === TFLite ===

# quantisation -> (max |Δ probability|, min share of classes equal to the model's)
TOLERANCES = {"none": (1e-5, 1.0), "float16": (0.02, 0.98), "dynamic": (0.1, 0.97)}


@pytest.fixture(scope="module")
def lite_models(exported):
    return {q: tflite.convert(exported, q) for q in tflite.QUANTIZATIONS}


@pytest.mark.slow
@pytest.mark.parametrize("quantize", tflite.QUANTIZATIONS)
def test_tflite_is_builtins_only_and_matches_the_trained_model(
    lite_models, trained, examples, quantize
):
    model = tflite.LiteModel(lite_models[quantize])
    assert not [op for op in model.ops if op.startswith("Flex") or op == "CUSTOM"]
    want = trained(examples["image"], training=False)
    probabilities = tf.nn.softmax(want["logits"]).numpy()
    classes = probabilities.argmax(-1)
    for batch in (1, 7):  # the batch size resizes
        got = model(examples["image"][:batch])
        assert got["probabilities"].shape == (batch, 10)
    got = model(examples["image"])
    agree = np.mean(got["classes"] == classes)
    if quantize == "int8":
        assert model.input_dtype == np.int8
        assert model.outputs["probabilities"]["dtype"] == np.int8
        # Accuracy drop of full int8 (measured in docs/benchmarks.md): small.
        lite_error = np.mean(got["classes"] != examples["label"])
        keras_error = np.mean(classes != examples["label"])
        assert lite_error - keras_error < 0.05 and agree > 0.9
    else:
        atol, min_agree = TOLERANCES[quantize]
        np.testing.assert_allclose(got["probabilities"], probabilities, atol=atol)
        assert agree >= min_agree
    if quantize == "none":
        np.testing.assert_allclose(got["theta_0"], want["theta"], atol=1e-5)
        np.testing.assert_array_equal(got["classes"], classes)


@pytest.mark.slow
def test_a_graph_that_needs_flex_is_refused(tmp_path):
    class Flexy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
        def serve(self, images):
            images = tf.reshape(images, [-1, 8, 8, 1])
            warped = tf.raw_ops.ImageProjectiveTransformV3(
                images=images,
                transforms=tf.constant([[1.0, 0, 0, 0, 1, 0, 0, 0]]),
                output_shape=[8, 8],
                fill_value=0.0,
                interpolation="BILINEAR",
            )
            return {"probabilities": tf.reshape(warped, [-1, 64])}

    module = Flexy()
    tf.saved_model.save(
        module, str(tmp_path), signatures={"serving_default": module.serve}
    )
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / sm.METADATA).write_text(
        json.dumps({"input_shape": [8, 8, 1], "config": {}})
    )
    with pytest.raises(
        RuntimeError, match="Flex delegate for ImageProjectiveTransformV3"
    ):
        tflite.convert(tmp_path, "none")


def test_unknown_quantization_and_non_export_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown quantization 'int4'"):
        tflite.convert(tmp_path, "int4")
    with pytest.raises(FileNotFoundError, match="neither a SavedModel"):
        tflite.convert(tmp_path, "none")


# === Every model the trainer makes, and the command lines ===


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, transform, dataset",
    [
        ("fcn", "affine", "mnist"),
        ("cnn", "affine", "mnist_tc"),
        ("st_fcn", "tps", "mnist_p"),
        ("st_cnn", "projective", "mnist_r"),
        ("st_cnn", "attention", "mnist_e"),
    ],
)
def test_every_model_exports_and_converts(tmp_path, model, transform, dataset):
    workdir = _train(tmp_path / "run", model, transform, steps=2, dataset=dataset)
    version = sm.export_saved_model(workdir, tmp_path / "models" / "m")
    loaded = tf.saved_model.load(str(version))
    _, trained, _ = runs.restore(workdir, jit_compile=True)
    config, _, _ = runs.restore(workdir)
    images = sm.test_examples(config, 5)["image"]
    want = tf.nn.softmax(trained(images, training=False)["logits"]).numpy()
    got = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
    uses_st = model.startswith("st_")
    assert ("theta_0" in got) == uses_st
    assert ("crops" in loaded.signatures) == uses_st
    lite = tflite.LiteModel(tflite.convert(version, "none"))
    np.testing.assert_allclose(lite(images)["probabilities"], want, atol=1e-5)


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_command_lines_export_and_convert(run, tmp_path):
    base = tmp_path / "models" / "stn"
    done = _cli("export.saved_model", f"--workdir={run}", f"--out={base}")
    assert done.returncode == 0, done.stderr
    assert f"in {base / '1'}" in done.stdout and "serving_default" in done.stdout
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(base / "1"), "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in (
        "serving_default",
        "serving_uint8",
        "crops",
        "probabilities",
        "theta_0",
    ):
        assert name in shown
    out = tmp_path / "stn.tflite"
    done = _cli(
        "export.tflite", f"--saved_model={base}", "--quantize=dynamic", f"--out={out}"
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "builtin ops only" in done.stdout
    refused = _cli("export.saved_model", f"--workdir={tmp_path}", f"--out={base}")
    assert refused.returncode != 0 and "no config.json" in refused.stderr
    missing = _cli("export.tflite", f"--saved_model={base}")
    assert missing.returncode != 0 and "--out is required" in missing.stderr
