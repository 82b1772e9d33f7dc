"""Shared test setup: quiet TF, no TF32, a --runslow switch and NumPy oracles."""

import gc
import itertools
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

tf.config.experimental.enable_tensor_float_32_execution(False)


@pytest.fixture(autouse=True, scope="module")
def _free_keras_state():
    """Drops each test module's models when it ends: one pytest process runs the
    whole suite, and on a 24 GB machine what the modules leave behind adds up."""
    yield
    keras.backend.clear_session()
    gc.collect()


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", help="also run @pytest.mark.slow tests"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------------------
# Oracles: the paper's sampling sums (eq. 3-5, 9) written literally, one point at a time.


def to_pixels(coord, size):
    """Normalised corner-aligned coordinate -> pixel position (0 .. size - 1)."""
    return 0.0 if size == 1 else (coord + 1.0) * (size - 1) / 2.0


def reference_sample(image, points, kernel="bilinear"):
    """Samples one ``[*spatial, C]`` array at ``[N, ndim]`` points (x, y[, z]).

    Eq. 5 / 9: ``V = sum_{pixels} U * prod_axes max(0, 1 - |pos - index|)``;
    eq. 4 for ``nearest``: the pixel ``floor(pos + 0.5)`` if it exists, else 0.
    """
    spatial = image.shape[:-1]
    ndim = len(spatial)
    out = np.zeros((len(points), image.shape[-1]), np.float64)
    for i, point in enumerate(points):
        # spatial axes are (z,) y, x; the point is (x, y[, z]).
        pos = [to_pixels(point[ndim - 1 - a], spatial[a]) for a in range(ndim)]
        for index in itertools.product(*[range(n) for n in spatial]):
            if kernel == "bilinear":
                w = np.prod([max(0.0, 1.0 - abs(p - j)) for p, j in zip(pos, index)])
            else:
                w = float(all(np.floor(p + 0.5) == j for p, j in zip(pos, index)))
            out[i] += w * image[index]
    return out


def off_knot_coords(rng, shape, sizes, low=-1.25, high=1.25, margin=0.1):
    """Random coordinates at least ``margin`` pixels away from any pixel centre.

    ``sizes`` are the input sizes along x, y(, z); finite differences across a
    knot (where the bilinear kernel has a kink) would be meaningless.
    """
    coords = rng.uniform(low, high, shape)
    for a, n in enumerate(sizes):
        scale = (n - 1) / 2.0
        pos = (coords[..., a] + 1.0) * scale
        frac = pos - np.round(pos)
        near = np.abs(frac) < margin
        pos = np.where(near, np.round(pos) + np.sign(frac + 1e-12) * margin, pos)
        coords[..., a] = pos / scale - 1.0
    return coords


def run_tflite(model_bytes, *inputs):
    """Runs a TFLite flatbuffer with LiteRT; returns (outputs, op names)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    details = interpreter.get_input_details()
    for d, x in zip(details, inputs):
        interpreter.resize_tensor_input(d["index"], x.shape)
    interpreter.allocate_tensors()
    for d, x in zip(details, inputs):
        interpreter.set_tensor(d["index"], x)
    interpreter.invoke()
    outputs = [
        interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()
    ]
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    return outputs, ops


def assert_classes_are_top(classes, probabilities, atol):
    """Each served class (``[B]``, or ``[B, T]`` for sequences) has the reference's
    top probability, to ``atol``.

    An argmax compared exactly would fail on near-ties (a run of two steps gives
    near-uniform probabilities whose order float32 rounding may swap).
    """
    chosen = np.take_along_axis(probabilities, np.asarray(classes)[..., None], -1)
    np.testing.assert_array_less(probabilities.max(-1) - chosen[..., 0], atol)


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory):
    """An IDX folder of the embedded sample's first 400 training and 60 test
    digits: for runs whose evaluation on its 1,000 test digits would be most of
    their time (3D volumes, sequences, whole commands)."""
    from tools.sample_data import mnist_sample

    return mnist_sample(tmp_path_factory.mktemp("small_mnist"), 400, 60)


def tiny_config(**overrides):
    """A TrainConfig that trains in seconds on the embedded sample (FCN on plain
    MNIST): the one smoke config, ``tools.sample_data.smoke_config``."""
    from tools.sample_data import smoke_config

    return smoke_config(**overrides)


def run_train_cli(*args):
    """``python -m stn_tf.train ARGS`` in this process (flags restored after)."""
    from absl import flags
    from absl.testing import flagsaver

    from stn_tf import train

    with flagsaver.flagsaver():
        train.main(flags.FLAGS(["stn_tf.train", *args]))


# Whether this process runs TensorFlow's oneDNN kernels: TensorFlow was imported
# above, before stn_tf could ask for them, so on AVX2 CPUs they are off here.
_ONEDNN = "1" if _pywrap_util_port.IsMklEnabled() else "0"


def run_python(script: str, *, cwd=None, timeout: int = 300, env=None):
    """``python -c script`` in a new process, as a user starts one; fails the test
    with the end of its stderr unless it exits 0. Its environment is ``env``, or
    this one with the same oneDNN setting as this process, so that what the two
    compute is compared sum for sum (``import stn_tf`` would otherwise turn oneDNN
    on there alone; it sums in another order)."""
    if env is None:
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": _ONEDNN}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
