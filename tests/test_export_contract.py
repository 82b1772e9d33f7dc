"""The used-by chain of every model the trainer makes: train -> .keras -> TF Serving
SavedModel (every signature, a bad request) -> TFLite under LiteRT.

Each registered model family is trained 1-2 steps through the training command on
tiny data, then ``check_serving_contract`` takes its run the whole way. The CUB and
SVHN runs of ``test_cub`` and ``test_svhn`` end in the same check.
"""

import gc
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_classes_are_top, run_python, run_train_cli

from stn_tf import models, runs
from stn_tf.export import saved_model as sm
from stn_tf.export import tflite


def _softmax(logits):
    return tf.nn.softmax(logits).numpy()


def _in_a_new_python(keras_file, images, saved_model, lite_file, tmp_path):
    """One new Python, as users start them: it loads the ``.keras`` file without
    custom_objects and returns its ``logits`` for ``images``, then converts the
    SavedModel to ``lite_file`` with the ``stn-tflite`` command's main (the
    converter needs ~9 GB for the 111M-parameter CUB model: none of it stays here).
    One process for both: each new Python costs seconds of imports."""
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import sys
        import keras, numpy as np
        import stn_tf  # registers every class: the README's promise
        from stn_tf import cli
        model = keras.saving.load_model({str(keras_file)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        np.save({str(tmp_path / "logits.npy")!r}, model(images, training=False)["logits"])
        del model
        sys.argv = ["stn-tflite", "--saved_model={saved_model}", "--out={lite_file}"]
        cli.tflite()
        """
    )
    run_python(script, timeout=900)
    return np.load(tmp_path / "logits.npy")


def check_serving_contract(workdir, tmp_path, *, atol=1e-5, num=3):
    """Asserts every link of the chain for a trained run (see the module docstring)."""
    restored = runs.restore(workdir)
    config, model, _ = restored
    images = sm.test_examples(config, num)["image"]
    want = model(images, training=False)
    # NaN compares equal to NaN below: a diverged run would check nothing.
    assert np.isfinite(want["logits"]).all(), (
        "the trained model's logits are not finite"
    )
    probabilities = _softmax(want["logits"])
    has_st = "theta" in want

    # SavedModel: every signature, equal to the model; bad requests refused.
    version = sm.export_saved_model(
        workdir, tmp_path / "serving" / "model", restored=restored
    )
    entries = tf.train.list_variables(str(version / "variables" / "variables"))
    stored = sum(int(np.prod(s)) for n, s in entries if "OBJECT_GRAPH" not in n)
    assert stored == model.count_params()  # each weight once (keras#23553)
    loaded = tf.saved_model.load(str(version))
    decode = runs.decoder(config)
    expected = {"serving_default", "serving_uint8"}
    expected |= {"crops"} if has_st else set()
    expected |= {"serving_bytes"} if decode else set()
    assert set(loaded.signatures) == expected
    assert sm.load_metadata(version)["input_shape"] == list(images.shape[1:])
    got = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(got["probabilities"], probabilities, atol=atol)
    assert_classes_are_top(got["classes"], probabilities, atol)
    pixels = np.round(images * 255).astype(np.uint8)
    got8 = loaded.signatures["serving_uint8"](images=tf.constant(pixels))
    want8 = _softmax(model(pixels / np.float32(255), training=False)["logits"])
    np.testing.assert_allclose(got8["probabilities"], want8, atol=atol)
    if has_st:
        np.testing.assert_allclose(got["theta_0"], want["theta"], atol=atol)
        crops = loaded.signatures["crops"](images=tf.constant(images))
        np.testing.assert_allclose(crops["crops_0"], want["transformed"], atol=atol)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be \[batch"):
        wrong = np.zeros((1, *[d + 1 for d in images.shape[1:]]), np.float32)
        loaded.signatures["serving_default"](images=tf.constant(wrong))
    if decode:
        # A client posts the stored images, encoded: the graph decodes, resizes and
        # crops them exactly as the test pipeline did.
        encoded = runs.encoded_examples(config, "test", num)
        got_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
        np.testing.assert_allclose(got_bytes["probabilities"], probabilities, atol=atol)
        bad = tf.constant([encoded[0], b"", b"GIF89a not a photo"])
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=r"JPEG or PNG.*\[1 2\] \[0 18\]"
        ):
            loaded.signatures["serving_bytes"](image_bytes=bad)

    # .keras: saved, then loaded by a new Python without custom_objects; TFLite
    # (float32), converted there by the command line's main, builtins only, equal
    # to the SavedModel under LiteRT.
    model.save(tmp_path / "model.keras")
    lite_file = tmp_path / "model.tflite"
    logits = _in_a_new_python(
        tmp_path / "model.keras", images, version, lite_file, tmp_path
    )
    np.testing.assert_allclose(logits, want["logits"], atol=atol, rtol=1e-5)
    lite = tflite.LiteModel(lite_file)
    assert not [op for op in lite.ops if op.startswith("Flex") or op == "CUSTOM"]
    got_lite = lite(images)
    np.testing.assert_allclose(
        got_lite["probabilities"], got["probabilities"], atol=atol
    )
    if has_st:
        np.testing.assert_allclose(got_lite["theta_0"], got["theta_0"], atol=atol)
    del model, loaded, lite
    keras.backend.clear_session()
    gc.collect()
    return version


# (model, dataset, transform): every model family of the MNIST experiments, each
# transform of ST-CNN.
MNIST_RUNS = [
    ("fcn", "mnist", None),
    ("cnn", "mnist_rts", None),
    ("st_fcn", "mnist_p", "tps"),
    *[("st_cnn", "mnist_rts", t) for t in models.TRANSFORMS_2D],
    ("st_fcn_2x", "mnist_addition", "affine"),
    ("rnn_spn", "mnist_sequence", "affine"),
    ("ffn_spn", "mnist_sequence", "attention"),
    ("conv_net", "mnist_sequence", None),
    ("st_cnn_3d", "mnist_3d", "affine3d"),
    ("cnn_3d", "mnist_3d", None),
]


def test_every_registered_model_is_covered():
    covered = {name for name, _, _ in MNIST_RUNS}
    real = {
        "st_inception",
        "svhn_cnn",
        "st_cnn_single",
        "st_cnn_multi",
    }  # test_cub, test_svhn
    assert covered | real == set(models.MODELS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, dataset, transform",
    MNIST_RUNS,
    ids=[f"{m}-{t}" if t else m for m, _, t in MNIST_RUNS],
)
def test_trained_run_goes_to_serving_and_tflite(
    tmp_path, small_mnist, model, dataset, transform
):
    workdir = tmp_path / "run"
    run_train_cli(
        f"--dataset={dataset}",
        f"--model={model}",
        *([f"--transform={transform}"] if transform else []),
        "--steps=2",
        "--batch_size=4",
        f"--mnist_dir={small_mnist}",
        "--mnist_source=idx",
        "--param_budget=20000",
        "--eval_batch_size=250",
        "--log_every=1",
        "--picture_every=1000000",
        f"--workdir={workdir}",
    )
    check_serving_contract(workdir, tmp_path)
